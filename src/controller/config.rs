//! Command-line flags of `ipledger controller`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Flags of `ipledger controller`; each falls back to an environment variable so a
/// Deployment can set them from the downward API.
#[derive(Args, Clone, Debug)]
pub struct ControllerArgs {
    /// Kubeconfig to reach the API server; in-cluster configuration when unset.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Address of the Prometheus metrics endpoint (`/metrics`).
    #[arg(long, env = "IPLEDGER_METRICS_ADDR", default_value = "0.0.0.0:9465")]
    pub metrics_addr: SocketAddr,

    /// Address of the health endpoints: `/healthz` (the process serves), `/readyz`
    /// (its caches have listed everything once).
    #[arg(long, env = "IPLEDGER_HEALTH_ADDR", default_value = "0.0.0.0:9466")]
    pub health_addr: SocketAddr,

    /// Namespace of the leader-election Lease (the Deployment passes its own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-system")]
    pub lease_namespace: String,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "IPLEDGER_LEASE_NAME",
        default_value = "ipledger-controller"
    )]
    pub lease_name: String,

    /// This replica's identity in the Lease; unique per process. Defaults to the host
    /// name (the pod's name in a Deployment) and a random suffix.
    #[arg(long, env = "IPLEDGER_IDENTITY")]
    pub identity: Option<String>,

    /// How long a leader's renewal of the Lease counts; whole seconds.
    #[arg(long, env = "IPLEDGER_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,

    /// A leader that could not renew the Lease for this long stops every write.
    #[arg(long, env = "IPLEDGER_RENEW_DEADLINE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub renew_deadline: Duration,

    /// How often a replica tries to acquire the Lease, and the leader renews it.
    #[arg(long, env = "IPLEDGER_RETRY_PERIOD", default_value = "2s", value_parser = humantime::parse_duration)]
    pub retry_period: Duration,

    /// Period of the full leak-GC pass (pod deletions trigger it in between).
    #[arg(long, env = "IPLEDGER_GC_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub gc_interval: Duration,

    /// An allocation younger than this is never taken as leaked.
    #[arg(long, env = "IPLEDGER_GC_GRACE", default_value = "60s", value_parser = humantime::parse_duration)]
    pub gc_grace: Duration,

    /// A block that held no allocation for this long is given back to its pool.
    #[arg(long, env = "IPLEDGER_EMPTY_BLOCK_TTL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub empty_block_ttl: Duration,

    /// Longest time a connection to the metrics or health endpoint may take to send a
    /// request head.
    #[arg(long, env = "IPLEDGER_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,
}
