//! Command-line flags of `ipledger agent`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Flags of `ipledger agent`; each falls back to an environment variable so a DaemonSet
/// can set them from the downward API.
#[derive(Args, Clone, Debug)]
pub struct AgentArgs {
    /// Name of the node this agent serves (the DaemonSet passes `spec.nodeName`).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,

    /// Path of the unix socket the CNI plugin talks to.
    #[arg(long, env = "IPLEDGER_SOCKET", default_value = ipledger_cni::protocol::DEFAULT_SOCKET_PATH)]
    pub socket: PathBuf,

    /// Kubeconfig to reach the API server; in-cluster configuration when unset.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Address of the Prometheus metrics and health endpoints.
    #[arg(long, env = "IPLEDGER_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,

    /// Copy the CNI plugin into this directory as `ipledger` at start (atomically).
    #[arg(long, env = "IPLEDGER_INSTALL_CNI_BIN_DIR")]
    pub install_cni_bin_dir: Option<PathBuf>,

    /// The plugin binary to install; by default `ipledger-cni` beside this executable.
    #[arg(long, env = "IPLEDGER_CNI_BINARY")]
    pub cni_binary: Option<PathBuf>,

    /// Write a standalone CNI network configuration list here once the socket listens
    /// (`bridge` with ipledger as its IPAM, then `portmap`), atomically, mode 0644.
    #[arg(long, env = "IPLEDGER_WRITE_CONFLIST")]
    pub write_conflist: Option<PathBuf>,

    /// The bridge of the written network configuration.
    #[arg(long, env = "IPLEDGER_CONFLIST_BRIDGE", default_value = "cni0")]
    pub conflist_bridge: String,

    /// The network name of the written network configuration.
    #[arg(long, env = "IPLEDGER_CONFLIST_NETWORK", default_value = "ipledger")]
    pub conflist_network: String,

    /// Longest time one plugin request may take before the agent gives up on it.
    #[arg(long, env = "IPLEDGER_REQUEST_TIMEOUT", default_value = "25s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// CNI GC keeps allocations younger than this, whether the runtime lists them or
    /// not: the runtime's list may have been taken before their ADD committed.
    #[arg(long, env = "IPLEDGER_CNI_GC_GRACE", default_value = "60s", value_parser = humantime::parse_duration)]
    pub cni_gc_grace: Duration,

    /// Longest time a connection may go without sending a complete request head (a
    /// silent client, half a header, an idle kept-alive connection) before it is closed.
    #[arg(long, env = "IPLEDGER_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,
}
