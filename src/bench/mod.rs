//! `ipledger bench`: the load tool. Simulates a cluster's nodes attaching and detaching
//! pods through the real plugin, against its own API emulator and controller or any
//! cluster, and judges the run from what it recorded and what the API holds at the end:
//! no address held twice, none leaked (docs/benchmarks.md).

mod fault;
pub mod history;
pub mod load;
pub mod parts;
mod progress;
pub mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::Api;
use serde_json::json;

use crate::api::{IPBlock, IPPool, IPPoolSpec};
use history::Record;
use load::{Budget, Caller, Flow, Pods, Recorder, Target};
use parts::{AgentProcess, Owned, Process};
use progress::Progress;
use report::{ApiFigures, Convergence, Figures, Memory, Report, Verdicts};

/// The CNI network name of every attachment the bench makes.
pub const NETWORK: &str = "ipledger-bench";

/// How the load reaches the agents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// The plugin binary, run per call as a container runtime runs it.
    Cni,
    /// The plugin's code in the bench process, straight at the agents' sockets.
    Socket,
}

/// What to run beside ipledger through the same driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Baseline {
    /// Debian's host-local (containernetworking-plugins), a range per simulated node.
    HostLocal,
}

/// `ipledger bench` arguments.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Simulated nodes, each with its own agent.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub nodes: u32,
    /// Concurrent attach/detach flows per node.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub flows: u32,
    /// Pods each flow attaches first and then keeps attached while it churns.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub hold: u32,
    /// Churn operations in all (each detaches a flow's oldest pod and attaches a new
    /// one).
    #[arg(long, default_value_t = 2000, conflicts_with = "duration")]
    pub ops: u64,
    /// Churn for this long instead of `--ops` (`30s`, `5m`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Share of detaches that never DEL: the pod is deleted as on a dead node, and only
    /// the controller's GC gives the address back. The same share of the pods left at
    /// the end vanish too.
    #[arg(long, default_value_t = 0.1, value_parser = share)]
    pub vanish: f64,
    /// How the load reaches the agents.
    #[arg(long, value_enum, default_value_t = Via::Cni)]
    pub via: Via,
    /// Run against this cluster (ipledger's CRDs and controller installed) instead of an
    /// emulator of its own. The run creates its namespace, IPPool and Nodes, runs the
    /// agents of its simulated nodes here, and removes it all at the end or on Ctrl-C.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// With `--kubeconfig`: run a controller of the bench's own too (for a cluster
    /// without one).
    #[arg(long, requires = "kubeconfig")]
    pub start_controller: bool,
    /// Run this baseline through the same driver in the same run and print the ratios.
    #[arg(long, value_enum)]
    pub compare: Option<Baseline>,
    /// host-local binary for `--compare host-local`.
    #[arg(long, default_value = "/usr/lib/cni/host-local")]
    pub host_local: PathBuf,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The run's pool.
    #[arg(long, default_value = "10.128.0.0/14")]
    pub cidr: String,
    /// The pool's blockSize (prefix length of its blocks); ipledger's default without.
    #[arg(long)]
    pub block_size: Option<u8>,
    /// Simulated nodes per agent process. 1 runs `ipledger agent` per node; more run
    /// that many agents in one process, each with its own client, caches and socket.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub nodes_per_process: u32,
    /// Working directory (sockets, kubeconfig, host-local's data); a temporary one
    /// without.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The own emulator's delay per write, as etcd's durable write costs a real server.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub write_latency: Duration,
    /// The own emulator's delay per get and list.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub read_latency: Duration,
    /// The own controller's leak GC interval and grace.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub gc: Duration,
    /// How long to wait for the GC and the pool status to converge.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub converge_timeout: Duration,
    /// Seed of the churn's choices (which detaches vanish).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Self-test of the verdicts: after the fill, record a second allocation of a live
    /// pod's address in the ledger for a new pod, and ADD that pod. The duplicates
    /// verdict must then fail.
    #[arg(long)]
    pub inject_duplicate: bool,
}

fn share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{text:?} is not a share between 0 and 1")),
    }
}

/// Why a run could not be made (its verdicts are in the report, not here).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("setting up the run failed: {0}")]
    Setup(String),
    #[error("the API failed during the run: {0}")]
    Api(String),
    #[error("the run's objects were not all removed: {0}")]
    Cleanup(String),
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("interrupted; the run's objects were removed")]
    Interrupted,
}

