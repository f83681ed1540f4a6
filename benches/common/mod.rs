//! What the benchmarks share: an emulator with ipledger's CRDs, agent processes, and the
//! plugin binaries run as a container runtime runs them.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipledger::api::{IPPool, IPPoolSpec};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube_emulator::{Config, Emulator};
use serde_json::Value;

/// Debian's host-local, the baseline every figure stands beside.
pub const HOST_LOCAL: &str = "/usr/lib/cni/host-local";

/// Starts an emulator with ipledger's CRDs and the pools `pools` (name, spec), and writes
/// its kubeconfig to `kubeconfig`.
pub async fn emulator(pools: &[(&str, IPPoolSpec)], kubeconfig: &Path) -> Emulator {
    let emulator = Emulator::start(Config::default()).await.expect("emulator");
    let client = emulator.client();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in ipledger::api::crds() {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("CRD");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (name, spec) in pools {
        Api::<IPPool>::all(client.clone())
            .create(&PostParams::default(), &IPPool::new(name, spec.clone()))
            .await
            .expect("pool");
    }
    emulator.write_kubeconfig(kubeconfig).unwrap();
    emulator
}

/// An `ipledger agent` process for `node`.
pub struct Agent {
    pub child: Child,
    pub socket: PathBuf,
    pub metrics_port: u16,
}

impl Agent {
    /// Starts the agent and waits until its socket accepts connections.
    pub fn start(node: &str, kubeconfig: &Path, dir: &Path) -> Agent {
        let metrics_port = free_port();
        let socket = dir.join(format!("{node}.sock"));
        let child = Command::new(env!("CARGO_BIN_EXE_ipledger"))
            .args(["agent", "--node-name", node])
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .arg("--socket")
            .arg(&socket)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .env("IPLEDGER_LOG", "warn")
            .spawn()
            .expect("agent");
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            std::thread::sleep(Duration::from_millis(20));
        }
        Agent {
            child,
            socket,
            metrics_port,
        }
    }

    /// Resident and peak resident memory in KiB (VmRSS, VmHWM).
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the agent runs");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CNI plugin binary and the network configuration it is run with.
pub struct Plugin {
    pub name: &'static str,
    pub binary: PathBuf,
    pub config: Value,
}

impl Plugin {
    /// Runs one verb; returns the wall time in milliseconds and whether it succeeded.
    pub fn run(&self, verb: &str, id: &str) -> (f64, bool) {
        let started = Instant::now();
        let mut child = Command::new(&self.binary)
            .env_clear()
            .env("CNI_COMMAND", verb)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", "/var/run/netns/bench")
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .env(
                "CNI_ARGS",
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={id}"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("plugin");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(self.config.to_string().as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        (
            started.elapsed().as_secs_f64() * 1000.0,
            output.status.success(),
        )
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
