//! The allocation path at its edges: overlapping pools, blocks deleted under a running
//! agent, idempotency across a family's pools, long names, exhaustion storms, borrows
//! returned, ADDs cancelled between families. Real agents and the real plugin binary
//! against the API emulator (or the cluster `IPLEDGER_TEST_KUBECONFIG` names).

mod support;

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ipledger::api::{BORROWER_PREFIX, IPBlock, IPPool, IPPoolSpec, LABEL_POOL, label_value};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use support::harness::{Harness, duplicates, held_by, pod_args, v4_pool};
use support::node::{Agent, PluginRun, network, plugin};

/// The IPBlocks of `pool`, as the API holds them.
async fn blocks_of(h: &Harness, pool: &str) -> Vec<IPBlock> {
    Api::<IPBlock>::all(h.client())
        .list(&ListParams::default().labels(&format!("{LABEL_POOL}={}", label_value(pool))))
        .await
        .unwrap()
        .items
}

/// Runs ADD until the pool answers exhaustion (code 100); returns how many succeeded.
async fn fill(net: &serde_json::Value, prefix: &str) -> usize {
    for i in 0..1000 {
        let id = format!("{prefix}{i}");
        let run = plugin("ADD", net, &id, "eth0", &pod_args(&id)).await;
        if run.code != 0 {
            assert_eq!(
                run.error_code(),
                100,
                "filling: {} {}",
                run.result,
                run.stderr
            );
            return i;
        }
    }
    panic!("the pool never filled");
}

