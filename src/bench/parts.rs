//! The parts a bench run starts: agent processes for the simulated nodes (one node per
//! process, or many per process for a scale run), the controller process, and the API
//! objects the run owns (namespace, pool, Nodes).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use super::BenchError;
use crate::agent::AgentArgs;
use crate::api::{IPBlock, IPPool, IPPoolSpec};

/// A process the run started; killed when dropped.
pub struct Process {
    pub what: String,
    child: tokio::process::Child,
}

impl Process {
    fn spawn(what: String, command: &mut tokio::process::Command) -> Result<Process, BenchError> {
        // A process group of its own: a terminal's Ctrl-C reaches only the bench, which
        // then still has agents to DEL through and a controller to finish the cleanup.
        let child = command
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::Setup(format!("cannot start the {what}: {e}")))?;
        Ok(Process { what, child })
    }

    /// Peak resident memory (VmHWM) in KiB, while the process runs.
    pub fn peak_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Fails when the process has exited.
    fn running(&mut self) -> Result<(), BenchError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(BenchError::Setup(format!(
                "the {} exited at start ({status}); run it alone to see why",
                self.what
            ))),
            Err(e) => Err(BenchError::Setup(format!("the {}: {e}", self.what))),
        }
    }
}

/// An agent process serving one or more simulated nodes.
pub struct AgentProcess {
    pub process: Process,
    /// Where each of its nodes' sockets is, in node order.
    pub sockets: Vec<PathBuf>,
    /// Its metrics port, when it serves one node (a process of several nodes serves a
    /// port per node, not known here).
    pub metrics_port: Option<u16>,
}

