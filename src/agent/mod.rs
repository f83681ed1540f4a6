//! The node agent: serves the CNI plugin on a root-only unix socket and allocates from
//! blocks affine to its node.

mod add;
mod ahead;
pub mod allocator;
pub mod cache;
mod check;
pub mod config;
pub mod conflist;
mod del;
pub mod error;
mod gc;
pub mod install;
pub mod pool_choice;
pub mod server;
pub mod socket;
mod status;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use prometheus_client::registry::Registry;

use crate::ledger::RetryPolicy;
use crate::metrics::AgentMetrics;
pub use config::AgentArgs;

/// Why the agent could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("cannot configure the Kubernetes client: {0}")]
    Client(String),
    /// The plugin binary could not be installed.
    #[error("cannot install the CNI plugin from {source_path} into {dir}: {error}")]
    Install {
        source_path: PathBuf,
        dir: PathBuf,
        error: std::io::Error,
    },
    /// The CNI network configuration could not be written.
    #[error("cannot write the CNI network configuration {path}: {error}")]
    Conflist {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The socket could not be bound.
    #[error("cannot serve on {path}: {error}")]
    Socket {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The metrics address could not be bound.
    #[error("cannot serve metrics on {addr}: {error}")]
    Metrics {
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
    /// The watches never became ready.
    #[error("the watch caches stopped before listing: {0}")]
    Caches(String),
}

/// Runs the agent until `shutdown` completes; then finishes the requests in flight and
/// returns.
pub async fn run(
    args: AgentArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    // Bad names fail the start before anything is installed or written.
    if let Some(path) = &args.write_conflist {
        conflist::validate(&args.conflist_network, &args.conflist_bridge).map_err(|e| {
            StartError::Conflist {
                path: path.clone(),
                error: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
            }
        })?;
    }
    if let Some(dir) = &args.install_cni_bin_dir {
        let source_path = match &args.cni_binary {
            Some(path) => path.clone(),
            None => std::env::current_exe()
                .map(|exe| exe.with_file_name("ipledger-cni"))
                .map_err(|error| StartError::Install {
                    source_path: "ipledger-cni".into(),
                    dir: dir.clone(),
                    error,
                })?,
        };
        let installed =
            install::install_plugin(&source_path, dir, "ipledger").map_err(|error| {
                StartError::Install {
                    source_path: source_path.clone(),
                    dir: dir.clone(),
                    error,
                }
            })?;
        tracing::info!(path = %installed.display(), "installed the CNI plugin");
    }

    let client = crate::cluster::client(args.kubeconfig.as_deref())
        .await
        .map_err(StartError::Client)?;
    let (caches, mut deletions, watches) = cache::Caches::start(&client, &args.node_name);
    caches
        .ready()
        .await
        .map_err(|e| StartError::Caches(e.to_string()))?;

    let mut registry = Registry::default();
    let metrics = AgentMetrics::register(&mut registry);
    let registry = Arc::new(registry);
    let gauges = tokio::spawn(count_blocks(caches.clone(), metrics.clone()));
    let allocator = Arc::new(allocator::Allocator::new(
        args.node_name.clone(),
        client,
        caches,
        RetryPolicy::default(),
        args.cni_gc_grace,
        metrics.clone(),
    ));
    // A deleted block is forgotten at once: the next ADD claims afresh.
    let forgetting = {
        let allocator = allocator.clone();
        tokio::spawn(async move {
            while let Some((name, uid)) = deletions.recv().await {
                allocator.forget(&name, uid.as_deref());
            }
        })
    };
    let sweeping = {
        let allocator = allocator.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
            loop {
                tick.tick().await;
                allocator.sweep();
            }
        })
    };

    let metrics_listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|error| StartError::Metrics {
            addr: args.metrics_addr,
            error,
        })?;
    let metrics_server = tokio::spawn(crate::http::serve_until(
        metrics_listener,
        crate::http::metrics_routes(registry),
        args.header_read_timeout,
        std::future::pending(),
    ));

    let listener = socket::bind(&args.socket).map_err(|error| StartError::Socket {
        path: args.socket.clone(),
        error,
    })?;
    // The network config appears only now, with the socket bound and the watches listed:
    // kubelet takes the node's network as ready once a config is in its directory, and a
    // runtime acting on it must find an agent that answers (a connection made before the
    // server below starts waits in the listen backlog).
    if let Some(path) = &args.write_conflist {
        if let Err(error) = conflist::write(
            path,
            &args.conflist_network,
            &args.conflist_bridge,
            &args.socket,
        ) {
            let _ = std::fs::remove_file(&args.socket);
            return Err(StartError::Conflist {
                path: path.clone(),
                error,
            });
        }
        tracing::info!(path = %path.display(), "wrote the CNI network configuration");
    }
    tracing::info!(node = args.node_name, socket = %args.socket.display(), metrics = %args.metrics_addr, "agent serving");
    let routes = server::socket_routes(server::Shared { allocator, metrics }, args.request_timeout);
    crate::http::serve_until(listener, routes, args.header_read_timeout, shutdown).await;

    metrics_server.abort();
    gauges.abort();
    forgetting.abort();
    sweeping.abort();
    for watch in watches {
        watch.abort();
    }
    // A stopped agent leaves no socket behind: the plugin then fails fast with code 11.
    let _ = std::fs::remove_file(&args.socket);
    Ok(())
}

/// Keeps `blocks_held` equal to the node's blocks per pool in the watch cache.
async fn count_blocks(caches: cache::Caches, metrics: AgentMetrics) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tick.tick().await;
        let mut counts = std::collections::BTreeMap::<String, i64>::new();
        for block in caches.blocks.state() {
            *counts.entry(block.spec.pool.clone()).or_default() += 1;
        }
        metrics.blocks_held.clear();
        for (pool, count) in counts {
            metrics
                .blocks_held
                .get_or_create(&crate::metrics::PoolLabels { pool })
                .set(count);
        }
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process still dies by the default action.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