/// Invariant 7. Pools 10.79.0.0/24 and, created a second later, 10.79.0.0/25 share
/// addresses; ADDs naming one or the other run 8 at a time on two nodes. Only the pool
/// created first hands out addresses; ADDs naming the later one are refused with code 106
/// naming the earlier, and no address is recorded twice across both pools' blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_pools_never_hand_out_one_address_twice() {
    let h = Harness::new().await;
    let first = h.pool("first", v4_pool("10.79.0.0/24", 27)).await;
    // creationTimestamp has whole seconds: the later pool must be later by one at least.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = h.pool("later", v4_pool("10.79.0.0/25", 27)).await;
    let agents = [
        h.agent(&test_support::unique("node")).await,
        h.agent(&test_support::unique("node")).await,
    ];

    let runs: Vec<(bool, PluginRun)> = futures::stream::iter(0..60)
        .map(|i| {
            let agent = &agents[i % 2];
            let (pool, names_first) = if i % 3 == 0 {
                (&later, false)
            } else {
                (&first, true)
            };
            let net = network("pods", "1.1.0", &agent.socket, &[pool]);
            async move {
                let id = format!("c{i}");
                (
                    names_first,
                    plugin("ADD", &net, &id, "eth0", &pod_args(&id)).await,
                )
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;

    for (names_first, run) in &runs {
        if *names_first {
            assert_eq!(run.addresses().len(), 1);
        } else {
            assert_eq!(run.error_code(), 106, "{}", run.result);
            let msg = run.result["msg"].as_str().unwrap_or_default();
            assert!(
                msg.contains(&first),
                "the refusal names the older pool: {msg}"
            );
        }
    }
    let mut ledger = h.ledger(&first).await;
    assert_eq!(ledger.len(), 40);
    assert!(
        h.ledger(&later).await.is_empty(),
        "the later pool allocated nothing"
    );
    ledger.extend(h.ledger(&later).await);
    assert!(duplicates(&ledger).is_empty(), "{:?}", duplicates(&ledger));
    assert!(
        blocks_of(&h, &later).await.is_empty(),
        "nor claimed a block"
    );

    // Once the earlier pool is gone, the later one allocates.
    h.delete_pool(&first).await;
    let agent = &agents[0];
    let net = network("pods", "1.1.0", &agent.socket, &[&later]);
    let ready = test_support::wait_for(|| async {
        plugin("ADD", &net, "after", "eth0", &pod_args("after"))
            .await
            .result["ips"]
            .as_array()
            .map(|ips| !ips.is_empty())
            .filter(|ok| *ok)
    })
    .await;
    assert!(
        ready.is_some(),
        "the later pool allocates once the earlier is gone"
    );
    h.delete_pool(&later).await;
}

/// Blocks are deleted routinely (empty-block reclaim, pool deletion, an operator). The
/// agent forgets a deleted block at once and the next ADD claims afresh, also when the
/// pool itself was deleted and re-created under the same name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_block_is_forgotten_and_the_next_add_claims_afresh() {
    let h = Harness::new().await;
    let spec = v4_pool("10.80.0.0/24", 28);
    let pool = h.pool("deleted", spec.clone()).await;
    let mut agent = h.agent(&test_support::unique("node")).await;
    let net = network("pods", "1.1.0", &agent.socket, &[&pool]);
    plugin("ADD", &net, "c1", "eth0", &pod_args("c1"))
        .await
        .addresses();

    let blocks = Api::<IPBlock>::all(h.client());
    for block in blocks_of(&h, &pool).await {
        blocks
            .delete(&block.name_any(), &DeleteParams::default())
            .await
            .unwrap();
    }
    // At once: no waiting for the agent's watch.
    let run = plugin("ADD", &net, "c2", "eth0", &pod_args("c2")).await;
    assert_eq!(run.addresses().len(), 1, "the next ADD claims afresh");
    assert_eq!(held_by(&h, &pool, "c2").await.len(), 1);

    // The pool deleted (its blocks go with it) and re-created with the same name.
    let pools = Api::<IPPool>::all(h.client());
    pools.delete(&pool, &DeleteParams::default()).await.unwrap();
    test_support::wait_for(|| async {
        pools.get_opt(&pool).await.unwrap().is_none().then_some(())
    })
    .await
    .expect("the pool is deleted");
    pools
        .create(&PostParams::default(), &IPPool::new(&pool, spec))
        .await
        .unwrap();
    let answered = test_support::wait_for(|| async {
        let run = plugin("ADD", &net, "c3", "eth0", &pod_args("c3")).await;
        // Until the agent's watch shows the new pool, code 11 says "try again".
        (run.code == 0 || run.error_code() != 11).then_some(run)
    })
    .await
    .expect("an answer other than try-again");
    assert_eq!(answered.addresses().len(), 1, "{}", answered.result);
    // Kubernetes garbage collection may still be removing the old pool's blocks; the new
    // pool's record must be in a block it owns.
    let uid = pools.get(&pool).await.unwrap().uid();
    let owned = test_support::wait_for(|| async {
        let held: Vec<_> = blocks_of(&h, &pool)
            .await
            .into_iter()
            .filter(|b| b.spec.allocations.iter().any(|r| r.container_id == "c3"))
            .collect();
        (!held.is_empty()).then_some(held)
    })
    .await
    .expect("c3 is recorded");
    for block in owned {
        assert!(
            block
                .owner_references()
                .iter()
                .all(|o| Some(&o.uid) == uid.as_ref()),
            "c3 is recorded in a block of the old pool: {:?}",
            block.owner_references()
        );
    }
    agent.stop().await;
    h.delete_pool(&pool).await;
}

/// A pool deleted and re-created under the same name while the agent's pool cache still
/// shows the old one: a claim must not create a block owned by the deleted pool, which
/// Kubernetes garbage collection would delete with the addresses in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_never_creates_a_block_owned_by_a_deleted_pool() {
    let h = Harness::new().await;
    if h.cluster.emulator.is_none() {
        test_support::skip(
            "making watches lag needs the emulator (IPLEDGER_TEST_KUBECONFIG is set)",
        );
        return;
    }
    let spec = v4_pool("10.86.0.0/24", 28);
    let pool = h.pool("recreated", spec.clone()).await;
    let mut agent = h.agent(&test_support::unique("node")).await;
    let net = network("pods", "1.1.0", &agent.socket, &[&pool]);

    // The agent's caches lag; meanwhile the pool is deleted and created again.
    h.break_watches().await;
    let pools = Api::<IPPool>::all(h.client());
    pools.delete(&pool, &DeleteParams::default()).await.unwrap();
    let current = pools
        .create(&PostParams::default(), &IPPool::new(&pool, spec))
        .await
        .unwrap()
        .uid();
    let answered = test_support::wait_for(|| async {
        let run = plugin("ADD", &net, "c1", "eth0", &pod_args("c1")).await;
        (run.code == 0 || run.error_code() != 11).then_some(run)
    })
    .await
    .expect("an answer other than try-again");
    assert_eq!(answered.addresses().len(), 1, "{}", answered.result);
    for block in blocks_of(&h, &pool).await {
        let owners: Vec<_> = block
            .owner_references()
            .iter()
            .map(|o| Some(&o.uid))
            .collect();
        assert_eq!(owners, vec![current.as_ref()], "block {}", block.name_any());
    }
    agent.stop().await;
    h.delete_pool(&pool).await;
}

