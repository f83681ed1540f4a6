//! The controller: one leader (a coordination.k8s.io Lease) keeps pools' status,
//! reclaims leaked addresses, and guards the deletion of pools, blocks and nodes.
//!
//! Every replica watches; only the leader writes, and every write passes
//! [`leader::Leadership::check`] right before it is sent.

pub mod cache;
pub mod config;
pub mod leader;
pub mod pools;
pub mod reclaim;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use prometheus_client::registry::Registry;

pub use config::ControllerArgs;
use leader::{Election, Leadership};

use crate::metrics::ControllerMetrics;

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("cannot configure the Kubernetes client: {0}")]
    Client(String),
    /// The flags do not work together.
    #[error("invalid flags: {0}")]
    Flags(String),
    /// An endpoint's address could not be bound.
    #[error("cannot serve {what} on {addr}: {error}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
}

/// What every reconciler shares.
#[derive(Clone)]
pub struct Context {
    /// The API client.
    pub client: Client,
    /// The watch caches.
    pub caches: cache::Caches,
    /// Whether writes may be sent.
    pub leadership: Leadership,
    /// The controller's metrics.
    pub metrics: ControllerMetrics,
    /// The flags.
    pub args: Arc<ControllerArgs>,
}

/// Runs the controller until `shutdown` completes; then stops writing and releases the
/// Lease, so the other replica takes over without waiting for it to expire.
pub async fn run(
    args: ControllerArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    ipledger_core::check_timings(args.lease_duration, args.renew_deadline, args.retry_period)
        .map_err(|e| StartError::Flags(e.to_string()))?;
    let client = crate::cluster::client(args.kubeconfig.as_deref())
        .await
        .map_err(StartError::Client)?;
    let election = Election {
        namespace: args.lease_namespace.clone(),
        name: args.lease_name.clone(),
        identity: args.identity.clone().unwrap_or_else(default_identity),
        lease_duration: args.lease_duration,
        renew_deadline: args.renew_deadline,
        retry_period: args.retry_period,
    };

    let mut registry = Registry::default();
    let metrics = ControllerMetrics::register(&mut registry);
    let registry = Arc::new(registry);
    let bind = |what, addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|error| StartError::Bind { what, addr, error })
    };
    let metrics_listener = bind("metrics", args.metrics_addr).await?;
    let health_listener = bind("health checks", args.health_addr).await?;
    let ready = Arc::new(AtomicBool::new(false));
    let servers = [
        tokio::spawn(crate::http::serve_until(
            metrics_listener,
            crate::http::metrics_routes(registry),
            args.header_read_timeout,
            std::future::pending(),
        )),
        tokio::spawn(crate::http::serve_until(
            health_listener,
            health_routes(ready.clone()),
            args.header_read_timeout,
            std::future::pending(),
        )),
    ];

    let (caches, feeds, watches) = cache::Caches::start(&client);
    let leadership = Leadership::default();
    let context = Context {
        client: client.clone(),
        caches: caches.clone(),
        leadership: leadership.clone(),
        metrics: metrics.clone(),
        args: Arc::new(args),
    };
    tracing::info!(identity = election.identity, lease = %format!("{}/{}", election.namespace, election.name), "controller starting");
    let election_task = {
        let metrics = metrics.clone();
        let api = Api::<Lease>::namespaced(client.clone(), &election.namespace);
        tokio::spawn(leader::run(
            api,
            election,
            leadership.clone(),
            move |leading| {
                metrics.leader.set(i64::from(leading));
            },
            shutdown,
        ))
    };

    // One task waits for the caches: kube-runtime's `Store::wait_until_ready` wakes only
    // one of several concurrent waiters.
    let reconcilers = tokio::spawn(async move {
        if caches.ready().await.is_err() {
            return;
        }
        ready.store(true, Ordering::Release);
        tracing::info!("caches synced");
        tokio::join!(pools::run(context.clone()), reclaim::run(context, feeds));
    });

    // The election task ends after shutdown, having stopped leading and released the
    // Lease: every reconciler's writes are fenced off by then.
    let _ = election_task.await;
    reconcilers.abort();
    for task in watches.into_iter().chain(servers) {
        task.abort();
    }
    Ok(())
}

/// `/healthz` answers while the process serves; `/readyz` once the caches have listed.
fn health_routes(ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::Acquire);
                async move {
                    if ready {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
                    }
                }
            }),
        )
}

/// The host name (a pod's name in a Deployment) and a random suffix: two processes on
/// one host, or a restarted one, never share an identity.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ipledger-controller".into());
    format!("{host}_{}", uuid::Uuid::new_v4())
}
