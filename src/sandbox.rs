//! `ipledger sandbox`: ipledger's main job on one machine, with no cluster at hand.
//!
//! Starts the API emulator, registers the CRDs, creates an IPv4 and an IPv6 default pool,
//! the Node `sandbox-node` and the pod `default/demo`, runs an agent for that node with
//! its socket in the sandbox directory and the controller, and writes a kubeconfig and a
//! CNI network configuration there. Then it prints what to try and serves until Ctrl-C.
//!
//! `ipledger sandbox --demo N` ([`demo`]) runs the same parts for two nodes, and plays a
//! pod lifecycle through the real plugin binary instead of waiting.

pub mod demo;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::agent::{self, AgentArgs};
use crate::api::{IPPool, IPPoolSpec};
use crate::controller::{self, ControllerArgs};
use kube_emulator::{Config, Emulator};

/// Name of the node the sandbox's agent serves.
pub const NODE: &str = "sandbox-node";
/// The pod (in `default`) the printed plugin commands allocate for.
pub const DEMO_POD: &str = "demo";

/// Why the sandbox could not start, or its demo failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A file of the sandbox could not be written.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The emulator did not start.
    #[error("the API emulator did not start: {0}")]
    Emulator(String),
    /// Setting up the resources failed.
    #[error("setting up the sandbox's resources failed: {0}")]
    Setup(String),
    /// The agent failed.
    #[error(transparent)]
    Agent(#[from] agent::StartError),
    /// The controller failed.
    #[error(transparent)]
    Controller(#[from] controller::StartError),
    /// The demo runs the plugin binary, and there is none.
    #[error(
        "the demo runs the CNI plugin {path}, which does not exist; it is built beside ipledger (`cargo build --bins`)"
    )]
    PluginMissing { path: PathBuf },
    /// A step of the demo did not do what it should.
    #[error("the demo failed: {0}")]
    Demo(String),
}

/// The pools every sandbox creates, both `default`: (name, CIDR, gateway).
pub const POOLS: [(&str, &str, &str); 2] = [
    ("sandbox-v4", "10.244.0.0/16", "10.244.0.1"),
    ("sandbox-v6", "fd00:10:244::/48", "fd00:10:244::1"),
];

/// Runs the sandbox in `dir` until `shutdown` completes.
pub async fn run(
    dir: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SandboxError> {
    // A minute: the leak GC the printed `kubectl delete pod` shows comes within a
    // minute, not the controller's default 5 minutes.
    let gc = Duration::from_secs(60);
    let sandbox = Sandbox::start(dir, &[(NODE, "agent.sock")], gc).await?;

    // The pod the printed commands allocate for: the controller releases the addresses
    // of pods that do not exist.
    create_pod(&sandbox.client, DEMO_POD, NODE).await?;
    let socket = sandbox.agents[0].socket.clone();
    let network = sandbox.dir.join("network.json");
    let config = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "sandbox",
        "type": "bridge",
        "ipam": {"type": "ipledger", "socket": socket},
    });
    std::fs::write(&network, format!("{config:#}\n")).map_err(io(&network))?;

    let plugin = plugin_path();
    let kubeconfig = &sandbox.kubeconfig;
    println!("ipledger sandbox is running in {}", sandbox.dir.display());
    println!(
        "  API emulator: {}   agent socket: {}",
        sandbox.emulator.url(),
        socket.display()
    );
    println!(
        "  pools: sandbox-v4 (10.244.0.0/16, gateway 10.244.0.1) and sandbox-v6 (fd00:10:244::/48, gateway fd00:10:244::1), both default"
    );
    println!();
    println!("Try:");
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  kubectl get ippools        # the controller fills the Allocated and Free columns");
    println!("  kubectl get ipblocks");
    println!();
    println!("Allocate addresses for a pod, as a container runtime would:");
    println!("{}", plugin_command("ADD", &plugin, &network));
    println!();
    println!("Release them:");
    println!("{}", plugin_command("DEL", &plugin, &network));
    println!();
    println!(
        "Or delete the pod without DEL, as a crashed node would: the controller releases its addresses {} s after they were allocated:",
        gc.as_secs()
    );
    println!("  kubectl delete pod {DEMO_POD}");
    println!();
    println!("Ctrl-C stops the sandbox.");

    shutdown.await;
    sandbox.stop().await
}