/// Runs the bench; its report, with `passed` false when a verdict failed.
pub async fn run(args: BenchArgs) -> Result<Report, BenchError> {
    let plugin = crate::sandbox::plugin_path();
    if args.via == Via::Cni && !plugin.exists() {
        return Err(BenchError::Setup(format!(
            "the load runs the CNI plugin {}, which does not exist; it is built beside ipledger (`cargo build --bins`)",
            plugin.display()
        )));
    }
    if args.compare == Some(Baseline::HostLocal) && !args.host_local.exists() {
        return Err(BenchError::Setup(format!(
            "--compare host-local runs {}, which does not exist (Debian package containernetworking-plugins; or --host-local PATH)",
            args.host_local.display()
        )));
    }
    let temp;
    let dir = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|error| BenchError::Io {
                path: dir.clone(),
                error,
            })?;
            dir.clone()
        }
        None => {
            temp = tempfile::tempdir().map_err(|error| BenchError::Io {
                path: std::env::temp_dir(),
                error,
            })?;
            temp.path().to_path_buf()
        }
    };

    // The cluster: an emulator of the run's own, or the one the kubeconfig names.
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let (emulator, kubeconfig, client) = match &args.kubeconfig {
        Some(path) => {
            let client = crate::cluster::client(Some(path))
                .await
                .map_err(BenchError::Setup)?;
            (None, path.clone(), client)
        }
        None => {
            let config = kube_emulator::Config {
                write_latency: args.write_latency,
                read_latency: args.read_latency,
                // A real server's watch cache keeps 75 s of changes per resource; with
                // hundreds of nodes churning, the emulator's default 1,000 changes would
                // expire the watches of agents that are still starting.
                history_window: 20_000,
                ..Default::default()
            };
            let emulator = kube_emulator::Emulator::start(config)
                .await
                .map_err(|e| BenchError::Setup(format!("the API emulator did not start: {e}")))?;
            let kubeconfig = dir.join("kubeconfig");
            emulator
                .write_kubeconfig(&kubeconfig)
                .map_err(|e| BenchError::Setup(e.to_string()))?;
            let client = emulator.client();
            crate::sandbox::install_crds(&client)
                .await
                .map_err(|e| BenchError::Setup(e.to_string()))?;
            (Some(emulator), kubeconfig, client)
        }
    };
    let owned = Owned {
        client: client.clone(),
        namespace: format!("ipledger-bench-{run_id}"),
        pool: format!("ipledger-bench-{run_id}"),
        nodes: (0..args.nodes)
            .map(|n| format!("bench-{run_id}-n{n}"))
            .collect(),
    };
    let spec = IPPoolSpec {
        cidr: args.cidr.clone(),
        block_size: args.block_size,
        ..Default::default()
    };
    eprintln!(
        "run {run_id}: namespace {}, IPPool {} ({}), {} Nodes bench-{run_id}-n*",
        owned.namespace, owned.pool, args.cidr, args.nodes
    );
    let stop = Arc::new(Budget::stopped_on_ctrl_c());
    // Whatever fails from here on, what was created is removed below.
    let mut controller = None;
    let outcome = async {
        owned.create(&spec).await?;
        if emulator.is_some() || args.start_controller {
            controller =
                Some(parts::start_controller(&kubeconfig, &owned.namespace, args.gc).await?);
        }
        let parts = Parts {
            dir: &dir,
            kubeconfig: &kubeconfig,
            client: &client,
            owned: &owned,
            emulator: emulator.as_ref(),
            controller: controller.as_ref(),
            plugin: &plugin,
        };
        measure(&args, &parts, &stop).await
    }
    .await;
    // The pool's finalizer is the controller's to remove: it still runs here.
    let cleanup = if args.kubeconfig.is_some() {
        owned.remove(args.converge_timeout).await
    } else {
        Ok(())
    };
    drop(controller);
    if let Some(emulator) = emulator {
        emulator.shutdown().await;
    }
    let report = outcome?;
    cleanup?;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).expect("the report serializes");
        std::fs::write(path, text + "\n").map_err(|error| BenchError::Io {
            path: path.clone(),
            error,
        })?;
    }
    Ok(report)
}

/// What a run measures with.
struct Parts<'a> {
    dir: &'a Path,
    kubeconfig: &'a Path,
    client: &'a Client,
    owned: &'a Owned,
    emulator: Option<&'a kube_emulator::Emulator>,
    controller: Option<&'a Process>,
    plugin: &'a Path,
}