impl AgentProcess {
    /// The sum of the samples of `metric` over its labels.
    pub async fn metric_sum(&self, metric: &str) -> Option<f64> {
        let port = self.metrics_port?;
        let text = metrics_text(port).await?;
        Some(
            text.lines()
                .filter(|l| {
                    l.strip_prefix(metric)
                        .is_some_and(|rest| rest.starts_with([' ', '{']))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        )
    }
}

async fn metrics_text(port: u16) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    Some(text)
}

/// Starts agents for `nodes`, `per_process` nodes to a process, with their sockets in
/// `dir`, and waits until every socket accepts connections.
pub async fn start_agents(
    nodes: &[String],
    per_process: usize,
    kubeconfig: &Path,
    dir: &Path,
) -> Result<Vec<AgentProcess>, BenchError> {
    let exe = std::env::current_exe()
        .map_err(|e| BenchError::Setup(format!("cannot find this executable: {e}")))?;
    let mut agents = Vec::new();
    for (index, group) in nodes.chunks(per_process.max(1)).enumerate() {
        let mut command = tokio::process::Command::new(&exe);
        command.env("IPLEDGER_LOG", "warn");
        let sockets: Vec<PathBuf> = group
            .iter()
            .map(|n| dir.join(format!("{n}.sock")))
            .collect();
        let metrics_port = if group.len() == 1 {
            let port = free_port()?;
            command
                .args(["agent", "--node-name", &group[0]])
                .arg("--socket")
                .arg(&sockets[0])
                .arg("--metrics-addr")
                .arg(format!("127.0.0.1:{port}"));
            Some(port)
        } else {
            command
                .args(["bench-agents", "--socket-dir"])
                .arg(dir)
                .args(group);
            None
        };
        command.arg("--kubeconfig").arg(kubeconfig);
        let what = if group.len() == 1 {
            format!("agent of {}", group[0])
        } else {
            format!("agent process {index} ({} nodes)", group.len())
        };
        agents.push(AgentProcess {
            process: Process::spawn(what, &mut command)?,
            sockets,
            metrics_port,
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60 + nodes.len() as u64 / 10);
    for agent in &mut agents {
        for socket in &agent.sockets {
            while std::os::unix::net::UnixStream::connect(socket).is_err() {
                agent.process.running()?;
                if Instant::now() > deadline {
                    return Err(BenchError::Setup(format!(
                        "the {} did not open {} in time",
                        agent.process.what,
                        socket.display()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    Ok(agents)
}

/// Starts the controller, leader at once (its Lease is the run's own, in the run's
/// `namespace`, so it goes with it), with the leak GC running every `gc` for
/// allocations older than `gc`.
pub async fn start_controller(
    kubeconfig: &Path,
    namespace: &str,
    gc: Duration,
) -> Result<Process, BenchError> {
    let exe = std::env::current_exe()
        .map_err(|e| BenchError::Setup(format!("cannot find this executable: {e}")))?;
    let gc = humantime::format_duration(gc).to_string();
    let mut command = tokio::process::Command::new(exe);
    command
        .env("IPLEDGER_LOG", "warn")
        .args(["controller", "--kubeconfig"])
        .arg(kubeconfig)
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--health-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--lease-namespace",
            namespace,
            "--lease-name",
            "ipledger-bench-controller",
        ])
        .args(["--identity", "ipledger-bench"])
        .args(["--gc-interval", &gc, "--gc-grace", &gc]);
    let mut process = Process::spawn("controller".into(), &mut command)?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    process.running()?;
    Ok(process)
}

/// `ipledger bench-agents`: the agents of several simulated nodes in one process. Each
/// has its own API client, watch caches, allocator and socket, as separate processes
/// would; only the process and its runtime are shared.
#[derive(Debug, clap::Args)]
pub struct HostArgs {
    /// Directory of the sockets: `NODE.sock` for each node.
    #[arg(long)]
    pub socket_dir: PathBuf,
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// The simulated nodes.
    #[arg(required = true)]
    pub nodes: Vec<String>,
}

/// Runs the agents of `args` until SIGTERM or SIGINT.
pub async fn host(args: HostArgs) -> Result<(), crate::agent::StartError> {
    #[derive(Parser)]
    struct Agent {
        #[command(flatten)]
        args: AgentArgs,
    }
    let (stop, _) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for node in &args.nodes {
        let socket = args.socket_dir.join(format!("{node}.sock"));
        let agent = Agent::try_parse_from([
            "agent".as_ref(),
            "--node-name".as_ref(),
            node.as_ref(),
            "--socket".as_ref(),
            socket.as_os_str(),
            "--kubeconfig".as_ref(),
            args.kubeconfig.as_os_str(),
            "--metrics-addr".as_ref(),
            "127.0.0.1:0".as_ref(),
        ])
        .expect("the agent's arguments parse");
        let mut stopped = stop.subscribe();
        tasks.push(tokio::spawn(crate::agent::run(agent.args, async move {
            let _ = stopped.changed().await;
        })));
    }
    crate::agent::termination().await;
    let _ = stop.send(true);
    for task in tasks {
        if let Ok(Err(error)) = task.await {
            return Err(error);
        }
    }
    Ok(())
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, BenchError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| BenchError::Setup(format!("no free port for an agent's metrics: {e}")))
}

/// The API objects a run owns: its namespace, its pool and its simulated Nodes.
pub struct Owned {
    pub client: Client,
    pub namespace: String,
    pub pool: String,
    pub nodes: Vec<String>,
}

impl Owned {
    /// Creates them.
    pub async fn create(&self, spec: &IPPoolSpec) -> Result<(), BenchError> {
        let setup = |what: String| move |e: kube::Error| BenchError::Setup(format!("{what}: {e}"));
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": self.namespace, "labels": {"app.kubernetes.io/name": "ipledger-bench"}}
        }))
        .expect("a Namespace");
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .map_err(setup(format!("creating the namespace {}", self.namespace)))?;
        Api::<IPPool>::all(self.client.clone())
            .create(
                &PostParams::default(),
                &IPPool::new(&self.pool, spec.clone()),
            )
            .await
            .map_err(setup(format!("creating the IPPool {}", self.pool)))?;
        let nodes = Api::<Node>::all(self.client.clone());
        let created: Vec<Result<(), BenchError>> = futures::stream::iter(&self.nodes)
            .map(|name| {
                let nodes = nodes.clone();
                async move {
                    let node: Node = serde_json::from_value(serde_json::json!({
                        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "ipledger-bench"}}
                    }))
                    .expect("a Node");
                    nodes
                        .create(&PostParams::default(), &node)
                        .await
                        .map(|_| ())
                        .map_err(setup(format!("creating the Node {name}")))
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        created.into_iter().collect()
    }

    /// Waits until the controller guards the pool with its finalizer: a pool deleted
    /// before then would go at once.
    pub async fn guarded(&self, timeout: Duration) -> Result<(), BenchError> {
        let pools = Api::<IPPool>::all(self.client.clone());
        let deadline = Instant::now() + timeout;
        loop {
            let pool = pools
                .get(&self.pool)
                .await
                .map_err(|e| BenchError::Setup(format!("reading the IPPool {}: {e}", self.pool)))?;
            if pool.metadata.finalizers.iter().flatten().next().is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(BenchError::Setup(format!(
                    "no controller took the IPPool {} within {timeout:?}: is ipledger's controller running?",
                    self.pool
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every block of the run's pool.
    pub async fn blocks(&self) -> Result<Vec<IPBlock>, kube::Error> {
        let blocks = Api::<IPBlock>::all(self.client.clone())
            .list(&ListParams::default())
            .await?;
        Ok(blocks
            .items
            .into_iter()
            .filter(|b| b.spec.pool == self.pool)
            .collect())
    }

    /// Deletes the Nodes and the pool, waits (at most `timeout`) for the pool to be gone
    /// (its finalizer holds it until no address is allocated), then deletes the
    /// namespace.
    pub async fn remove(&self, timeout: Duration) -> Result<(), BenchError> {
        let gone = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 404);
        let nodes = Api::<Node>::all(self.client.clone());
        for name in &self.nodes {
            if let Err(e) = nodes.delete(name, &DeleteParams::default()).await
                && !gone(&e)
            {
                return Err(BenchError::Cleanup(format!(
                    "deleting the Node {name}: {e}"
                )));
            }
        }
        let pools = Api::<IPPool>::all(self.client.clone());
        if let Err(e) = pools.delete(&self.pool, &DeleteParams::default()).await
            && !gone(&e)
        {
            return Err(BenchError::Cleanup(format!(
                "deleting the IPPool {}: {e}",
                self.pool
            )));
        }
        // The pool first: the controller, whose Lease is in the namespace, removes its
        // finalizer once its blocks are empty.
        let deadline = Instant::now() + timeout;
        let pool_gone = loop {
            match pools.get_opt(&self.pool).await {
                Ok(None) => break Ok(()),
                Ok(Some(_)) if Instant::now() > deadline => {
                    break Err(BenchError::Cleanup(format!(
                        "the IPPool {} is still there after {timeout:?}: `kubectl get ipblocks` shows what it waits for",
                        self.pool
                    )));
                }
                Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(e) => {
                    break Err(BenchError::Cleanup(format!(
                        "reading the IPPool {}: {e}",
                        self.pool
                    )));
                }
            }
        };
        let namespace_gone = match Api::<Namespace>::all(self.client.clone())
            .delete(&self.namespace, &DeleteParams::default())
            .await
        {
            Err(e) if !gone(&e) => Err(BenchError::Cleanup(format!(
                "deleting the namespace {}: {e}",
                self.namespace
            ))),
            _ => Ok(()),
        };
        pool_gone.and(namespace_gone)
    }
}