/// A closure turning an io::Error on `path` into a [`SandboxError::Io`].
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SandboxError {
    let path = path.to_path_buf();
    move |error| SandboxError::Io { path, error }
}

/// The plugin binary: `ipledger-cni` beside this executable, as the agent installs it.
pub fn plugin_path() -> PathBuf {
    std::env::current_exe()
        .map(|exe| exe.with_file_name("ipledger-cni"))
        .unwrap_or_else(|_| PathBuf::from("ipledger-cni"))
}

/// A running sandbox: the emulator with the CRDs and pools, an agent per node, the
/// controller.
struct Sandbox {
    dir: PathBuf,
    kubeconfig: PathBuf,
    emulator: Emulator,
    client: Client,
    agents: Vec<NodeAgent>,
    controller: Part<controller::StartError>,
}

/// The agent of one simulated node.
struct NodeAgent {
    node: String,
    socket: PathBuf,
    part: Part<agent::StartError>,
}

/// A part run in-process as a task, and the sender that stops it.
struct Part<E> {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), E>>,
}

impl<E: Send + 'static> Part<E> {
    /// Spawns `run(stopped)`, where `stopped` completes once [`Part::stop`] is called.
    fn spawn<F>(run: impl FnOnce(Pin<Box<dyn Future<Output = ()> + Send>>) -> F) -> Part<E>
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(Box::pin(async move {
            let _ = stopped.await;
        })));
        Part { stop, task }
    }

    /// Stops the part and waits for it; `what` names it in a panic's error.
    async fn stop(self, what: &str) -> Result<(), SandboxError>
    where
        SandboxError: From<E>,
    {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(result) => Ok(result?),
            Err(e) => Err(SandboxError::Setup(format!("the {what} task failed: {e}"))),
        }
    }
}

impl Sandbox {
    /// Starts the emulator in `dir`, registers the CRDs, creates the [`POOLS`] and a Node
    /// per `(node, socket file)` of `nodes`, starts an agent for each with its socket in
    /// `dir`, and the controller, whose leak GC runs every `gc` and spares allocations
    /// younger than `gc`.
    async fn start(
        dir: &Path,
        nodes: &[(&str, &str)],
        gc: Duration,
    ) -> Result<Sandbox, SandboxError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let dir = dir.canonicalize().map_err(io(dir))?;
        let emulator = Emulator::start(Config::default())
            .await
            .map_err(|e| SandboxError::Emulator(e.to_string()))?;
        let kubeconfig = dir.join("kubeconfig");
        emulator
            .write_kubeconfig(&kubeconfig)
            .map_err(|e| SandboxError::Setup(e.to_string()))?;
        let client = emulator.client();
        install_crds(&client).await?;
        // The network the sandbox prints is a `bridge` one: with `isGateway` and no
        // gateway in the result, bridge takes the prefix's first address, which ipledger
        // would hand to a pod too.
        for (name, cidr, gateway) in POOLS {
            let spec = IPPoolSpec {
                cidr: cidr.into(),
                gateway: Some(gateway.into()),
                default: true,
                ..Default::default()
            };
            Api::<IPPool>::all(client.clone())
                .create(&PostParams::default(), &IPPool::new(name, spec))
                .await
                .map_err(|e| SandboxError::Setup(format!("creating IPPool {name}: {e}")))?;
        }