/// Starts the agents, runs the load, waits for convergence and judges; the run's
/// objects are left for the caller to remove.
async fn measure(
    args: &BenchArgs,
    parts: &Parts<'_>,
    stop: &Arc<Budget>,
) -> Result<Report, BenchError> {
    let Parts {
        dir,
        kubeconfig,
        client,
        owned,
        emulator,
        controller,
        plugin,
    } = *parts;
    owned.guarded(Duration::from_secs(30)).await?;
    let agents = parts::start_agents(
        &owned.nodes,
        args.nodes_per_process as usize,
        kubeconfig,
        dir,
    )
    .await?;
    let sockets: Vec<&PathBuf> = agents.iter().flat_map(|a| &a.sockets).collect();
    let targets: Vec<Arc<Target>> = owned
        .nodes
        .iter()
        .zip(sockets)
        .map(|(node, socket)| {
            Arc::new(Target {
                node: node.clone(),
                config: json!({"cniVersion": "1.0.0", "name": NETWORK, "type": "ipledger",
                               "ipam": {"type": "ipledger", "socket": socket, "pools": [owned.pool]}}),
            })
        })
        .collect();
    let caller = Arc::new(match args.via {
        Via::Cni => Caller::Binary(plugin.to_path_buf()),
        Via::Socket => Caller::InProcess,
    });
    let pods = Pods {
        api: Api::namespaced(client.clone(), &owned.namespace),
        namespace: owned.namespace.clone(),
    };

    let writes_before = ledger_writes(emulator, &agents).await;
    let recorder = Recorder::new();
    let flows = make_flows(args, &targets, &caller, &recorder, Some(&pods));
    let (mut flows, mut figures) = drive(args, flows, &recorder, stop, "ipledger").await;
    for flow in &mut flows {
        flow.finish().await;
    }
    if stop.is_stopped() {
        run_all(flows, |flow| flow.detach_all()).await;
        return Err(BenchError::Interrupted);
    }
    if args.inject_duplicate {
        fault::inject_duplicate(client, owned, &caller, &pods, &mut flows).await?;
    }
    let writes_after = ledger_writes(emulator, &agents).await;
    // `vanish` of the pods left, spread over the flows.
    let live: usize = flows.iter().map(|f| f.live.len()).sum();
    let vanishing = (live as f64 * args.vanish).round() as usize;
    let count = flows.len();
    let mut shares =
        (0..count).map(move |i| vanishing / count + usize::from(i < vanishing % count));
    let flows = run_all(flows, |flow| flow.vanish(shares.next().unwrap_or(0))).await;
    let last_vanish = Instant::now();
    figures.vanished = recorder.figures("").vanished;

    let history = recorder.history();
    let (convergence, records) =
        converge(owned, &history, last_vanish, args.converge_timeout).await?;
    let live = history::live(&history);
    let verdicts = Verdicts {
        overlaps: history::overlaps(&history),
        shared: history::shared_addresses(&records),
        ledger: history::ledger(&records, &live),
    };
    figures.api = api_figures(writes_before, writes_after, &figures);

    let mut peaks: Vec<u64> = agents.iter().filter_map(|a| a.process.peak_kib()).collect();
    peaks.sort_unstable();
    let memory = Memory {
        agent_processes: agents.len(),
        nodes_per_process: args.nodes_per_process as usize,
        agent_peak_kib: peaks.last().copied().unwrap_or(0),
        agent_mean_peak_kib: peaks.iter().sum::<u64>() / peaks.len().max(1) as u64,
        controller_peak_kib: controller.and_then(Process::peak_kib),
    };

    // On a cluster the run's pods go by DEL, so that the pool can be deleted.
    if args.kubeconfig.is_some() {
        run_all(flows, |flow| flow.detach_all()).await;
    }
    drop(agents);

    let host_local = match args.compare {
        Some(Baseline::HostLocal) => Some(baseline(args, dir).await),
        None => None,
    };
    let passed = verdicts.passed();
    let mut report = Report {
        settings: settings(args, &owned.namespace["ipledger-bench-".len()..]),
        ipledger: figures,
        memory,
        convergence,
        verdicts,
        host_local,
        ratios: Default::default(),
        passed,
    };
    report.compare();
    Ok(report)
}

/// The flows of every target, `args.flows` each.
fn make_flows(
    args: &BenchArgs,
    targets: &[Arc<Target>],
    caller: &Arc<Caller>,
    recorder: &Arc<Recorder>,
    pods: Option<&Pods>,
) -> Vec<Flow> {
    targets
        .iter()
        .flat_map(|target| {
            (0..args.flows as usize).map(|index| {
                Flow::new(
                    target.clone(),
                    index,
                    caller.clone(),
                    recorder.clone(),
                    pods.cloned(),
                    args.hold as usize,
                    args.vanish,
                    args.seed,
                )
            })
        })
        .collect()
}