/// An attachment that holds an address in the second pool of a family gets that address
/// again on a repeated ADD, not a second one from the first pool once it has room; also
/// from an agent restarted since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_add_finds_its_address_in_a_later_pool_of_the_family() {
    let h = Harness::new().await;
    let small = h.pool("small", v4_pool("10.81.0.0/29", 29)).await;
    let large = h.pool("large", v4_pool("10.81.1.0/24", 28)).await;
    let mut agent = h.agent(&test_support::unique("node")).await;
    let net = network("pods", "1.1.0", &agent.socket, &[&small, &large]);
    let only_small = network("pods", "1.1.0", &agent.socket, &[&small]);
    let filled = fill(&only_small, "s").await;
    assert!(filled > 0);

    let ip = plugin("ADD", &net, "x", "eth0", &pod_args("x"))
        .await
        .addresses()[0]
        .addr();
    assert!(held_by(&h, &large, "x").await.contains(&ip));
    // Room again in the first pool.
    assert_eq!(
        plugin("DEL", &net, "s0", "eth0", &pod_args("s0"))
            .await
            .code,
        0
    );

    let again = plugin("ADD", &net, "x", "eth0", &pod_args("x")).await;
    assert_eq!(again.addresses()[0].addr(), ip, "the same address again");
    agent.stop().await;
    agent.restart().await;
    let after_restart = plugin("ADD", &net, "x", "eth0", &pod_args("x")).await;
    assert_eq!(after_restart.addresses()[0].addr(), ip);
    assert!(
        held_by(&h, &small, "x").await.is_empty(),
        "nothing in the first pool"
    );
    assert_eq!(held_by(&h, &large, "x").await, vec![ip]);
    agent.stop().await;
    h.delete_pool(&small).await;
    h.delete_pool(&large).await;
}

/// Pool and node names may be 253 characters long, label values only 63: blocks of such
/// a pool on such a node are labelled with a hash and keep the full names in their spec.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_and_nodes_with_253_character_names_allocate() {
    let h = Harness::new().await;
    let long = |prefix: &str| {
        let head = test_support::unique(prefix);
        format!("{head}.{}", "x".repeat(252 - head.len()))
    };
    let pool = long("pool");
    assert_eq!(pool.len(), 253);
    Api::<IPPool>::all(h.client())
        .create(
            &PostParams::default(),
            &IPPool::new(&pool, v4_pool("10.82.0.0/24", 28)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let node = long("node");
    let mut agent = h.agent(&node).await;
    let net = network("pods", "1.1.0", &agent.socket, &[&pool]);

    let ip = plugin("ADD", &net, "c1", "eth0", &pod_args("c1"))
        .await
        .addresses()[0]
        .addr();
    let blocks = blocks_of(&h, &pool).await;
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].spec.pool, pool);
    assert_eq!(blocks[0].spec.node, node);
    assert!(blocks[0].labels().values().all(|v| v.len() <= 63));
    assert_eq!(held_by(&h, &pool, "c1").await, vec![ip]);
    // The agent's own-block watch (selected by the hashed node label) finds it: the
    // repeated ADD answers from it.
    let again = plugin("ADD", &net, "c1", "eth0", &pod_args("c1")).await;
    assert_eq!(again.addresses()[0].addr(), ip);
    assert_eq!(
        plugin("DEL", &net, "c1", "eth0", &pod_args("c1"))
            .await
            .code,
        0
    );
    assert!(held_by(&h, &pool, "c1").await.is_empty());
    agent.stop().await;
    h.delete_pool(&pool).await;
}

/// A borrowed address returned leaves no borrower label behind, so the borrower's watch
/// lets go of the block; the lender's block keeps its own records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returned_borrow_leaves_no_borrower_label() {
    let h = Harness::new().await;
    // A /28 in /29 blocks: two blocks, 14 usable addresses.
    let pool = h.pool("lend", v4_pool("10.83.0.0/28", 29)).await;
    let mut lender = h.agent(&test_support::unique("lender")).await;
    let mut borrower = h.agent(&test_support::unique("borrower")).await;
    let lender_net = network("pods", "1.1.0", &lender.socket, &[&pool]);
    for i in 0..9 {
        let id = format!("l{i}");
        plugin("ADD", &lender_net, &id, "eth0", &pod_args(&id))
            .await
            .addresses();
    }
    let borrower_net = network("pods", "1.1.0", &borrower.socket, &[&pool]);
    for round in 0..3 {
        let id = format!("b{round}");
        plugin("ADD", &borrower_net, &id, "eth0", &pod_args(&id))
            .await
            .addresses();
        let labelled = |blocks: &[IPBlock]| {
            blocks
                .iter()
                .filter(|b| b.labels().keys().any(|k| k.starts_with(BORROWER_PREFIX)))
                .count()
        };
        assert_eq!(
            labelled(&blocks_of(&h, &pool).await),
            1,
            "the borrow is marked"
        );
        assert_eq!(
            plugin("DEL", &borrower_net, &id, "eth0", &pod_args(&id))
                .await
                .code,
            0
        );
        assert_eq!(
            labelled(&blocks_of(&h, &pool).await),
            0,
            "round {round}: the returned borrow left its label"
        );
    }
    assert_eq!(h.ledger(&pool).await.len(), 9);
    lender.stop().await;
    borrower.stop().await;
    h.delete_pool(&pool).await;
}

