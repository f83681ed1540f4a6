//! The load tool: ADD and DEL through the real plugin binary against an agent on the API
//! emulator, next to Debian's `host-local` on the same machine in the same run; then a
//! cold burst of 16 nodes into a fresh pool.
//!
//! Run: `cargo build --release --locked --bins && cargo bench --bench cni_load` (add
//! `-- --quick` for fewer operations; the plugin is another crate's binary, which
//! `cargo bench` does not build).
//!
//! Everything runs twice: against the emulator as it is (a write answered in
//! microseconds), and with the latency a real server costs (3 ms per write for etcd's
//! durable write, 0.5 ms per read), so that what saves a write or a round trip shows.
//! host-local runs beside each. Printed: median and p99 latency and operations per
//! second, sequentially and 8-way parallel; the API reads and writes per operation, from
//! the emulator's request log (not the agent's own counters); the agent's own handling
//! time beside the plugin's start-to-exit; and for the cold burst its latency, the ADDs
//! that waited for a block claim and the blocks claimed ahead.

mod common;

use std::time::{Duration, Instant};

use common::{Agent, HOST_LOCAL, Plugin};
use ipledger::api::IPPoolSpec;
use serde_json::json;

/// The emulator as it is, and as slow as a real server.
const SETTINGS: [(&str, Duration, Duration); 2] = [
    ("no latency", Duration::ZERO, Duration::ZERO),
    (
        "3 ms per write, 0.5 ms per read",
        Duration::from_millis(3),
        Duration::from_micros(500),
    ),
];

/// The cold burst: nodes, ADDs per node.
const BURST: (usize, usize) = (16, 100);

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (sequential, parallel) = if quick { (100, 400) } else { (300, 1600) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let modes = [("sequential", sequential, 1), ("8-way", parallel, 8)];
    for (setting, write_latency, read_latency) in SETTINGS {
        println!("\n## {setting}\n");
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let config = kube_emulator::Config {
            write_latency,
            read_latency,
            ..Default::default()
        };
        let pools = [
            ("bench", pool("10.80.0.0/16", 26)),
            ("burst", pool("10.82.0.0/21", 28)),
        ];
        let emulator = runtime.block_on(common::emulator_with(config, &pools, &kubeconfig));
        // kubelet runs pods that exist: each ADD names a pod bound to its node, as the
        // agent's pod watch shows it.
        let mut pods: Vec<(String, String)> = modes
            .iter()
            .flat_map(|(mode, count, _)| (0..*count).map(move |i| format!("{mode}-{i}")))
            .map(|name| ("bench-node".to_string(), name))
            .collect();
        for node in 0..BURST.0 {
            pods.extend(
                (0..BURST.1).map(|i| (format!("burst-{node}"), format!("burst-{node}-{i}"))),
            );
        }
        runtime.block_on(async { common::nodes_and_pods(&emulator.client(), &pods).await });
        let agent = Agent::start("bench-node", &kubeconfig, dir.path());

        let ipledger = Plugin {
            name: "ipledger",
            binary: test_support::binary("ipledger-cni"),
            config: json!({"cniVersion": "1.0.0", "name": "bench", "type": "bridge",
                           "ipam": {"type": "ipledger", "socket": agent.socket, "pools": ["bench"]}}),
        };
        let host_local = std::path::Path::new(HOST_LOCAL).exists().then(|| Plugin {
            name: "host-local",
            binary: HOST_LOCAL.into(),
            config: json!({"cniVersion": "1.0.0", "name": "bench", "type": "bridge",
                           "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.81.0.0/16"}]],
                                    "dataDir": dir.path().join("host-local")}}),
        });
        if host_local.is_none() {
            println!(
                "host-local not found at {HOST_LOCAL} (Debian package containernetworking-plugins): ipledger only\n"
            );
        }

        println!(
            "| plugin | verb | mode | ops | median ms | p99 ms | ops/s | API reads/op | API writes/op | agent ms/op | server ms/write |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        let mut figures = Vec::new();
        for plugin in std::iter::once(&ipledger).chain(host_local.as_ref()) {
            for (mode, count, workers) in modes {
                let ids: Vec<String> = (0..count).map(|i| format!("{mode}-{i}")).collect();
                for verb in ["ADD", "DEL"] {
                    let log_before = emulator.audit().len();
                    let handled_before = agent.handling(verb);
                    let (latencies, elapsed) = run_many(&ids, workers, |id| plugin.run(verb, id));
                    let mut row = Figures::of(&latencies, elapsed);
                    if plugin.name == "ipledger" {
                        let requests = common::requests(&emulator.audit()[log_before..]);
                        row.api = Some((
                            requests.reads as f64 / count as f64,
                            requests.writes as f64 / count as f64,
                        ));
                        row.server_ms =
                            Some(requests.write_seconds * 1000.0 / requests.writes.max(1) as f64);
                        let (seconds, handled) = agent.handling(verb);
                        row.agent_ms = Some(
                            (seconds - handled_before.0) * 1000.0 / (handled - handled_before.1),
                        );
                    }
                    println!("{}", row.line(plugin.name, verb, mode));
                    figures.push(((plugin.name, verb, mode), row));
                }
            }
        }
        let find =
            |key: (&str, &str, &str)| figures.iter().find(|(k, _)| *k == key).map(|(_, f)| f);
        if let (Some(ours), Some(theirs)) = (
            find(("ipledger", "ADD", "sequential")),
            find(("host-local", "ADD", "sequential")),
        ) {
            println!(
                "\nsequential ADD median: {:.2}× host-local's",
                ours.median / theirs.median
            );
        }
        if let (Some(ours), Some(theirs)) = (
            find(("ipledger", "ADD", "8-way")),
            find(("host-local", "ADD", "8-way")),
        ) {
            println!(
                "8-way ADD throughput: {:.2}× host-local's (p99 {:.1} ms against {:.1} ms)",
                ours.per_second / theirs.per_second,
                ours.p99,
                theirs.p99
            );
        }
        println!(
            "ipledger: {} ADDs waited for a block claim, {} blocks claimed ahead",
            agent.metric_sum("ipledger_agent_claim_waits_total"),
            agent.metric_sum("ipledger_agent_claims_ahead_total")
        );
        for plugin in std::iter::once(&ipledger).chain(host_local.as_ref()) {
            let mut times: Vec<f64> = (0..100).map(|_| plugin.run("VERSION", "v").0).collect();
            times.sort_by(f64::total_cmp);
            println!(
                "{} VERSION start-to-exit: median {:.2} ms, p99 {:.2} ms",
                plugin.name, times[50], times[98]
            );
        }
        drop(agent);
        cold_burst(&emulator, &kubeconfig, dir.path());
        runtime.block_on(emulator.shutdown());
    }
}