/// Runs `step` on every flow concurrently, each on its own task.
async fn run_all<F, Fut>(flows: Vec<Flow>, mut step: F) -> Vec<Flow>
where
    F: FnMut(Flow) -> Fut,
    Fut: std::future::Future<Output = Flow> + Send + 'static,
{
    let tasks: Vec<_> = flows
        .into_iter()
        .map(|flow| tokio::spawn(step(flow)))
        .collect();
    let mut flows = Vec::with_capacity(tasks.len());
    for task in tasks {
        flows.push(task.await.expect("a flow task does not panic"));
    }
    flows
}

/// Fill, then churn, with the progress shown; the flows and the load's figures.
async fn drive(
    args: &BenchArgs,
    flows: Vec<Flow>,
    recorder: &Arc<Recorder>,
    stop: &Arc<Budget>,
    plugin: &str,
) -> (Vec<Flow>, Figures) {
    let planned_fill = flows.len() as u64 * u64::from(args.hold);
    let total = match args.duration {
        None => Some(planned_fill + args.ops),
        Some(_) => None,
    };
    let progress = Progress::start(plugin, total, recorder.clone());
    let started = Instant::now();
    let flows = {
        let stop = stop.clone();
        run_all(flows, move |flow| flow.fill(stop.clone())).await
    };
    let fill_seconds = started.elapsed().as_secs_f64();
    let fill_adds = recorder.adds.load(Ordering::Relaxed) as usize;
    let churn_started = Instant::now();
    let budget = Arc::new(match args.duration {
        Some(duration) => Budget::until(Instant::now() + duration, stop.flag()),
        None => Budget::operations(args.ops as i64, stop.flag()),
    });
    let flows = run_all(flows, |flow| flow.churn(budget.clone())).await;
    let churn_seconds = churn_started.elapsed().as_secs_f64();
    progress.finish();
    let mut figures = recorder.figures(plugin);
    let seconds = fill_seconds + churn_seconds;
    figures.fill_seconds = fill_seconds;
    figures.fill_adds = fill_adds;
    figures.churn_seconds = churn_seconds;
    figures.churn_operations = budget.taken();
    figures.adds_per_second = figures.add.count as f64 / seconds;
    figures.fill_adds_per_second = fill_adds as f64 / fill_seconds;
    figures.operations_per_second = (figures.add.count + figures.del.count) as f64 / seconds;
    (flows, figures)
}