/// An exhaustion storm: on a full pool, sixteen ADDs at once on two nodes all answer code
/// 100 from the block index, without an API request: with every API answer delayed by a
/// second, they are all answered within far less than one answer per ADD would take.
/// STATUS says 50 likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_answers_100_at_once_however_many_adds_wait() {
    let h = Harness::new().await;
    let Some(emulator) = h.cluster.emulator.as_ref() else {
        test_support::skip(
            "delaying API answers needs the emulator (IPLEDGER_TEST_KUBECONFIG is set)",
        );
        return;
    };
    let pool = h.pool("storm", v4_pool("10.84.0.0/28", 29)).await;
    let mut full = h.agent(&test_support::unique("full")).await;
    let mut empty = h.agent(&test_support::unique("empty")).await;
    let full_net = network("pods", "1.1.0", &full.socket, &[&pool]);
    let empty_net = network("pods", "1.1.0", &empty.socket, &[&pool]);
    assert_eq!(fill(&full_net, "f").await, 14);
    // The other node's index sees the blocks' last writes.
    tokio::time::sleep(Duration::from_millis(500)).await;

    emulator.faults().delay_responses(Duration::from_secs(1));
    let started = Instant::now();
    let runs: Vec<PluginRun> = futures::stream::iter(0..16)
        .map(|i| {
            let net = if i % 2 == 0 { &full_net } else { &empty_net };
            // No pod: nothing to read for pool choice.
            async move { plugin("ADD", net, &format!("s{i}"), "eth0", "").await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let took = started.elapsed();
    let status = plugin("STATUS", &empty_net, "", "", "").await;
    emulator.faults().delay_responses(Duration::ZERO);

    for run in &runs {
        assert_eq!(run.error_code(), 100, "{}", run.result);
        let msg = run.result["msg"].as_str().unwrap_or_default();
        assert!(msg.contains(&pool) && msg.contains("14"), "{msg}");
    }
    assert!(
        took < Duration::from_secs(4),
        "16 exhausted ADDs took {took:?}: they waited on API requests"
    );
    assert_eq!(status.error_code(), 50, "{}", status.result);
    full.stop().await;
    empty.stop().await;
    h.delete_pool(&pool).await;
}

/// Dual-stack is all or nothing also when the ADD's handler is cancelled between the
/// families (its request timed out): the runtime sees the ADD fail, and the IPv4 address
/// it got first is given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_stack_add_cancelled_between_families_keeps_nothing() {
    let h = Harness::new().await;
    let Some(emulator) = h.cluster.emulator.as_ref() else {
        test_support::skip(
            "delaying API answers needs the emulator (IPLEDGER_TEST_KUBECONFIG is set)",
        );
        return;
    };
    let v4 = h.pool("cancel4", v4_pool("10.85.0.0/24", 28)).await;
    let v6 = h
        .pool(
            "cancel6",
            IPPoolSpec {
                cidr: "fd00:85::/64".into(),
                block_size: Some(124),
                reuse_cooldown_seconds: Some(0),
                ..Default::default()
            },
        )
        .await;
    let node = test_support::unique("node");
    let mut agent = Agent::start_with(
        &h.kubeconfig,
        &node,
        h.dir.path(),
        &["--request-timeout", "7s"],
    )
    .await;
    // The IPv4 pool has a block with room on this node; the IPv6 pool none yet.
    let v4_only = network("pods", "1.1.0", &agent.socket, &[&v4]);
    plugin("ADD", &v4_only, "warm", "eth0", &pod_args("warm"))
        .await
        .addresses();

    // Each API answer takes 3 s: IPv4 needs one write (done at 3 s), IPv6 a pool list, a
    // claim and a write (9 s): the 7 s timeout cancels the ADD between the families.
    emulator.faults().delay_responses(Duration::from_secs(3));
    let dual = network("pods", "1.1.0", &agent.socket, &[&v4, &v6]);
    let run = plugin("ADD", &dual, "d1", "eth0", "").await;
    assert_eq!(run.error_code(), 11, "{}", run.result);
    // The rollback's release is itself delayed.
    tokio::time::sleep(Duration::from_secs(8)).await;
    emulator.faults().delay_responses(Duration::ZERO);

    let held: Vec<IpAddr> = [&v4, &v6]
        .into_iter()
        .map(|pool| held_by(&h, pool, "d1"))
        .collect::<futures::stream::FuturesOrdered<_>>()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .flatten()
        .collect();
    assert!(held.is_empty(), "the cancelled ADD still holds {held:?}");
    let distinct: HashSet<_> = h.ledger(&v4).await.into_iter().map(|r| r.1).collect();
    assert_eq!(distinct, HashSet::from(["warm".to_string()]));
    agent.stop().await;
    h.delete_pool(&v4).await;
    h.delete_pool(&v6).await;
}
