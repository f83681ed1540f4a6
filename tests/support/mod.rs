//! What ipledger's own tests share beyond `test_support`: its CRDs, and a node (agent
//! process and plugin binary) of the test cluster.
#![allow(dead_code)]

pub mod chart;
pub mod controller;
pub mod harness;
pub mod node;
pub mod pods;

use std::time::Duration;

use kube::Client;

/// Installs ipledger's CRDs (kept if already there) and waits until they are established.
pub async fn install_crds(client: &Client) {
    test_support::install_crds(client, ipledger::api::crds()).await;
}

/// Polls `check` for up to `seconds`.
pub async fn within<T, F, Fut>(seconds: u64, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() > until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
