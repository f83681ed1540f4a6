//! The allocation path end to end: real `ipledger agent` processes and the real plugin
//! binary against the API emulator (or the cluster `IPLEDGER_TEST_KUBECONFIG` names).

mod support;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use ipledger::api::{IPBlock, IPPool, IPPoolSpec};
use kube::api::{Api, ListParams, PostParams};
use kube_emulator::LostResponse;
use serde_json::Value;
use support::harness::{Harness, duplicates, held_by, pod_args, v4_pool};
use support::node::{Agent, network, plugin};

/// DESIGN.md's invariants on the pool's ledger, given the address each attachment (by
/// containerID) was last answered with: no address is held twice, every record is the
/// address its attachment was given, and every answered attachment holds exactly that one
/// (so nothing leaked: no record for an attachment that was never answered with it).
async fn assert_ledger_matches(h: &Harness, pool: &str, answers: &HashMap<String, IpAddr>) {
    let ledger = h.ledger(pool).await;
    assert!(
        duplicates(&ledger).is_empty(),
        "addresses held twice: {:?}",
        duplicates(&ledger)
    );
    for (ip, id, _) in &ledger {
        assert_eq!(
            answers.get(id),
            Some(ip),
            "{ip} is recorded for {id}, which was not answered with it (leaked)"
        );
    }
    assert_eq!(
        ledger.len(),
        answers.len(),
        "one record per answered attachment: {ledger:?}"
    );
}

