//! What ipledger's own tests share beyond `test_support`: its CRDs, and a node (agent
//! process and plugin binary) of the test cluster.
#![allow(dead_code)]

pub mod chart;
pub mod controller;
pub mod harness;
pub mod node;
pub mod pods;

use kube::Client;

/// Installs ipledger's CRDs (kept if already there) and waits until they are established.
pub async fn install_crds(client: &Client) {
    test_support::install_crds(client, ipledger::api::crds()).await;
}