/// The same load through host-local: a range per simulated node, no API.
async fn baseline(args: &BenchArgs, dir: &Path) -> Figures {
    let targets: Vec<Arc<Target>> = (0..args.nodes)
        .map(|n| {
            // A /20 per node, in 10.0.0.0/8: up to 4,096 nodes of 4,094 addresses. Each
            // node its own data directory, as each real node has: host-local serializes
            // the calls of one directory with a file lock.
            let subnet = format!("10.{}.{}.0/20", n / 16, (n % 16) * 16);
            let node = format!("host-local-n{n}");
            let data_dir = dir.join("host-local").join(&node);
            Arc::new(Target {
                node,
                config: json!({"cniVersion": "1.0.0", "name": NETWORK, "type": "host-local",
                               "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                                        "dataDir": data_dir}}),
            })
        })
        .collect();
    let recorder = Recorder::new();
    let caller = Arc::new(Caller::Binary(args.host_local.clone()));
    let flows = make_flows(args, &targets, &caller, &recorder, None);
    let stop = Arc::new(Budget::never());
    let (flows, figures) = drive(args, flows, &recorder, &stop, "host-local").await;
    run_all(flows, |flow| flow.detach_all()).await;
    figures
}

/// Ledger writes and conflicts so far: from the emulator's request log, else summed
/// from the agents' counters (only agents of one node each serve theirs).
async fn ledger_writes(
    emulator: Option<&kube_emulator::Emulator>,
    agents: &[AgentProcess],
) -> Option<(&'static str, u64, u64)> {
    if let Some(emulator) = emulator {
        let (mut writes, mut conflicts) = (0, 0);
        for event in emulator.audit() {
            if event.group == "ipledger.io"
                && event.resource == "ipblocks"
                && matches!(event.verb, "create" | "update" | "patch" | "delete")
            {
                writes += 1;
                conflicts += u64::from(event.code == 409);
            }
        }
        return Some(("server", writes, conflicts));
    }
    let (mut writes, mut conflicts) = (0.0, 0.0);
    for agent in agents {
        writes += agent.metric_sum("ipledger_agent_api_writes_total").await?;
        conflicts += agent
            .metric_sum("ipledger_agent_cas_conflicts_total")
            .await?;
    }
    Some(("agents", writes as u64, conflicts as u64))
}

fn api_figures(
    before: Option<(&'static str, u64, u64)>,
    after: Option<(&'static str, u64, u64)>,
    figures: &Figures,
) -> Option<ApiFigures> {
    let ((source, w0, c0), (_, w1, c1)) = (before?, after?);
    let adds = figures.add.count.max(1) as f64;
    let operations = (figures.add.count + figures.del.count).max(1) as f64;
    Some(ApiFigures {
        source: source.into(),
        ledger_writes: w1 - w0,
        conflicts: c1 - c0,
        writes_per_add: (w1 - w0) as f64 / adds,
        writes_per_operation: (w1 - w0) as f64 / operations,
        conflicts_per_operation: (c1 - c0) as f64 / operations,
    })
}

/// Waits until the API's records are the live attachments exactly (the GC released
/// every vanished pod's address), then until the pool's status counts them.
async fn converge(
    owned: &Owned,
    history: &[history::Held],
    last_vanish: Instant,
    timeout: Duration,
) -> Result<(Convergence, Vec<Record>), BenchError> {
    let live = history::live(history);
    let api = |e: kube::Error| BenchError::Api(e.to_string());
    let deadline = Instant::now() + timeout;
    let (records, blocks, gc_seconds) = loop {
        let blocks = owned.blocks().await.map_err(api)?;
        let records = records_of(&blocks);
        if history::ledger(&records, &live).settled() {
            break (
                records,
                blocks.len(),
                Some(last_vanish.elapsed().as_secs_f64()),
            );
        }
        if Instant::now() > deadline {
            break (records, blocks.len(), None);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let settled = Instant::now();
    let pools = Api::<IPPool>::all(owned.client.clone());
    let status_seconds = loop {
        let pool = pools.get(&owned.pool).await.map_err(api)?;
        let status = pool.status.unwrap_or_default();
        if status.allocated.as_deref() == Some(records.len().to_string().as_str())
            && status.blocks == Some(blocks as u64)
        {
            break Some(settled.elapsed().as_secs_f64());
        }
        if Instant::now() > deadline.max(settled + Duration::from_secs(30)) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let pods =
        Api::<k8s_openapi::api::core::v1::Pod>::namespaced(owned.client.clone(), &owned.namespace)
            .list_metadata(&Default::default())
            .await
            .map_err(api)?
            .items
            .len();
    Ok((
        Convergence {
            gc_seconds,
            status_seconds,
            live: live.len(),
            blocks,
            pods,
        },
        records,
    ))
}

/// The bench network's allocation records in `blocks`.
fn records_of(blocks: &[IPBlock]) -> Vec<Record> {
    blocks
        .iter()
        .flat_map(|b| &b.spec.allocations)
        .filter(|a| a.network == NETWORK)
        .map(|a| Record {
            address: a.address,
            container_id: a.container_id.clone(),
        })
        .collect()
}

/// The settings of the run, for the report.
fn settings(args: &BenchArgs, run_id: &str) -> serde_json::Value {
    json!({
        "nodes": args.nodes,
        "flowsPerNode": args.flows,
        "hold": args.hold,
        "ops": if args.duration.is_none() { Some(args.ops) } else { None },
        "duration": args.duration.map(|d| humantime::format_duration(d).to_string()),
        "vanish": args.vanish,
        "via": format!("{:?}", args.via).to_lowercase(),
        "cluster": if args.kubeconfig.is_some() { "kubeconfig" } else { "emulator" },
        "cidr": args.cidr,
        "blockSize": args.block_size,
        "nodesPerProcess": args.nodes_per_process,
        "writeLatency": humantime::format_duration(args.write_latency).to_string(),
        "readLatency": humantime::format_duration(args.read_latency).to_string(),
        "gc": humantime::format_duration(args.gc).to_string(),
        "seed": args.seed,
        "runId": run_id,
        "injectDuplicate": args.inject_duplicate,
    })
}

impl Budget {
    /// A budget that only stops on Ctrl-C or SIGTERM: the fill's, and the load's stop
    /// signal. (The parts run in process groups of their own and are stopped by the
    /// bench; a bench killed by SIGKILL leaves them running.)
    fn stopped_on_ctrl_c() -> Budget {
        let budget = Budget::never();
        let flag = budget.flag();
        tokio::spawn(async move {
            crate::agent::termination().await;
            eprintln!(
                "interrupted: finishing the calls in flight, then removing the run's objects"
            );
            flag.store(true, Ordering::Relaxed);
        });
        budget
    }
}
