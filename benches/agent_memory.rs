//! Agent memory over borrow/return cycles: a node whose blocks are all taken borrows
//! addresses from other nodes' blocks and gives them back, 10,000 times, through the real
//! plugin binary. Writers, cached copies and borrower labels of returned borrows must be
//! let go: resident memory stays flat instead of growing with the cycles.
//!
//! Run: `cargo build --release --locked --bins && cargo bench --bench agent_memory` (add
//! `-- --quick` for 1,000 cycles). Prints the borrowing agent's resident memory (VmRSS)
//! and peak (VmHWM) as the cycles go. host-local keeps no process between calls, so it
//! has no figure to stand beside this one.

mod common;

use std::time::{Duration, Instant};

use common::{Agent, Plugin};
use ipledger::api::IPPoolSpec;
use serde_json::json;

/// Foreign blocks with one free address each: every round borrows from all of them.
const LENDING_BLOCKS: usize = 16;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let cycles = match std::env::var("IPLEDGER_BENCH_CYCLES") {
        Ok(n) => n.parse().expect("IPLEDGER_BENCH_CYCLES is a number"),
        Err(_) if quick => 1_000,
        Err(_) => 10_000,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    // 32 blocks of 8 addresses; no cooldown, so a returned address can be borrowed again.
    let spec = IPPoolSpec {
        cidr: "10.90.0.0/24".into(),
        block_size: Some(29),
        gateway: Some("10.90.0.1".into()),
        reuse_cooldown_seconds: Some(0),
        ..Default::default()
    };
    let emulator = runtime.block_on(common::emulator(&[("lend", spec)], &kubeconfig));
    let lender = Agent::start("lender", &kubeconfig, dir.path());
    let borrower = Agent::start("borrower", &kubeconfig, dir.path());
    let plugin = |agent: &Agent| Plugin {
        name: "ipledger",
        binary: test_support::binary("ipledger-cni"),
        config: json!({"cniVersion": "1.1.0", "name": "lend", "type": "bridge",
                       "ipam": {"type": "ipledger", "socket": agent.socket, "pools": ["lend"]}}),
    };
    let (lender_plugin, borrower_plugin) = (plugin(&lender), plugin(&borrower));

    // The lender takes every block, then frees one address in each of 16 of them.
    let mut held = Vec::new();
    while lender_plugin.run("ADD", &format!("l{}", held.len())).1 {
        held.push(format!("l{}", held.len()));
    }
    // Blocks hold 8 addresses (6 or 7 at the pool's edges) and fill one by one: every
    // eighth attachment sits in another block.
    for id in held.iter().step_by(8).take(LENDING_BLOCKS) {
        assert!(lender_plugin.run("DEL", id).1, "lender DEL {id}");
    }
    println!(
        "lender holds {} addresses; {LENDING_BLOCKS} freed across its blocks to borrow",
        held.len() - LENDING_BLOCKS
    );

    println!("| cycles | VmRSS KiB | VmHWM KiB | s |");
    println!("|---|---|---|---|");
    let started = Instant::now();
    let mut done = 0;
    let report = |done: usize| {
        let (rss, hwm) = borrower.memory_kib();
        println!(
            "| {done} | {rss} | {hwm} | {:.0} |",
            started.elapsed().as_secs_f64()
        );
    };
    report(0);
    let mut next_report = 1_000;
    while done < cycles {
        let ids: Vec<String> = (0..LENDING_BLOCKS)
            .map(|i| format!("b{done}-{i}"))
            .collect();
        for id in &ids {
            assert!(borrower_plugin.run("ADD", id).1, "borrow {id}");
        }
        for id in &ids {
            assert!(borrower_plugin.run("DEL", id).1, "return {id}");
        }
        done += ids.len();
        if done >= next_report {
            report(done);
            next_report += 1_000;
        }
    }
    // The agent sweeps idle writers every 30 s: memory after the sweep.
    std::thread::sleep(Duration::from_secs(31));
    report(done);
    drop((lender, borrower));
    runtime.block_on(emulator.shutdown());
}
