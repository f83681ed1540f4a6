//! The load tool: ADD and DEL through the real plugin binary against an agent on the API
//! emulator, next to Debian's `host-local` on the same machine in the same run.
//!
//! Run: `cargo build --release --locked --bins && cargo bench --bench cni_load` (add
//! `-- --quick` for fewer operations; the plugin is another crate's binary, which
//! `cargo bench` does not build). Prints
//! median and p99 latency and operations per second, sequentially and 8-way parallel,
//! the API writes per allocation (from the agent's metrics), and each plugin's
//! start-to-exit time for VERSION.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Agent, HOST_LOCAL, Plugin};
use ipledger::api::IPPoolSpec;
use serde_json::json;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (sequential, parallel) = if quick { (100, 400) } else { (300, 1600) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();

    let kubeconfig = dir.path().join("kubeconfig");
    let spec = IPPoolSpec {
        cidr: "10.80.0.0/16".into(),
        gateway: Some("10.80.0.1".into()),
        ..Default::default()
    };
    let emulator = runtime.block_on(common::emulator(&[("bench", spec)], &kubeconfig));
    let agent = Agent::start("bench-node", &kubeconfig, dir.path());
    let (socket, metrics_port) = (agent.socket.clone(), agent.metrics_port);

    let ipledger = Plugin {
        name: "ipledger",
        binary: test_support::binary("ipledger-cni"),
        config: json!({"cniVersion": "1.0.0", "name": "bench", "type": "bridge",
                       "ipam": {"type": "ipledger", "socket": socket, "pools": ["bench"]}}),
    };
    let host_local = Path::new(HOST_LOCAL).exists().then(|| Plugin {
        name: "host-local",
        binary: PathBuf::from(HOST_LOCAL),
        config: json!({"cniVersion": "1.0.0", "name": "bench", "type": "bridge",
                       "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.81.0.0/16"}]],
                                "dataDir": dir.path().join("host-local")}}),
    });
    if host_local.is_none() {
        println!(
            "host-local not found at {HOST_LOCAL} (Debian package containernetworking-plugins): ipledger only"
        );
    }

    println!("| plugin | verb | mode | ops | median ms | p99 ms | ops/s |");
    println!("|---|---|---|---|---|---|---|");
    // API writes (creates and replaces) per verb, from the agent's own counter.
    let mut writes = std::collections::BTreeMap::<&str, (u64, usize)>::new();
    for plugin in std::iter::once(&ipledger).chain(host_local.as_ref()) {
        for (mode, count, workers) in [("sequential", sequential, 1), ("8-way", parallel, 8)] {
            let ids: Vec<String> = (0..count).map(|i| format!("{mode}-{i}")).collect();
            for verb in ["ADD", "DEL"] {
                let before = api_writes(metrics_port);
                let (latencies, elapsed) = run_many(plugin, verb, &ids, workers);
                report(plugin.name, verb, mode, &latencies, elapsed);
                if plugin.name == "ipledger" {
                    let entry = writes.entry(verb).or_default();
                    entry.0 += api_writes(metrics_port) - before;
                    entry.1 += count;
                }
            }
        }
    }
    println!();
    for (verb, (count, ops)) in writes {
        println!(
            "ipledger API writes for {verb}: {count} for {ops} operations = {:.2} per operation",
            count as f64 / ops as f64
        );
    }
    for plugin in std::iter::once(&ipledger).chain(host_local.as_ref()) {
        let mut times: Vec<f64> = (0..100).map(|_| plugin.run("VERSION", "v").0).collect();
        times.sort_by(f64::total_cmp);
        println!(
            "{} VERSION start-to-exit: median {:.2} ms, p99 {:.2} ms",
            plugin.name, times[50], times[98]
        );
    }
    drop(agent);
    runtime.block_on(emulator.shutdown());
}

fn run_many(plugin: &Plugin, verb: &str, ids: &[String], workers: usize) -> (Vec<f64>, Duration) {
    let started = Instant::now();
    let chunks: Vec<&[String]> = ids.chunks(ids.len().div_ceil(workers)).collect();
    let latencies = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|id| {
                            let (ms, ok) = plugin.run(verb, id);
                            assert!(ok, "{} {verb} {id} failed", plugin.name);
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

fn report(plugin: &str, verb: &str, mode: &str, latencies: &[f64], elapsed: Duration) {
    let mut sorted = latencies.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "| {plugin} | {verb} | {mode} | {} | {:.2} | {:.2} | {:.0} |",
        sorted.len(),
        at(0.5),
        at(0.99),
        sorted.len() as f64 / elapsed.as_secs_f64()
    );
}

/// Sum of `ipledger_agent_api_writes_total` over its labels, scraped from the agent.
fn api_writes(port: u16) -> u64 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| l.starts_with("ipledger_agent_api_writes_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