/// 16 agents, each node's 100 ADDs one after another, all nodes at once (16-way), into a
/// fresh pool of /28 blocks: every node claims 7 blocks as it goes.
fn cold_burst(
    emulator: &kube_emulator::Emulator,
    kubeconfig: &std::path::Path,
    dir: &std::path::Path,
) {
    let (nodes, per_node) = BURST;
    let agents: Vec<Agent> = (0..nodes)
        .map(|n| Agent::start(&format!("burst-{n}"), kubeconfig, dir))
        .collect();
    let plugins: Vec<Plugin> = agents
        .iter()
        .map(|agent| Plugin {
            name: "ipledger",
            binary: test_support::binary("ipledger-cni"),
            config: json!({"cniVersion": "1.0.0", "name": "burst", "type": "bridge",
                           "ipam": {"type": "ipledger", "socket": agent.socket, "pools": ["burst"]}}),
        })
        .collect();
    let log_before = emulator.audit().len();
    let started = Instant::now();
    let latencies: Vec<f64> = std::thread::scope(|scope| {
        let handles: Vec<_> = plugins
            .iter()
            .enumerate()
            .map(|(n, plugin)| {
                scope.spawn(move || {
                    (0..per_node)
                        .map(|i| {
                            let (ms, ok) = plugin.run("ADD", &format!("burst-{n}-{i}"));
                            assert!(ok, "burst ADD {n}/{i} failed");
                            ms
                        })
                        .collect::<Vec<f64>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let row = Figures::of(&latencies, started.elapsed());
    let requests = common::requests(&emulator.audit()[log_before..]);
    let sum = |metric: &str| agents.iter().map(|a| a.metric_sum(metric)).sum::<f64>();
    println!(
        "\ncold burst, {nodes} nodes × {per_node} ADDs at {nodes}-way into a fresh /21 pool of /28 blocks:"
    );
    println!(
        "| ops | median ms | p99 ms | max ms | ops/s | ADDs that waited for a claim | blocks claimed ahead | blocks created |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {:.2} | {:.2} | {:.2} | {:.0} | {} ({nodes}) | {} | {} |",
        latencies.len(),
        row.median,
        row.p99,
        row.max,
        row.per_second,
        sum("ipledger_agent_claim_waits_total"),
        sum("ipledger_agent_claims_ahead_total"),
        requests.creates,
    );
}

fn pool(cidr: &str, block_size: u8) -> IPPoolSpec {
    IPPoolSpec {
        cidr: cidr.into(),
        block_size: Some(block_size),
        ..Default::default()
    }
}

/// Runs `op` for every id over `workers` threads; returns each one's milliseconds and
/// the wall time.
fn run_many(
    ids: &[String],
    workers: usize,
    op: impl Fn(&str) -> (f64, bool) + Sync,
) -> (Vec<f64>, Duration) {
    let started = Instant::now();
    let chunks: Vec<&[String]> = ids.chunks(ids.len().div_ceil(workers)).collect();
    let op = &op;
    let latencies = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|id| {
                            let (ms, ok) = op(id);
                            assert!(ok, "{id} failed");
                            ms
                        })
                        .collect::<Vec<f64>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    (latencies, started.elapsed())
}

/// One row of the table.
struct Figures {
    ops: usize,
    median: f64,
    p99: f64,
    max: f64,
    per_second: f64,
    /// API reads and writes per operation.
    api: Option<(f64, f64)>,
    /// The agent's mean time per request, from its histogram.
    agent_ms: Option<f64>,
    /// The server's mean time per write, from its request log.
    server_ms: Option<f64>,
}

impl Figures {
    fn of(latencies: &[f64], elapsed: Duration) -> Figures {
        let mut sorted = latencies.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q).round() as usize];
        Figures {
            ops: sorted.len(),
            median: at(0.5),
            p99: at(0.99),
            max: at(1.0),
            per_second: sorted.len() as f64 / elapsed.as_secs_f64(),
            api: None,
            agent_ms: None,
            server_ms: None,
        }
    }

    fn line(&self, plugin: &str, verb: &str, mode: &str) -> String {
        let (reads, writes) = self.api.map_or(("–".into(), "–".into()), |(r, w)| {
            (format!("{r:.2}"), format!("{w:.2}"))
        });
        let ms = |v: Option<f64>| v.map_or("–".into(), |ms| format!("{ms:.2}"));
        let (agent, server) = (ms(self.agent_ms), ms(self.server_ms));
        format!(
            "| {plugin} | {verb} | {mode} | {} | {:.2} | {:.2} | {:.0} | {reads} | {writes} | {agent} | {server} |",
            self.ops, self.median, self.p99, self.per_second
        )
    }
}
