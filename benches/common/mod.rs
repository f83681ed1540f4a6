//! What the benchmarks share: an emulator with ipledger's CRDs, agent processes, and the
//! plugin binaries run as a container runtime runs them.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipledger::api::{IPPool, IPPoolSpec};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube_emulator::{Config, Emulator};
use serde_json::Value;

/// Debian's host-local, the baseline every figure stands beside.
pub const HOST_LOCAL: &str = "/usr/lib/cni/host-local";

/// Starts an emulator with ipledger's CRDs and the pools `pools` (name, spec), and writes
/// its kubeconfig to `kubeconfig`.
pub async fn emulator(pools: &[(&str, IPPoolSpec)], kubeconfig: &Path) -> Emulator {
    emulator_with(Config::default(), pools, kubeconfig).await
}

/// Like [`emulator`], configured by `config` (its latency, say).
pub async fn emulator_with(
    config: Config,
    pools: &[(&str, IPPoolSpec)],
    kubeconfig: &Path,
) -> Emulator {
    let emulator = Emulator::start(config).await.expect("emulator");
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

/// Creates the Node objects and the pods (in `default`, bound to their node) of
/// `pods` (node, pod name), 32 at a time.
pub async fn nodes_and_pods(client: &kube::Client, pods: &[(String, String)]) {
    use futures::StreamExt;
    let nodes: std::collections::BTreeSet<&str> = pods.iter().map(|(n, _)| n.as_str()).collect();
    let node_api = Api::<Node>::all(client.clone());
    for node in nodes {
        let object: Node =
            serde_json::from_value(serde_json::json!({"metadata": {"name": node}})).unwrap();
        node_api
            .create(&PostParams::default(), &object)
            .await
            .expect("node");
    }
    let pod_api = Api::<Pod>::namespaced(client.clone(), "default");
    futures::stream::iter(pods)
        .map(|(node, name)| {
            let pod_api = pod_api.clone();
            async move {
                let pod: Pod = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name},
                    "spec": {"nodeName": node, "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}]},
                }))
                .unwrap();
                pod_api.create(&PostParams::default(), &pod).await.expect("pod");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

/// Requests in a stretch of the emulator's request log.
#[derive(Debug, Default)]
pub struct Requests {
    /// get and list (watches are not counted: they stream, they do not wait).
    pub reads: usize,
    /// create, update, patch, delete, answered or refused (a 409 costs a round trip too).
    pub writes: usize,
    /// Creates that created something: blocks claimed, here.
    pub creates: usize,
    /// Seconds the server took to answer the writes, latency included.
    pub write_seconds: f64,
}

/// Counts the requests of `log`.
pub fn requests(log: &[kube_emulator::AuditEvent]) -> Requests {
    let mut counted = Requests::default();
    for event in log {
        match event.verb {
            "get" | "list" => counted.reads += 1,
            "create" | "update" | "patch" | "delete" | "deletecollection" => {
                counted.writes += 1;
                counted.write_seconds += (event.answered - event.received).as_secs_f64();
                if event.verb == "create" && event.changed_something() {
                    counted.creates += 1;
                }
            }
            _ => {}
        }
    }
    counted
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

    /// The agent's metrics, as exposed.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port))
            .expect("metrics endpoint");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    }

    /// The sum of the samples of `metric` over its labels.
    pub fn metric_sum(&self, metric: &str) -> f64 {
        self.metrics()
            .lines()
            .filter(|l| {
                l.strip_prefix(metric)
                    .is_some_and(|rest| rest.starts_with([' ', '{']))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Seconds spent answering `verb` (`ADD`, `DEL`) and how many answers, successful
    /// ones, from the agent's request histogram.
    pub fn handling(&self, verb: &str) -> (f64, f64) {
        let text = self.metrics();
        let sample = |suffix: &str| {
            let prefix = format!(
                "ipledger_agent_request_duration_seconds_{suffix}{{verb=\"{}\",result=\"ok\"}} ",
                verb.to_lowercase()
            );
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix)?.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (sample("sum"), sample("count"))
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
