//! `ipledger sandbox`: ipledger's main job on one machine, with no cluster at hand.
//!
//! Starts the API emulator, registers the CRDs, creates an IPv4 and an IPv6 default pool,
//! the Node `sandbox-node` and the pod `default/demo`, runs an agent for that node with
//! its socket in the sandbox directory and the controller, and writes a kubeconfig and a
//! CNI network configuration there. Then it prints what to try and serves until Ctrl-C.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, PostParams};

use crate::agent::{self, AgentArgs};
use crate::api::{IPPool, IPPoolSpec};
use crate::controller::{self, ControllerArgs};
use kube_emulator::{Config, Emulator};

/// Name of the node the sandbox's agent serves.
pub const NODE: &str = "sandbox-node";
/// The pod (in `default`) the printed plugin commands allocate for.
pub const DEMO_POD: &str = "demo";

/// Why the sandbox could not start.
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
}

/// Runs the sandbox in `dir` until `shutdown` completes.
pub async fn run(
    dir: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SandboxError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| SandboxError::Io { path, error }
    };
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
    // The network below is a `bridge` one: with `isGateway` and no gateway in the result,
    // bridge takes the prefix's first address, which ipledger would hand to a pod too.
    for (name, cidr, gateway) in [
        ("sandbox-v4", "10.244.0.0/16", "10.244.0.1"),
        ("sandbox-v6", "fd00:10:244::/48", "fd00:10:244::1"),
    ] {
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

    // The node the agent serves, and the pod the printed commands allocate for: the
    // controller releases the addresses of pods that do not exist.
    let setup = |what: &'static str| {
        move |e: kube::Error| SandboxError::Setup(format!("creating the {what}: {e}"))
    };
    let node: Node =
        serde_json::from_value(serde_json::json!({"metadata": {"name": NODE}})).expect("a Node");
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .map_err(setup("Node"))?;
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": DEMO_POD},
        "spec": {"nodeName": NODE, "containers": [{"name": "demo", "image": "registry.k8s.io/pause:3.10"}]},
    }))
    .expect("a Pod");
    Api::<Pod>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &pod)
        .await
        .map_err(setup("Pod"))?;

    let socket = dir.join("agent.sock");
    let network = dir.join("network.json");
    let config = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "sandbox",
        "type": "bridge",
        "ipam": {"type": "ipledger", "socket": socket},
    });
    std::fs::write(&network, format!("{config:#}\n")).map_err(io(&network))?;

    let args = AgentArgs {
        node_name: NODE.into(),
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
    let (stop_agent, agent_stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(agent::run(args, async move {
        let _ = agent_stopped.await;
    }));
    for _ in 0..200 {
        if socket.exists() || agent.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if agent.is_finished() {
        return match agent.await {
            Ok(Err(e)) => Err(e.into()),
            _ => Err(SandboxError::Setup("the agent stopped at start".into())),
        };
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
        gc_interval: Duration::from_secs(60),
        gc_grace: Duration::from_secs(60),
        empty_block_ttl: Duration::from_secs(600),
        header_read_timeout: Duration::from_secs(10),
    };
    let (stop_controller, controller_stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(controller::run(controller_args, async move {
        let _ = controller_stopped.await;
    }));

    let plugin = std::env::current_exe()
        .map(|exe| exe.with_file_name("ipledger-cni"))
        .unwrap_or_else(|_| PathBuf::from("ipledger-cni"));
    println!("ipledger sandbox is running in {}", dir.display());
    println!(
        "  API emulator: {}   agent socket: {}",
        emulator.url(),
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
        60
    );
    println!("  kubectl delete pod {DEMO_POD}");
    println!();
    println!("Ctrl-C stops the sandbox.");

    shutdown.await;
    let _ = stop_agent.send(());
    let _ = stop_controller.send(());
    let agent_result = agent.await;
    let controller_result = controller.await;
    emulator.shutdown().await;
    match agent_result {
        Ok(result) => result?,
        Err(e) => return Err(SandboxError::Setup(format!("the agent task failed: {e}"))),
    }
    match controller_result {
        Ok(result) => Ok(result?),
        Err(e) => Err(SandboxError::Setup(format!(
            "the controller task failed: {e}"
        ))),
    }
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

async fn install_crds(client: &Client) -> Result<(), SandboxError> {
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
