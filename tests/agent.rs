//! The allocation path end to end: real `ipledger agent` processes and the real plugin
//! binary against the API emulator (or the cluster `IPLEDGER_TEST_KUBECONFIG` names).

mod support;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;

use ipledger::api::{IPBlock, IPPool, IPPoolSpec, LABEL_NODE};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::Value;
use support::node::{Agent, network, plugin};

/// A cluster with ipledger's CRDs, a kubeconfig file for agent processes, and a
/// directory for sockets.
struct Harness {
    cluster: test_support::Cluster,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

impl Harness {
    async fn new() -> Harness {
        let cluster = test_support::cluster().await;
        support::install_crds(&cluster.client).await;
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = match std::env::var("IPLEDGER_TEST_KUBECONFIG") {
            Ok(path) => PathBuf::from(path),
            Err(_) => {
                let path = dir.path().join("kubeconfig");
                cluster
                    .emulator
                    .as_ref()
                    .unwrap()
                    .write_kubeconfig(&path)
                    .unwrap();
                path
            }
        };
        Harness {
            cluster,
            kubeconfig,
            dir,
        }
    }

    fn client(&self) -> Client {
        self.cluster.client.clone()
    }

    async fn agent(&self, node: &str) -> Agent {
        Agent::start(&self.kubeconfig, node, self.dir.path()).await
    }

    /// Creates a pool and returns its (unique) name.
    async fn pool(&self, prefix: &str, spec: IPPoolSpec) -> String {
        let name = test_support::unique(prefix);
        Api::<IPPool>::all(self.client())
            .create(&PostParams::default(), &IPPool::new(&name, spec))
            .await
            .unwrap();
        // The agents' watches must see the pool before it is used.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        name
    }

    /// Every allocation recorded in the pool's blocks: address → (containerID, block node).
    async fn ledger(&self, pool: &str) -> Vec<(IpAddr, String, String)> {
        let blocks = Api::<IPBlock>::all(self.client())
            .list(&ListParams::default().labels(&format!("ipledger.io/pool={pool}")))
            .await
            .unwrap();
        let mut records = Vec::new();
        for block in blocks {
            assert!(
                block.labels().contains_key(LABEL_NODE),
                "block {} has no node label",
                block.name_any()
            );
            for record in &block.spec.allocations {
                assert!(
                    block.spec.cidr.contains(&record.address),
                    "{} outside its block {}",
                    record.address,
                    block.spec.cidr
                );
                records.push((
                    record.address,
                    record.container_id.clone(),
                    block.spec.node.clone(),
                ));
            }
        }
        records
    }

    async fn delete_pool(&self, name: &str) {
        let blocks = Api::<IPBlock>::all(self.client());
        let _ = blocks
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels(&format!("ipledger.io/pool={name}")),
            )
            .await;
        let _ = Api::<IPPool>::all(self.client())
            .delete(name, &DeleteParams::default())
            .await;
    }
}

fn v4_pool(cidr: &str, block_size: u8) -> IPPoolSpec {
    IPPoolSpec {
        cidr: cidr.into(),
        block_size: Some(block_size),
        reuse_cooldown_seconds: Some(0),
        ..Default::default()
    }
}

fn pod_args(name: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID=x{name}"
    )
}

fn duplicates(records: &[(IpAddr, String, String)]) -> Vec<IpAddr> {
    let mut seen = HashSet::new();
    records
        .iter()
        .filter(|r| !seen.insert(r.0))
        .map(|r| r.0)
        .collect()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_releases_what_the_runtime_no_longer_lists() {
    let h = Harness::new().await;
    let pool = h.pool("gc", v4_pool("10.65.0.0/24", 28)).await;
    let mut agent = h.agent(&test_support::unique("node")).await;
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

/// A node with no block of its own and no free block left borrows from another node's
/// block; its DEL finds the borrowed address again, and the lending node's GC leaves it
/// alone (only the borrower's runtime knows whether that pod lives). With
/// `strictAffinity` the same request is refused as exhaustion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn borrowing_from_a_full_pool_and_strict_affinity() {
    let h = Harness::new().await;
    // A /28 in /29 blocks: two blocks, 14 usable addresses.
    let pool = h.pool("borrow", v4_pool("10.66.0.0/28", 29)).await;
    let mut lender = h.agent(&test_support::unique("lender")).await;
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