        let mut agents = Vec::new();
        for (node, socket) in nodes {
            let object: Node =
                serde_json::from_value(serde_json::json!({"metadata": {"name": node}}))
                    .expect("a Node");
            Api::<Node>::all(client.clone())
                .create(&PostParams::default(), &object)
                .await
                .map_err(|e| SandboxError::Setup(format!("creating the Node {node}: {e}")))?;
            let socket = dir.join(socket);
            let args = AgentArgs {
                node_name: node.to_string(),
                socket: socket.clone(),
                kubeconfig: Some(kubeconfig.clone()),
                metrics_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                install_cni_bin_dir: None,
                cni_binary: None,
                write_conflist: None,
                conflist_bridge: "cni0".into(),
                conflist_network: "ipledger".into(),
                request_timeout: Duration::from_secs(25),
                cni_gc_grace: Duration::from_secs(60),
                header_read_timeout: Duration::from_secs(10),
            };
            let part = Part::spawn(|stopped| agent::run(args, stopped));
            agents.push(NodeAgent {
                node: node.to_string(),
                socket,
                part,
            });
        }
        // The agents list their watches before they bind their sockets: wait for them
        // all, so that what is printed next works at once.
        for agent in &mut agents {
            for _ in 0..200 {
                if agent.socket.exists() || agent.part.task.is_finished() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if agent.part.task.is_finished() {
                return match (&mut agent.part.task).await {
                    Ok(Err(e)) => Err(e.into()),
                    _ => Err(SandboxError::Setup(format!(
                        "the agent of {} stopped at start",
                        agent.node
                    ))),
                };
            }
        }

        let controller_args = ControllerArgs {
            kubeconfig: Some(kubeconfig.clone()),
            metrics_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            health_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            lease_namespace: "kube-system".into(),
            lease_name: "ipledger-controller".into(),
            identity: Some("sandbox-controller".into()),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            gc_interval: gc,
            gc_grace: gc,
            empty_block_ttl: Duration::from_secs(600),
            header_read_timeout: Duration::from_secs(10),
        };
        let controller = Part::spawn(|stopped| controller::run(controller_args, stopped));
        Ok(Sandbox {
            dir,
            kubeconfig,
            emulator,
            client,
            agents,
            controller,
        })
    }

    /// Stops the agents (each finishes its requests and removes its socket), the
    /// controller and the emulator; the first part's error, if any.
    async fn stop(self) -> Result<(), SandboxError> {
        let mut result = Ok(());
        for agent in self.agents {
            let stopped = agent.part.stop("agent").await;
            result = result.and(stopped);
        }
        let stopped = self.controller.stop("controller").await;
        result = result.and(stopped);
        self.emulator.shutdown().await;
        result
    }
}

/// Creates the pod `default/NAME` bound to `node`; returns its UID.
async fn create_pod(client: &Client, name: &str, node: &str) -> Result<String, SandboxError> {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "demo", "image": "registry.k8s.io/pause:3.10"}]},
    }))
    .expect("a Pod");
    let created = Api::<Pod>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &pod)
        .await
        .map_err(|e| SandboxError::Setup(format!("creating the Pod default/{name}: {e}")))?;
    Ok(created.metadata.uid.unwrap_or_default())
}

/// The exact shell command that runs the plugin for `command` on the sandbox's network.
pub fn plugin_command(command: &str, plugin: &Path, network: &Path) -> String {
    format!(
        "  CNI_COMMAND={command} CNI_CONTAINERID=demo-pod-1 CNI_NETNS=/var/run/netns/demo CNI_IFNAME=eth0 \\\n    \
         CNI_PATH=/opt/cni/bin CNI_ARGS='IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={DEMO_POD}' \\\n    \
         {} < {}",
        plugin.display(),
        network.display()
    )
}

/// Registers ipledger's CRDs and waits until the server serves them.
pub(crate) async fn install_crds(client: &Client) -> Result<(), SandboxError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crate::api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.create(&PostParams::default(), &crd)
            .await
            .map_err(|e| SandboxError::Setup(format!("registering CRD {name}: {e}")))?;
        let established = |crd: &CustomResourceDefinition| {
            crd.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
        };
        for attempt in 0.. {
            let current = crds
                .get(&name)
                .await
                .map_err(|e| SandboxError::Setup(e.to_string()))?;
            if established(&current) {
                break;
            }
            if attempt == 100 {
                return Err(SandboxError::Setup(format!(
                    "CRD {name} was not established"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}