/// Runs ADD for `id` until it succeeds, for up to 30 s; a failure with a code other than
/// those of `retry_on` fails the test.
async fn add_until_answered(net: &Value, id: &str, retry_on: &[u64]) -> IpAddr {
    for _ in 0..150 {
        let run = plugin("ADD", net, id, "eth0", &pod_args(id)).await;
        if run.code == 0 {
            return run.addresses()[0].addr();
        }
        assert!(
            retry_on.contains(&run.error_code()),
            "ADD {id}: {}",
            run.result
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("ADD {id} still failed after 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_is_idempotent_and_del_releases_even_twice() {
    let h = Harness::new().await;
    let pool = h.pool("idem", v4_pool("10.60.0.0/24", 28)).await;
    let mut agent = h.agent(&test_support::unique("node")).await;
    let net = network("pods", "1.0.0", &agent.socket, &[&pool]);

    let first = plugin("ADD", &net, "c1", "eth0", &pod_args("p1")).await;
    let again = plugin("ADD", &net, "c1", "eth0", &pod_args("p1")).await;
    let addresses = first.addresses();
    assert_eq!(addresses.len(), 1);
    assert_eq!(
        addresses,
        again.addresses(),
        "a repeated ADD returns the same address"
    );
    let address = addresses[0];
    assert!(
        "10.60.0.0/24"
            .parse::<ipnet::IpNet>()
            .unwrap()
            .contains(&address.addr())
    );
    assert_eq!(
        address.prefix_len(),
        24,
        "the address carries the pool's prefix length"
    );
    assert_ne!(
        address.addr(),
        "10.60.0.0".parse::<IpAddr>().unwrap(),
        "never the network address"
    );

    let ledger = h.ledger(&pool).await;
    assert_eq!(ledger.len(), 1, "one record for two ADDs: {ledger:?}");
    assert_eq!(ledger[0].0, address.addr());
    assert_eq!(
        ledger[0].2, agent.node,
        "the block is affine to the allocating node"
    );

    let check = plugin(
        "CHECK",
        &with_prev(&net, &first.result),
        "c1",
        "eth0",
        &pod_args("p1"),
    )
    .await;
    assert_eq!(
        check.code, 0,
        "CHECK of a held address: {} {}",
        check.result, check.stderr
    );

    for _ in 0..2 {
        let del = plugin("DEL", &net, "c1", "eth0", &pod_args("p1")).await;
        assert_eq!(del.code, 0, "DEL: {}", del.result);
    }
    assert!(h.ledger(&pool).await.is_empty(), "DEL released the address");
    let check = plugin(
        "CHECK",
        &with_prev(&net, &first.result),
        "c1",
        "eth0",
        &pod_args("p1"),
    )
    .await;
    assert_eq!(
        check.error_code(),
        107,
        "CHECK after DEL: the reservation is gone"
    );

    agent.stop().await;
    h.delete_pool(&pool).await;
}

fn with_prev(net: &Value, result: &Value) -> Value {
    let mut net = net.clone();
    net["prevResult"] = result.clone();
    net
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requested_unknown_and_stopped_agent_get_their_documented_codes() {
    let h = Harness::new().await;
    let pool = h.pool("req", v4_pool("10.61.0.0/24", 28)).await;
    let bin = h.dir.path().join("opt-cni-bin");
    let install = ["--install-cni-bin-dir", bin.to_str().unwrap()];
    let mut agent = Agent::start_with(
        &h.kubeconfig,
        &test_support::unique("node"),
        h.dir.path(),
        &install,
    )
    .await;
    let installed = std::fs::read(bin.join("ipledger")).expect("the agent installed the plugin");
    assert_eq!(
        installed,
        std::fs::read(test_support::binary("ipledger-cni")).unwrap(),
        "the installed plugin is ipledger-cni"
    );
    let net = network("pods", "0.4.0", &agent.socket, &[&pool]);

    let wanted = plugin(
        "ADD",
        &net,
        "c1",
        "eth0",
        &format!("{};IP=10.61.0.77", pod_args("p1")),
    )
    .await;
    assert_eq!(
        wanted.addresses()[0].addr(),
        "10.61.0.77".parse::<IpAddr>().unwrap()
    );
    assert_eq!(
        wanted.result["ips"][0]["version"], "4",
        "0.4.0 results carry the version"
    );
    for (id, ip, code, what) in [
        ("c2", "10.61.0.77", 102, "taken by c1"),
        ("c3", "10.99.0.1", 103, "outside the pool"),
        ("c4", "10.61.0.0", 104, "the network address"),
    ] {
        let args = format!("{};IP={ip}", pod_args(id));
        let refused = plugin("ADD", &net, id, "eth0", &args).await;
        assert_eq!(
            refused.error_code(),
            code,
            "requested address {what}: {}",
            refused.result
        );
        assert!(
            refused.result["msg"].as_str().unwrap().contains(ip),
            "the error names {ip}"
        );
    }

    let unknown = network("pods", "1.0.0", &agent.socket, &["no-such-pool"]);
    let refused = plugin("ADD", &unknown, "c5", "eth0", &pod_args("p5")).await;
    assert_eq!(
        refused.error_code(),
        101,
        "unknown pool: {}",
        refused.result
    );
    assert!(
        refused.result["msg"]
            .as_str()
            .unwrap()
            .contains("no-such-pool")
    );

    let held: Vec<_> = h.ledger(&pool).await.into_iter().map(|r| r.1).collect();
    assert_eq!(
        held,
        vec!["c1".to_string()],
        "refused requests leave nothing behind"
    );

    let status = plugin(
        "STATUS",
        &network("pods", "1.1.0", &agent.socket, &[&pool]),
        "",
        "",
        "",
    )
    .await;
    assert_eq!(
        status.code, 0,
        "STATUS with room: {} {}",
        status.result, status.stderr
    );

    assert!(agent.stop().await.success(), "SIGTERM is a clean exit");
    let down = plugin("ADD", &net, "c6", "eth0", &pod_args("p6")).await;
    assert_eq!(down.error_code(), 11, "agent stopped: try again later");
    let status = plugin(
        "STATUS",
        &network("pods", "1.1.0", &agent.socket, &[&pool]),
        "",
        "",
        "",
    )
    .await;
    assert_eq!(status.error_code(), 50, "STATUS with the agent down");
    h.delete_pool(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_gets_one_address_per_family_and_ipv6_48_pools_work() {
    let h = Harness::new().await;
    let v4 = h.pool("ds4", v4_pool("10.62.0.0/24", 28)).await;
    let v6 = h
        .pool(
            "ds6",
            IPPoolSpec {
                cidr: "fd00:62::/48".into(),
                ..Default::default()
            },
        )
        .await;
    let mut agent = h.agent(&test_support::unique("node")).await;
    let net = network("pods", "1.0.0", &agent.socket, &[&v4, &v6]);

    let run = plugin("ADD", &net, "c1", "eth0", &pod_args("p1")).await;
    let addresses = run.addresses();
    assert_eq!(addresses.len(), 2, "{}", run.result);
    assert!(addresses[0].addr().is_ipv4() && addresses[1].addr().is_ipv6());
    assert_eq!(addresses[1].prefix_len(), 48);
    let v6_blocks = Api::<IPBlock>::all(h.client())
        .list(&ListParams::default().labels(&format!("ipledger.io/pool={v6}")))
        .await
        .unwrap();
    assert_eq!(
        v6_blocks.items.len(),
        1,
        "a /48 pool claims one /122 block, not its 2^74"
    );
    assert_eq!(v6_blocks.items[0].spec.cidr.prefix_len(), 122);

    // Dual-stack is all or nothing: with the IPv6 pool disabled, no IPv4 address stays.
    let pools = Api::<IPPool>::all(h.client());
    let mut disabled = pools.get(&v6).await.unwrap();
    disabled.spec.disabled = true;
    pools
        .replace(&v6, &PostParams::default(), &disabled)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let refused = plugin("ADD", &net, "c2", "eth0", &pod_args("p2")).await;
    assert_eq!(refused.error_code(), 105, "{}", refused.result);
    let v4_held: Vec<_> = h.ledger(&v4).await.into_iter().map(|r| r.1).collect();
    assert_eq!(
        v4_held,
        vec!["c1".to_string()],
        "the IPv4 address of the failed ADD was released"
    );

    agent.stop().await;
    h.delete_pool(&v4).await;
    h.delete_pool(&v6).await;
}

/// 4 agents × 50 concurrent ADDs on a pool of 62 addresses in /29 blocks: block claims,
/// borrowing and exhaustion all happen. No address may be held twice, every failure must be
/// the exhaustion error, and after the DELs nothing may be held.
/// Claim ahead: once the node's own blocks run below half a block free, the next block
/// is claimed in the background, so only the very first ADD into a fresh pool waits for
/// a claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_are_claimed_ahead_so_no_later_add_waits_for_a_claim() {
    let h = Harness::new().await;
    let pool = h.pool("ahead", v4_pool("10.64.0.0/22", 28)).await;
    let agent = h.agent(&test_support::unique("ahead-node")).await;
    let net = network("pods", "1.0.0", &agent.socket, &[&pool]);
    let mut seen = HashSet::new();
    for i in 0..60 {
        let id = format!("ahead-{i}");
        let ip = add_until_answered(&net, &id, &[]).await;
        assert!(seen.insert(ip), "{ip} handed out twice");
        // A pod start takes longer than a claim: the claim ahead has the time it has on
        // a real node.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waits = agent
        .metric(&format!(
            r#"ipledger_agent_claim_waits_total{{pool="{pool}"}}"#
        ))
        .await;
    let ahead = agent
        .metric(&format!(
            r#"ipledger_agent_claims_ahead_total{{pool="{pool}"}}"#
        ))
        .await;
    assert_eq!(waits, 1.0, "only the first ADD waits for a claim");
    // 60 addresses fill 3 blocks of 16 and part of a fourth, and the reserve of 8 free
    // wants a fifth once the fourth runs low.
    assert!(
        (3.0..=4.0).contains(&ahead),
        "blocks claimed ahead: {ahead}"
    );
    let blocks = Api::<IPBlock>::all(h.client())
        .list(&ListParams::default().labels(&format!("ipledger.io/pool={pool}")))
        .await
        .unwrap();
    assert_eq!(blocks.items.len() as f64, ahead + 1.0);
    h.delete_pool(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_agents_fifty_concurrent_adds_never_duplicate() {
    let h = Harness::new().await;
    let pool = h.pool("conc", v4_pool("10.63.0.0/26", 29)).await;
    let mut agents = Vec::new();
    for i in 0..4 {
        agents.push(h.agent(&test_support::unique(&format!("node{i}"))).await);
    }
    let mut runs = Vec::new();
    for (n, agent) in agents.iter().enumerate() {
        let net = network("pods", "1.0.0", &agent.socket, &[&pool]);
        for i in 0..50 {
            let net = net.clone();
            runs.push(tokio::spawn(async move {
                let id = format!("n{n}c{i}");
                (
                    id.clone(),
                    plugin("ADD", &net, &id, "eth0", &pod_args(&id)).await,
                )
            }));
        }
    }
    let mut granted: HashMap<IpAddr, String> = HashMap::new();
    let mut failures = 0;
    for run in runs {
        let (id, run) = run.await.unwrap();
        if run.code == 0 {
            let ip = run.addresses()[0].addr();
            assert!(
                granted.insert(ip, id.clone()).is_none(),
                "{ip} granted twice"
            );
        } else {
            failures += 1;
            assert_eq!(
                run.error_code(),
                100,
                "every failure is exhaustion: {}",
                run.result
            );
            assert!(
                run.result["msg"].as_str().unwrap().contains(&pool),
                "the error names the pool: {}",
                run.result
            );
        }
    }
    let ledger = h.ledger(&pool).await;
    assert!(
        duplicates(&ledger).is_empty(),
        "duplicates in the ledger: {:?}",
        duplicates(&ledger)
    );
    assert_eq!(ledger.len(), granted.len(), "ledger and answers agree");
    assert_eq!(
        granted.len(),
        62,
        "a /26 has 62 usable addresses and all were handed out ({failures} failed)"
    );
    // One agent writes its own blocks alone, so without retries an ADD costs at most one
    // replace; batching makes it fewer. Conflicts come only from borrowers.
    let mut replaces = 0.0;
    let mut conflicts = 0.0;
    for agent in &agents {
        replaces += agent
            .metric(r#"ipledger_agent_api_writes_total{operation="replace"}"#)
            .await;
        conflicts += agent.metric("ipledger_agent_cas_conflicts_total").await;
    }
    assert!(
        replaces <= 62.0 + conflicts,
        "{replaces} replaces for 62 allocations and {conflicts} conflicts"
    );
    eprintln!("group commit: {replaces} replaces for 62 allocations");
    // Diagnostics only: how the race played out does not change what must hold.
    let borrowed = ledger
        .iter()
        .filter(|(_, id, block_node)| {
            let n: usize = id[1..id.find('c').unwrap()].parse().unwrap();
            agents[n].node != *block_node
        })
        .count();
    eprintln!(
        "addresses held in another node's block: {borrowed} of {}",
        ledger.len()
    );

    for (n, agent) in agents.iter().enumerate() {
        let net = network("pods", "1.0.0", &agent.socket, &[&pool]);
        for i in 0..50 {
            let id = format!("n{n}c{i}");
            let del = plugin("DEL", &net, &id, "eth0", &pod_args(&id)).await;
            assert_eq!(del.code, 0, "DEL {id}: {}", del.result);
        }
    }
    assert!(
        h.ledger(&pool).await.is_empty(),
        "after the DELs nothing is held"
    );
    for agent in &mut agents {
        agent.stop().await;
    }
    h.delete_pool(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_conflicts_and_a_killed_agent_never_duplicate() {
    let h = Harness::new().await;
    let Some(emulator) = h.cluster.emulator.as_ref() else {
        test_support::skip("fault injection needs the emulator (IPLEDGER_TEST_KUBECONFIG is set)");
        return;
    };
    let pool = h.pool("fault", v4_pool("10.64.0.0/24", 27)).await;
    let mut agent = h.agent(&test_support::unique("node")).await;
    let net = network("pods", "1.0.0", &agent.socket, &[&pool]);

    // Every fifth write to IPBlocks fails with 409 (injected in bursts).
    let mut answers = HashMap::new();
    for i in 0..40 {
        if i % 5 == 0 {
            emulator.faults().fail_next_writes("ipblocks", 1, 409);
        }
        let id = format!("c{i}");
        let run = plugin("ADD", &net, &id, "eth0", &pod_args(&id)).await;
        answers.insert(id, run.addresses()[0].addr());
    }
    let distinct: HashSet<_> = answers.values().collect();
    assert_eq!(
        distinct.len(),
        40,
        "40 ADDs, 40 distinct addresses despite conflicts"
    );

    // Kill the agent in the middle of a burst of ADDs, restart it, and retry them all.
    let burst: Vec<_> = (40..70)
        .map(|i| {
            let net = net.clone();
            tokio::spawn(async move {
                let id = format!("c{i}");
                plugin("ADD", &net, &id, "eth0", &pod_args(&id)).await
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    agent.kill().await;
    for run in burst {
        let _ = run.await;
    }
    agent.restart().await;
    for i in 0..70 {
        let id = format!("c{i}");
        let run = plugin("ADD", &net, &id, "eth0", &pod_args(&id)).await;
        let ip = run.addresses()[0].addr();
        if let Some(before) = answers.get(&id) {
            assert_eq!(
                *before, ip,
                "{id}: a retried ADD returns the address it already holds"
            );
        }
        answers.insert(id, ip);
    }
    let ledger = h.ledger(&pool).await;
    assert!(
        duplicates(&ledger).is_empty(),
        "duplicates: {:?}",
        duplicates(&ledger)
    );
    let holders: HashSet<_> = ledger.iter().map(|r| r.1.clone()).collect();
    assert_eq!(
        ledger.len(),
        70,
        "one address per attachment, none leaked by the kill: {ledger:?}"
    );
    assert_eq!(holders.len(), 70);

    agent.stop().await;
    h.delete_pool(&pool).await;
}

/// Invariant 9: an IPBlock write the API server refuses for good (403 from RBAC, 422
/// Invalid) is answered with code 111 naming the API's answer, not "try again" (11), both
/// when claiming a block (create) and when allocating in a held one (replace); the next
/// ADD, with the refusal gone, succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_api_refusals_are_not_try_again() {
    let h = Harness::new().await;
    let Some(emulator) = h.cluster.emulator.as_ref() else {
        test_support::skip("fault injection needs the emulator (IPLEDGER_TEST_KUBECONFIG is set)");
        return;
    };
    let pool = h.pool("refused", v4_pool("10.73.0.0/24", 27)).await;
    let agent = h.agent(&test_support::unique("node")).await;
    let net = network("pods", "1.0.0", &agent.socket, &[&pool]);

    // The claim of the first block is a create.
    emulator.faults().fail_next_writes("ipblocks", 1, 403);
    let run = plugin("ADD", &net, "c0", "eth0", &pod_args("c0")).await;
    assert_eq!(run.error_code(), 111, "{}", run.result);
    let msg = run.result["msg"].as_str().unwrap();
    assert!(msg.contains("403") && msg.contains("Forbidden"), "{msg}");
    assert!(msg.contains("is forbidden: User"), "{msg}");
    plugin("ADD", &net, "c0", "eth0", &pod_args("c0"))
        .await
        .addresses();

    // An allocation in the block held now is a replace, through the block's writer.
    emulator.faults().fail_next_writes("ipblocks", 1, 422);
    let run = plugin("ADD", &net, "c1", "eth0", &pod_args("c1")).await;
    assert_eq!(run.error_code(), 111, "{}", run.result);
    let msg = run.result["msg"].as_str().unwrap();
    assert!(msg.contains("422") && msg.contains("Invalid"), "{msg}");
    assert!(msg.contains("is invalid: injected fault"), "{msg}");
    plugin("ADD", &net, "c1", "eth0", &pod_args("c1"))
        .await
        .addresses();
    assert_eq!(
        agent
            .metric(r#"ipledger_agent_failures_total{reason="api_refused"}"#)
            .await,
        2.0
    );

    h.delete_pool(&pool).await;
}

/// IPBlock writes that land but whose answer is lost — the connection drops, a 500, or a
/// 504 that kube-rs repeats into a 409 — on block claims, single allocations, group commits
/// and releases. A failed ADD is "try again" (11); repeated, every ADD returns the address
/// its attachment holds; a DEL after a failed ADD (what runtimes do) leaves nothing; and
/// the ledger holds exactly the addresses answered, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_ipblock_write_answers_never_duplicate_or_leak() {
    let h = Harness::new().await;
    let Some(emulator) = h.cluster.emulator.as_ref() else {
        test_support::skip("fault injection needs the emulator (IPLEDGER_TEST_KUBECONFIG is set)");
        return;
    };
    let faults = emulator.faults();
    let pool = h.pool("lost", v4_pool("10.69.0.0/24", 28)).await;
    let mut agent = h.agent(&test_support::unique("node")).await;
    let net = network("pods", "1.0.0", &agent.socket, &[&pool]);
    let modes = [
        LostResponse::Reset,
        LostResponse::Status(500),
        LostResponse::Status(504),
    ];
    let ids = |prefix: &'static str, n: usize| (0..n).map(move |i| format!("{prefix}{i}"));

    // One by one, every third write loses its answer; the very first write is the claim
    // of the node's first block, later ones claim blocks as /28s fill up.
    let mut answers = HashMap::new();
    let mut tried_again = 0;
    for (i, id) in ids("s", 36).enumerate() {
        if i % 3 == 0 {
            faults.lose_next_write_responses("ipblocks", 1, modes[(i / 3) % 3]);
        }
        let run = plugin("ADD", &net, &id, "eth0", &pod_args(&id)).await;
        if run.code == 0 {
            answers.insert(id, run.addresses()[0].addr());
        } else {
            assert_eq!(
                run.error_code(),
                11,
                "a lost answer is 'try again': {}",
                run.result
            );
            tried_again += 1;
        }
    }
    assert!(tried_again > 0, "no ADD saw a lost answer");
    eprintln!("{tried_again} of 36 ADDs lost their answer");

    // Fifty concurrent ADDs meet in group commits; the first two commits lose their answer.
    faults.lose_next_write_responses("ipblocks", 1, LostResponse::Reset);
    faults.lose_next_write_responses("ipblocks", 1, LostResponse::Status(500));
    let burst: Vec<_> = ids("g", 50)
        .map(|id| {
            let net = net.clone();
            tokio::spawn(async move {
                let run = plugin("ADD", &net, &id, "eth0", &pod_args(&id)).await;
                (id, run)
            })
        })
        .collect();
    for run in burst {
        let (id, run) = run.await.unwrap();
        if run.code == 0 {
            answers.insert(id, run.addresses()[0].addr());
        } else {
            assert_eq!(run.error_code(), 11, "{id}: {}", run.result);
        }
    }

    // The runtime repeats what failed (and kubelet may repeat what did not).
    for id in ids("s", 36).chain(ids("g", 50)) {
        let ip = add_until_answered(&net, &id, &[11]).await;
        if let Some(before) = answers.get(&id) {
            assert_eq!(*before, ip, "{id}: a repeated ADD returns the same address");
        }
        answers.insert(id, ip);
    }
    assert_ledger_matches(&h, &pool, &answers).await;

    // A runtime whose ADD failed calls DEL for it: what landed is released.
    faults.lose_next_write_responses("ipblocks", 1, LostResponse::Reset);
    let failed = plugin("ADD", &net, "d0", "eth0", &pod_args("d0")).await;
    assert_eq!(failed.error_code(), 11, "{}", failed.result);
    let del = plugin("DEL", &net, "d0", "eth0", &pod_args("d0")).await;
    assert_eq!(del.code, 0, "DEL after a failed ADD: {}", del.result);
    assert_ledger_matches(&h, &pool, &answers).await;

    // Releases whose answer is lost: the DEL is "try again" or done; repeated, it is done.
    for (mode, id) in modes.iter().zip(ids("s", 3)) {
        faults.lose_next_write_responses("ipblocks", 1, *mode);
        let del = plugin("DEL", &net, &id, "eth0", &pod_args(&id)).await;
        assert!(
            del.code == 0 || del.error_code() == 11,
            "DEL {id} with a lost answer ({mode:?}): {}",
            del.result
        );
        let again = plugin("DEL", &net, &id, "eth0", &pod_args(&id)).await;
        assert_eq!(again.code, 0, "repeated DEL {id}: {}", again.result);
        answers.remove(&id);
    }
    assert_ledger_matches(&h, &pool, &answers).await;

    agent.stop().await;
    h.delete_pool(&pool).await;
}

/// Two agents allocating concurrently while every API answer is slowed down, watches are
/// dropped and the history is compacted under them (their watches get 410 Gone and
/// re-list after a backoff): no ADD fails, no address is handed out twice, every ADD
/// repeated afterwards returns its address, and the caches recover — a pool created
/// afterwards is usable and each agent's cached block count matches the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answers_dropped_watches_and_compaction_never_duplicate() {
    let h = Harness::new().await;
    let Some(emulator) = h.cluster.emulator.as_ref() else {
        test_support::skip("fault injection needs the emulator (IPLEDGER_TEST_KUBECONFIG is set)");
        return;
    };
    let faults = emulator.faults();
    let pool = h.pool("watch", v4_pool("10.70.0.0/24", 28)).await;
    let mut agents = Vec::new();
    for i in 0..2 {
        agents.push(h.agent(&test_support::unique(&format!("node{i}"))).await);
    }
    let nets: Vec<Value> = agents
        .iter()
        .map(|a| network("pods", "1.0.0", &a.socket, &[&pool]))
        .collect();

    // 2 × 30 ADDs spread over ~1.5 s, with the faults coming and going among them.
    let mut runs = Vec::new();
    for (n, net) in nets.iter().enumerate() {
        for i in 0..30u64 {
            let net = net.clone();
            runs.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50 * i)).await;
                let id = format!("n{n}c{i}");
                let run = plugin("ADD", &net, &id, "eth0", &pod_args(&id)).await;
                (id, run)
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    faults.delay_responses(Duration::from_millis(40));
    tokio::time::sleep(Duration::from_millis(200)).await;
    faults.drop_watches();
    tokio::time::sleep(Duration::from_millis(200)).await;
    faults.compact();
    faults.drop_watches();
    tokio::time::sleep(Duration::from_millis(300)).await;
    faults.delay_responses(Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(200)).await;
    faults.compact();
    faults.drop_watches();

    let mut answers = HashMap::new();
    let mut granted: HashMap<IpAddr, String> = HashMap::new();
    for run in runs {
        let (id, run) = run.await.unwrap();
        let ip = run.addresses()[0].addr();
        if let Some(other) = granted.insert(ip, id.clone()) {
            panic!("{ip} granted to {other} and {id}");
        }
        answers.insert(id, ip);
    }
    for (n, net) in nets.iter().enumerate() {
        for i in 0..30 {
            let id = format!("n{n}c{i}");
            let run = plugin("ADD", net, &id, "eth0", &pod_args(&id)).await;
            assert_eq!(
                run.addresses()[0].addr(),
                answers[&id],
                "{id}: a repeated ADD returns the same address"
            );
        }
    }
    assert_ledger_matches(&h, &pool, &answers).await;

    // The pool watch recovered: a pool created now becomes known to both agents. (Until
    // an agent's re-listing watch shows it, the agent answers 11, never 101 "does not
    // exist".)
    let later = h.pool("later", v4_pool("10.70.1.0/24", 28)).await;
    for (n, agent) in agents.iter().enumerate() {
        let net = network("pods", "1.0.0", &agent.socket, &[&later]);
        let ip = add_until_answered(&net, &format!("later{n}"), &[11]).await;
        assert!(
            "10.70.1.0/24"
                .parse::<ipnet::IpNet>()
                .unwrap()
                .contains(&ip)
        );
    }
    // The block watch recovered: each agent's cache holds the blocks the API has.
    let blocks = Api::<IPBlock>::all(h.client())
        .list(&ListParams::default().labels(&format!("ipledger.io/pool={pool}")))
        .await
        .unwrap();
    for agent in &agents {
        let held = blocks.iter().filter(|b| b.spec.node == agent.node).count() as f64;
        let sample = format!(r#"ipledger_agent_blocks_held{{pool="{pool}"}}"#);
        let mut cached = 0.0;
        for _ in 0..60 {
            cached = agent.metric(&sample).await;
            if cached == held {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(
            cached, held,
            "{}: blocks in its cache vs the API",
            agent.node
        );
    }

    for (n, net) in nets.iter().enumerate() {
        for i in 0..30 {
            let id = format!("n{n}c{i}");
            let del = plugin("DEL", net, &id, "eth0", &pod_args(&id)).await;
            assert_eq!(del.code, 0, "DEL {id}: {}", del.result);
        }
    }
    assert!(
        h.ledger(&pool).await.is_empty(),
        "after the DELs nothing is held"
    );
    for agent in &mut agents {
        agent.stop().await;
    }
    h.delete_pool(&pool).await;
    h.delete_pool(&later).await;
}

/// An ADD whose IPBlock write landed but whose answer was lost, repeated while the
/// agent's watch cache lags behind the ledger: the repeat must return the address that
/// landed, not allocate a second one elsewhere (which would leave the attachment holding
/// two addresses, one of them never answered).
///
/// The node's first block is full in the (lagging) cache; a DEL frees one address of it,
/// which the block's writer knows; the next ADD takes that address and loses its answer.
/// The writer then forgets its copy, so the repeated ADD goes by the cache: the first
/// block looks full and without the attachment, and the second block gets asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_repeated_while_the_watch_lags_returns_the_address_that_landed() {
    let h = Harness::new().await;
    let Some(emulator) = h.cluster.emulator.as_ref() else {
        test_support::skip("fault injection needs the emulator (IPLEDGER_TEST_KUBECONFIG is set)");
        return;
    };
    let faults = emulator.faults();
    let pool = h.pool("lag", v4_pool("10.71.0.0/26", 28)).await;
    let mut agent = h.agent(&test_support::unique("node")).await;
    let net = network("pods", "1.0.0", &agent.socket, &[&pool]);
    let block_of = |ip: IpAddr| ipnet::IpNet::new(ip, 28).unwrap().trunc();

    // Fill the node's first block and put one address in a second one.
    let mut answers = HashMap::new();
    let mut first = None;
    for i in 0..20 {
        let id = format!("f{i}");
        let ip = plugin("ADD", &net, &id, "eth0", &pod_args(&id))
            .await
            .addresses()[0]
            .addr();
        answers.insert(id, ip);
        match first {
            None => first = Some(block_of(ip)),
            Some(block) if block != block_of(ip) => break,
            Some(_) => {}
        }
    }
    let first = first.unwrap();
    assert!(
        answers.values().any(|ip| !first.contains(ip)),
        "a second block was claimed"
    );
    // The cache catches up: the first block full.
    tokio::time::sleep(Duration::from_millis(500)).await;

    h.break_watches().await;
    let lagging = std::time::Instant::now();
    let freed = answers
        .iter()
        .find(|(_, ip)| first.contains(*ip))
        .map(|(id, _)| id.clone())
        .unwrap();
    let del = plugin("DEL", &net, &freed, "eth0", &pod_args(&freed)).await;
    assert_eq!(del.code, 0, "DEL {freed}: {}", del.result);
    answers.remove(&freed);
    faults.lose_next_write_responses("ipblocks", 1, LostResponse::Reset);
    let lost = plugin("ADD", &net, "x", "eth0", &pod_args("x")).await;
    assert_eq!(lost.error_code(), 11, "{}", lost.result);
    let landed = held_by(&h, &pool, "x").await;
    assert_eq!(landed.len(), 1, "the lost write landed: {landed:?}");
    let again = plugin("ADD", &net, "x", "eth0", &pod_args("x")).await;
    let again = again.addresses()[0].addr();
    eprintln!(
        "repeated ADD {:?} after the watches broke",
        lagging.elapsed()
    );
    let held = held_by(&h, &pool, "x").await;
    assert_eq!(
        held,
        vec![again],
        "x holds {held:?}: the lost write landed {landed:?}, the repeated ADD answered {again}"
    );
    answers.insert("x".to_string(), again);
    assert_ledger_matches(&h, &pool, &answers).await;

    agent.stop().await;
    h.delete_pool(&pool).await;
}

/// A pool that exists, named in the network configuration while the agent's pool watch
/// lags (here: re-lists after a 410), is not answered "does not exist" (101): the agent
/// does not know it yet, which is "try again" (11) or a read of the pool, never a
/// statement about the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_the_lagging_watch_has_not_shown_yet_is_not_unknown() {
    let h = Harness::new().await;
    if !h.cluster.is_emulator() {
        test_support::skip("fault injection needs the emulator (IPLEDGER_TEST_KUBECONFIG is set)");
        return;
    }
    let mut agent = h.agent(&test_support::unique("node")).await;
    h.break_watches().await;
    let pool = test_support::unique("new");
    Api::<IPPool>::all(h.client())
        .create(
            &PostParams::default(),
            &IPPool::new(&pool, v4_pool("10.72.0.0/24", 28)),
        )
        .await
        .unwrap();
    let net = network("pods", "1.0.0", &agent.socket, &[&pool]);
    let run = plugin("ADD", &net, "c1", "eth0", &pod_args("c1")).await;
    assert!(
        run.code == 0 || run.error_code() == 11,
        "ADD naming the existing pool {pool}: {}",
        run.result
    );

    agent.stop().await;
    h.delete_pool(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_releases_what_the_runtime_no_longer_lists() {
    let h = Harness::new().await;
    let pool = h.pool("gc", v4_pool("10.65.0.0/24", 28)).await;
    let mut agent = h
        .agent_without_gc_grace(&test_support::unique("node"))
        .await;
    let net = network("gcnet", "1.1.0", &agent.socket, &[&pool]);
    for id in ["keep", "drop1", "drop2"] {
        plugin("ADD", &net, id, "eth0", &pod_args(id))
            .await
            .addresses();
    }
    let other = network("othernet", "1.1.0", &agent.socket, &[&pool]);
    plugin("ADD", &other, "elsewhere", "eth0", &pod_args("elsewhere"))
        .await
        .addresses();

    let mut gc = net.clone();
    gc["cni.dev/valid-attachments"] =
        serde_json::json!([{"containerID": "keep", "ifname": "eth0"}]);
    let run = plugin("GC", &gc, "", "", "").await;
    assert_eq!(run.code, 0, "GC: {} {}", run.result, run.stderr);

    let mut held: Vec<_> = h.ledger(&pool).await.into_iter().map(|r| r.1).collect();
    held.sort();
    assert_eq!(
        held,
        vec!["elsewhere".to_string(), "keep".to_string()],
        "only gcnet's unlisted attachments go"
    );
    agent.stop().await;
    h.delete_pool(&pool).await;
}

/// GC racing ADD: the runtime takes its list of attachments, an ADD commits, then the GC
/// built on the older list arrives. The new allocation survives the GC; once the grace
/// has passed, a GC that still does not list it releases it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_spares_an_add_that_committed_after_the_runtime_took_its_list() {
    let h = Harness::new().await;
    let pool = h.pool("gcrace", v4_pool("10.67.0.0/24", 28)).await;
    let node = test_support::unique("node");
    let mut agent = Agent::start_with(
        &h.kubeconfig,
        &node,
        h.dir.path(),
        &["--cni-gc-grace", "3s"],
    )
    .await;
    let net = network("racenet", "1.1.0", &agent.socket, &[&pool]);
    // The runtime's list, taken now: it holds no attachment yet.
    let mut gc = net.clone();
    gc["cni.dev/valid-attachments"] = serde_json::json!([]);
    // The ADD commits after the list was taken.
    let ip = plugin("ADD", &net, "young", "eth0", &pod_args("young"))
        .await
        .addresses()[0]
        .addr();
    // The GC built on that list arrives.
    let run = plugin("GC", &gc, "", "", "").await;
    assert_eq!(run.code, 0, "GC: {} {}", run.result, run.stderr);
    assert_eq!(
        held_by(&h, &pool, "young").await,
        vec![ip],
        "an allocation younger than the grace survives a GC that does not list it"
    );

    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let run = plugin("GC", &gc, "", "", "").await;
    assert_eq!(run.code, 0, "GC: {} {}", run.result, run.stderr);
    assert!(
        held_by(&h, &pool, "young").await.is_empty(),
        "past the grace, an attachment the runtime does not list is released"
    );
    agent.stop().await;
    h.delete_pool(&pool).await;
}

/// A node with no block of its own and no free block left borrows from another node's
/// block; its DEL finds the borrowed address again, and the lending node's GC leaves it
/// alone (only the borrower's runtime knows whether that pod lives). With
/// `strictAffinity` the same request is refused as exhaustion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn borrowing_from_a_full_pool_and_strict_affinity() {
    let h = Harness::new().await;
    // A /28 in /29 blocks: two blocks, 14 usable addresses.
    let pool = h.pool("borrow", v4_pool("10.66.0.0/28", 29)).await;
    let mut lender = h
        .agent_without_gc_grace(&test_support::unique("lender"))
        .await;
    let mut borrower = h.agent(&test_support::unique("borrower")).await;
    let lender_net = network("pods", "1.1.0", &lender.socket, &[&pool]);
    for i in 0..9 {
        let id = format!("l{i}");
        plugin("ADD", &lender_net, &id, "eth0", &pod_args(&id))
            .await
            .addresses();
    }
    let blocks: HashSet<_> = h.ledger(&pool).await.into_iter().map(|r| r.2).collect();
    assert_eq!(
        blocks,
        HashSet::from([lender.node.clone()]),
        "the lender holds both blocks"
    );

    let borrower_net = network("pods", "1.1.0", &borrower.socket, &[&pool]);
    let run = plugin("ADD", &borrower_net, "b0", "eth0", &pod_args("b0")).await;
    let borrowed = run.addresses()[0].addr();
    let record = Api::<IPBlock>::all(h.client())
        .list(&ListParams::default().labels(&format!("ipledger.io/pool={pool}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .flat_map(|b| b.spec.allocations)
        .find(|r| r.address == borrowed)
        .expect("the borrowed address is in the ledger");
    assert_eq!(
        record.node.as_deref(),
        Some(borrower.node.as_str()),
        "the record names the borrowing node"
    );

    let mut gc = lender_net.clone();
    gc["cni.dev/valid-attachments"] = serde_json::json!([]);
    assert_eq!(plugin("GC", &gc, "", "", "").await.code, 0);
    let held: Vec<_> = h.ledger(&pool).await.into_iter().map(|r| r.1).collect();
    assert_eq!(
        held,
        vec!["b0".to_string()],
        "the lender's GC released its own nine, not the borrowed one"
    );

    let del = plugin("DEL", &borrower_net, "b0", "eth0", &pod_args("b0")).await;
    assert_eq!(del.code, 0, "{}", del.result);
    assert!(
        h.ledger(&pool).await.is_empty(),
        "the borrower's DEL found its borrowed address"
    );

    // With strictAffinity the borrower is refused although the lender's blocks have room.
    let pools = Api::<IPPool>::all(h.client());
    let mut strict = pools.get(&pool).await.unwrap();
    strict.spec.strict_affinity = true;
    pools
        .replace(&pool, &PostParams::default(), &strict)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let refused = plugin("ADD", &borrower_net, "b1", "eth0", &pod_args("b1")).await;
    assert_eq!(refused.error_code(), 100, "{}", refused.result);
    let msg = refused.result["msg"].as_str().unwrap();
    assert!(
        msg.contains(&pool) && msg.contains(&borrower.node) && msg.contains("strictAffinity"),
        "the refusal names the pool, the node and why: {msg}"
    );
    let mut status = borrower_net.clone();
    status["cniVersion"] = "1.1.0".into();
    let cannot = plugin("STATUS", &status, "", "", "").await;
    assert_eq!(
        cannot.error_code(),
        50,
        "STATUS of the borrower: {}",
        cannot.result
    );
    let mut lender_status = lender_net.clone();
    lender_status["cniVersion"] = "1.1.0".into();
    assert_eq!(
        plugin("STATUS", &lender_status, "", "", "").await.code,
        0,
        "the lender has room"
    );

    // Full: every address in use, and the error says so with the pool's capacity.
    for i in 0..14 {
        let id = format!("m{i}");
        plugin("ADD", &lender_net, &id, "eth0", &pod_args(&id))
            .await
            .addresses();
    }
    let full = plugin("ADD", &lender_net, "m14", "eth0", &pod_args("m14")).await;
    assert_eq!(full.error_code(), 100, "{}", full.result);
    let msg = full.result["msg"].as_str().unwrap();
    assert!(
        msg.contains(&pool) && msg.contains("all 14 of its 14"),
        "exhaustion names pool and capacity: {msg}"
    );
    let full = plugin("STATUS", &lender_status, "", "", "").await;
    assert_eq!(
        full.error_code(),
        50,
        "STATUS of a full pool: {}",
        full.result
    );
    assert!(
        full.result["msg"].as_str().unwrap().contains(&pool),
        "{}",
        full.result
    );

    lender.stop().await;
    borrower.stop().await;
    h.delete_pool(&pool).await;
}

/// The real Debian `bridge` plugin delegates IPAM to ipledger inside network namespaces:
/// the address shows up on the pod's interface, DEL twice succeeds, and with the agent
/// stopped bridge passes ipledger's code 11 through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_bridge_plugin_allocates_through_the_agent() {
    use test_support::netns::{NetNs, REFERENCE_PLUGINS, reference_plugin_missing};
    if let Some(why) = reference_plugin_missing("bridge") {
        test_support::skip(&why);
        return;
    }
    let h = Harness::new().await;
    let pool = h
        .pool(
            "bridge",
            IPPoolSpec {
                gateway: Some("10.67.0.1".into()),
                ..v4_pool("10.67.0.0/24", 26)
            },
        )
        .await;
    let mut agent = h.agent(&test_support::unique("node")).await;
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        test_support::binary("ipledger-cni"),
        bin.path().join("ipledger"),
    )
    .unwrap();
    let cni_path = format!("{}:{REFERENCE_PLUGINS}", bin.path().display());
    let host = NetNs::new("node");
    let pod = NetNs::new("pod");
    let mut config = network("e2e", "1.0.0", &agent.socket, &[&pool]);
    config["bridge"] = "ipl0".into();
    config["isGateway"] = true.into();
    // bridge runs in a namespace standing in for the node: nothing touches the host.
    let argv: Vec<String> = [
        "ip",
        "netns",
        "exec",
        &host.0,
        &format!("{REFERENCE_PLUGINS}/bridge"),
    ]
    .map(String::from)
    .to_vec();
    let bridge = |command: &'static str, config: Value| {
        let (argv, cni_path, pod_path) = (argv.clone(), cni_path.clone(), pod.path());
        async move {
            support::node::run_command(
                &argv,
                command,
                &config,
                "e2e-c1",
                "eth0",
                &pod_args("e2e"),
                &pod_path,
                &cni_path,
            )
            .await
        }
    };

    let add = bridge("ADD", config.clone()).await;
    assert_eq!(add.code, 0, "bridge ADD: {} {}", add.result, add.stderr);
    let address = add.result["ips"][0]["address"]
        .as_str()
        .expect("an address")
        .to_string();
    assert!(
        address.starts_with("10.67.0.") && address.ends_with("/24"),
        "{address}"
    );
    assert!(
        pod.addresses("eth0").contains(&format!("inet {address}")),
        "pod eth0: {}",
        pod.addresses("eth0")
    );
    assert_eq!(add.result["ips"][0]["gateway"], "10.67.0.1");
    assert_eq!(h.ledger(&pool).await.len(), 1);

    for _ in 0..2 {
        let del = bridge("DEL", config.clone()).await;
        assert_eq!(del.code, 0, "bridge DEL: {} {}", del.result, del.stderr);
    }
    assert!(
        h.ledger(&pool).await.is_empty(),
        "DEL through bridge released the address"
    );

    agent.stop().await;
    let pod2 = NetNs::new("pod");
    let down = support::node::run_command(
        &argv,
        "ADD",
        &config,
        "e2e-c2",
        "eth0",
        &pod_args("e2e2"),
        &pod2.path(),
        &cni_path,
    )
    .await;
    assert_eq!(
        down.error_code(),
        11,
        "bridge passes ipledger's try-again-later through: {}",
        down.result
    );
    h.delete_pool(&pool).await;
}

/// The conflist at `path` once the agent has written it: it writes the file right after
/// binding the socket, which a connect (and `Agent::start`) sees already; the moment in
/// between is allowed for, 2 s at most.
async fn written_conflist(path: &std::path::Path) -> Vec<u8> {
    for _ in 0..200 {
        if let Ok(text) = std::fs::read(path) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{} is not written 2 s after the socket is up",
        path.display()
    );
}

/// `--write-conflist`: the network configuration list is there once the socket accepts
/// connections (the harness waits for a connect), names the agent's socket (not the
/// default one), and leaves no temporary file beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conflist_is_written_once_the_socket_listens() {
    let h = Harness::new().await;
    let net_d = h.dir.path().join("net.d");
    let path = net_d.join("10-ipledger.conflist");
    let mut agent = Agent::start_with(
        &h.kubeconfig,
        &test_support::unique("node"),
        h.dir.path(),
        &[
            "--write-conflist",
            path.to_str().unwrap(),
            "--conflist-bridge",
            "br-test",
            "--conflist-network",
            "test-net",
        ],
    )
    .await;

    let text = written_conflist(&path).await;
    let config: Value = serde_json::from_slice(&text).expect("valid JSON");
    assert_eq!(config["name"], "test-net");
    assert_eq!(config["plugins"][0]["type"], "bridge");
    assert_eq!(config["plugins"][0]["bridge"], "br-test");
    assert_eq!(
        config["plugins"][0]["ipam"]["socket"],
        agent.socket.to_str().unwrap()
    );
    assert_eq!(config["plugins"][1]["type"], "portmap");
    let files: Vec<_> = std::fs::read_dir(&net_d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        files,
        vec![std::ffi::OsString::from("10-ipledger.conflist")]
    );
    assert!(agent.stop().await.success());
    assert!(
        path.exists(),
        "the config stays when the agent stops: pods wait for it (code 11), not for a network"
    );
}

/// The conflist the agent writes is one the real Debian `bridge` plugin accepts: its
/// first plugin, given `name` and `cniVersion` as a runtime gives them from the list,
/// attaches a pod in a network namespace with ipledger's address and default route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_bridge_plugin_accepts_the_written_conflist() {
    use test_support::netns::{NetNs, REFERENCE_PLUGINS, reference_plugin_missing};
    if let Some(why) = reference_plugin_missing("bridge") {
        test_support::skip(&why);
        return;
    }
    let h = Harness::new().await;
    let pool = h
        .pool(
            "conflist",
            IPPoolSpec {
                gateway: Some("10.69.0.1".into()),
                ..v4_pool("10.69.0.0/24", 26)
            },
        )
        .await;
    let path = h.dir.path().join("10-ipledger.conflist");
    let _agent = Agent::start_with(
        &h.kubeconfig,
        &test_support::unique("node"),
        h.dir.path(),
        &[
            "--write-conflist",
            path.to_str().unwrap(),
            "--conflist-bridge",
            "ipl1",
        ],
    )
    .await;
    let list: Value = serde_json::from_slice(&written_conflist(&path).await).unwrap();
    let mut config = list["plugins"][0].clone();
    config["name"] = list["name"].clone();
    config["cniVersion"] = list["cniVersion"].clone();
    // The written config takes the default pools; this test's pool is named instead,
    // so that it holds against a shared real cluster whose default pools are not ours.
    config["ipam"]["pools"] = serde_json::json!([pool]);

    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        test_support::binary("ipledger-cni"),
        bin.path().join("ipledger"),
    )
    .unwrap();
    let cni_path = format!("{}:{REFERENCE_PLUGINS}", bin.path().display());
    let host = NetNs::new("node");
    let pod = NetNs::new("pod");
    // `ipMasq` makes bridge run iptables from PATH, and `run_command` clears the
    // environment: a runtime passes its own (libcni adds the CNI variables to it).
    let argv: Vec<String> = [
        "ip",
        "netns",
        "exec",
        &host.0,
        "/usr/bin/env",
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        &format!("{REFERENCE_PLUGINS}/bridge"),
    ]
    .map(String::from)
    .to_vec();
    let (args, pod_path) = (pod_args("conflist"), pod.path());
    let run = |command: &'static str| {
        support::node::run_command(
            &argv,
            command,
            &config,
            "conflist-c1",
            "eth0",
            &args,
            &pod_path,
            &cni_path,
        )
    };

    let add = run("ADD").await;
    assert_eq!(add.code, 0, "bridge ADD: {} {}", add.result, add.stderr);
    let address = add.result["ips"][0]["address"]
        .as_str()
        .expect("an address");
    assert!(address.starts_with("10.69.0."), "{address}");
    assert!(
        pod.addresses("eth0").contains(&format!("inet {address}")),
        "pod eth0: {}",
        pod.addresses("eth0")
    );
    let routes = std::process::Command::new("ip")
        .args(["-n", &pod.0, "route", "show", "default"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&routes.stdout).contains("via 10.69.0.1"),
        "isDefaultGateway gives the pod a default route via the gateway: {}",
        String::from_utf8_lossy(&routes.stdout)
    );
    let del = run("DEL").await;
    assert_eq!(del.code, 0, "bridge DEL: {} {}", del.result, del.stderr);
    assert!(h.ledger(&pool).await.is_empty(), "DEL released the address");
    h.delete_pool(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_supported_cni_version_adds_checks_and_deletes() {
    let h = Harness::new().await;
    let pool = h
        .pool(
            "vers",
            IPPoolSpec {
                gateway: Some("10.68.0.1".into()),
                ..v4_pool("10.68.0.0/24", 28)
            },
        )
        .await;
    let mut agent = h.agent(&test_support::unique("node")).await;
    for version in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let net = network("pods", version, &agent.socket, &[&pool]);
        let id = format!("v{}", version.replace('.', ""));
        let add = plugin("ADD", &net, &id, "eth0", &pod_args(&id)).await;
        assert_eq!(add.code, 0, "{version}: {}", add.result);
        assert_eq!(add.result["cniVersion"], version);
        let ip = &add.result["ips"][0];
        assert_eq!(ip["gateway"], "10.68.0.1", "{version}: {}", add.result);
        assert!(
            ip.get("interface").is_none(),
            "an IPAM result has no interface index"
        );
        let old_format = version.starts_with("0.");
        assert_eq!(
            ip.get("version").is_some(),
            old_format,
            "{version}: ips[].version only before 1.0.0"
        );
        if version != "0.3.0" && version != "0.3.1" {
            let check = plugin(
                "CHECK",
                &with_prev(&net, &add.result),
                &id,
                "eth0",
                &pod_args(&id),
            )
            .await;
            assert_eq!(check.code, 0, "{version} CHECK: {}", check.result);
        }
        let del = plugin("DEL", &net, &id, "eth0", &pod_args(&id)).await;
        assert_eq!(del.code, 0, "{version} DEL: {}", del.result);
    }
    assert!(h.ledger(&pool).await.is_empty());
    agent.stop().await;
    h.delete_pool(&pool).await;
}
