//! The controller gives back what is no longer used, and nothing that is: leaked
//! addresses of deleted pods, blocks of deleted pools and nodes, blocks empty for too
//! long; and it keeps pool status. Real agent, plugin and controller processes against
//! the API emulator (or the cluster `IPLEDGER_TEST_KUBECONFIG` names).

mod support;

use std::time::Duration;

use ipledger::api::{
    BLOCK_FINALIZER, BORROWER_PREFIX, IPBlock, IPPool, IPPoolSpec, LABEL_POOL, POOL_FINALIZER,
    label_value,
};
use ipledger::ledger::RetryPolicy;
use ipledger::ledger::reclaim::tidy;
use ipledger_core::{Block, leaked};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::{Client, ResourceExt};
use support::controller::Controller;
use support::harness::{Harness, held_by, v4_pool};
use support::node::{network, plugin};
use support::pods::{create_pod, delete_pod, pod_args_for};
use support::within;

/// Reclaim timings short enough for tests: a second of grace, a pass every two.
const RECLAIM: [&str; 6] = [
    "--gc-grace",
    "1s",
    "--gc-interval",
    "2s",
    "--empty-block-ttl",
    "3s",
];

fn controller(h: &Harness) -> Controller {
    let lease = test_support::unique("reclaim");
    Controller::start_with(&h.kubeconfig, &lease, &lease, &RECLAIM)
}

async fn node(client: &Client, name: &str) {
    let node: Node =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
}

async fn blocks_of(h: &Harness, pool: &str) -> Vec<IPBlock> {
    Api::<IPBlock>::all(h.client())
        .list(&ListParams::default().labels(&format!("{LABEL_POOL}={}", label_value(pool))))
        .await
        .unwrap()
        .items
}

/// Pods deleted without a CNI DEL (a node crash) leak their addresses until the
/// controller releases them after the grace period; live pods' addresses, a pod's
/// address whose name now belongs to a newer pod excepted, and addresses with no pod
/// reference stay. A block missing its finalizer gets it, and a stale borrower label goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_of_deleted_pods_are_released_and_live_ones_stay() {
    let h = Harness::new().await;
    let client = h.client();
    let ns = test_support::namespace(&client).await;
    let pool = h.pool("leaks", v4_pool("10.91.0.0/24", 28)).await;
    let mut agent = h.agent(&test_support::unique("node")).await;
    let net = network("pods", "1.1.0", &agent.socket, &[&pool]);
    let mut addresses = Vec::new();
    for name in ["live", "gone", "replaced"] {
        let uid = create_pod(&client, &ns, name).await;
        let run = plugin(
            "ADD",
            &net,
            name,
            "eth0",
            &pod_args_for(&ns, name, &uid, name),
        )
        .await;
        addresses.push(run.addresses()[0].addr());
    }
    let anonymous = plugin("ADD", &net, "anonymous", "eth0", "").await;
    assert_eq!(anonymous.addresses().len(), 1);
    // A block as an older agent or a crash left it: no finalizer, and the label of a
    // borrower that holds nothing here.
    let blocks = Api::<IPBlock>::all(client.clone());
    let block = blocks_of(&h, &pool).await.remove(0).name_any();
    let stale = format!("{BORROWER_PREFIX}0123456789abcdef01234567");
    let untidy = serde_json::json!({"metadata": {"finalizers": null, "labels": {&stale: ""}}});
    blocks
        .patch(&block, &PatchParams::default(), &Patch::Merge(untidy))
        .await
        .unwrap();
    let mut ctl = controller(&h);
    let tidied = within(20, || async {
        let b = blocks.get(&block).await.ok()?;
        let finalized = b.finalizers().iter().any(|f| f == BLOCK_FINALIZER);
        (finalized && !b.labels().contains_key(&stale)).then_some(())
    })
    .await;
    assert!(
        tidied.is_some(),
        "the finalizer is back and the stale label gone"
    );

    delete_pod(&client, &ns, "gone").await;
    delete_pod(&client, &ns, "replaced").await;
    create_pod(&client, &ns, "replaced").await;
    let released = within(20, || async {
        let gone = held_by(&h, &pool, "gone").await.is_empty();
        let replaced = held_by(&h, &pool, "replaced").await.is_empty();
        (gone && replaced).then_some(())
    })
    .await;
    assert!(
        released.is_some(),
        "leaked addresses released: {:?}",
        h.ledger(&pool).await
    );
    // Another pass or two: nothing else goes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(held_by(&h, &pool, "live").await, vec![addresses[0]]);
    assert_eq!(held_by(&h, &pool, "anonymous").await.len(), 1);
    ctl.signal("TERM");
    let _ = ctl.child.wait().await;
    agent.stop().await;
    test_support::delete_namespace(&client, &ns).await;
}

/// The ABA race that made other IPAMs free live addresses: between the controller's
/// read and its write, the leaked attachment is released by the runtime and the same
/// address is allocated to a new attachment. The controller's write, made from its
/// stale copy, must free nothing: it removes only the exact record it judged leaked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leak_release_from_a_stale_read_never_frees_the_address_allocated_again() {
    let h = Harness::new().await;
    let pool = h.pool("aba", v4_pool("10.92.0.0/24", 28)).await;
    let mut agent = h.agent(&test_support::unique("node")).await;
    let net = network("pods", "1.1.0", &agent.socket, &[&pool]);
    let gone_pod = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=gone;K8S_POD_UID=9d3c1c6e-0000-4000-8000-00000000000a";
    let address = plugin("ADD", &net, "old", "eth0", gone_pod)
        .await
        .addresses()[0]
        .addr();

    // The controller's read: the pod is gone, the record is leaked.
    let blocks = Api::<IPBlock>::all(h.client());
    let stale = blocks_of(&h, &pool).await.remove(0);
    let block = Block::try_from(&stale.spec).unwrap();
    let far_future = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    let judged: Vec<_> = leaked(&block, |_, _| None, far_future, jiff::SignedDuration::ZERO)
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(judged.len(), 1);

    // Meanwhile: the runtime's DEL, and a new ADD that gets the same address.
    assert_eq!(plugin("DEL", &net, "old", "eth0", gone_pod).await.code, 0);
    let new = plugin(
        "ADD",
        &net,
        "new",
        "eth0",
        &format!("IgnoreUnknown=1;IP={address}"),
    )
    .await;
    assert_eq!(new.addresses()[0].addr(), address);

    // The controller's write, deciding from its stale copy first.
    let name = stale.name_any();
    let (released, _) = tidy(
        &blocks,
        &name,
        Some(stale.clone()),
        &judged,
        &RetryPolicy::default(),
    )
    .await
    .unwrap();
    assert!(released.is_empty(), "released {released:?}");
    assert_eq!(held_by(&h, &pool, "new").await, vec![address]);

    // The same swap does release a record that is still the one judged.
    let current = blocks.get(&name).await.unwrap();
    let block = Block::try_from(&current.spec).unwrap();
    let judged: Vec<_> = leaked(&block, |_, _| None, far_future, jiff::SignedDuration::ZERO)
        .into_iter()
        .filter(|a| a.address == address)
        .cloned()
        .collect();
    assert_eq!(
        judged.len(),
        0,
        "the new record names no pod: not the pod rule's"
    );
    let record = block.holder(address).unwrap().clone();
    // (A stale copy would answer "nothing to do" without a write; a fresh read is what
    // the next pass has.)
    let (released, after) = tidy(&blocks, &name, None, &[record], &RetryPolicy::default())
        .await
        .unwrap();
    assert!(after.spec.allocations.is_empty());
    assert_eq!(released, vec![address]);
    assert!(held_by(&h, &pool, "new").await.is_empty());
    agent.stop().await;
    h.delete_pool(&pool).await;
}

/// Whichever propagation policy deletes a pool, no block holding an allocation goes: the
/// pool stays Terminating, saying how many addresses remain, takes no new allocation,
/// and goes with its blocks once the last address is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pool_keeps_its_held_addresses_under_every_propagation_policy() {
    let h = Harness::new().await;
    let mut agent = h.agent(&test_support::unique("node")).await;
    let mut ctl = controller(&h);
    let pools = Api::<IPPool>::all(h.client());
    for (i, policy) in [
        PropagationPolicy::Background,
        PropagationPolicy::Foreground,
        PropagationPolicy::Orphan,
    ]
    .into_iter()
    .enumerate()
    {
        let pool = h
            .pool("deleted", v4_pool(&format!("10.93.{i}.0/24"), 28))
            .await;
        let empty = h
            .pool("empty", v4_pool(&format!("10.94.{i}.0/24"), 28))
            .await;
        let net = network("pods", "1.1.0", &agent.socket, &[&pool]);
        let empty_net = network("other", "1.1.0", &agent.socket, &[&empty]);
        let address = plugin("ADD", &net, "held", "eth0", "").await.addresses()[0].addr();
        // A pool whose only block was used and emptied again.
        plugin("ADD", &empty_net, "brief", "eth0", "")
            .await
            .addresses();
        assert_eq!(plugin("DEL", &empty_net, "brief", "eth0", "").await.code, 0);
        for name in [&pool, &empty] {
            within(20, || async {
                let p = pools.get(name).await.unwrap();
                p.finalizers()
                    .iter()
                    .any(|f| f == POOL_FINALIZER)
                    .then_some(())
            })
            .await
            .expect("the controller puts its finalizer on the pool");
        }

        let params = DeleteParams {
            propagation_policy: Some(policy.clone()),
            ..Default::default()
        };
        pools.delete(&pool, &params).await.unwrap();
        pools.delete(&empty, &params).await.unwrap();
        let gone = within(20, || async {
            pools.get_opt(&empty).await.unwrap().is_none().then_some(())
        })
        .await;
        assert!(gone.is_some(), "{policy:?}: an unused pool goes");
        assert!(blocks_of(&h, &empty).await.is_empty(), "{policy:?}");

        let terminating = within(20, || async {
            let p = pools.get(&pool).await.ok()?;
            let c = p
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Terminating")?;
            (c.status == "True").then_some(c)
        })
        .await;
        let Some(terminating) = terminating else {
            panic!(
                "{policy:?}: not Terminating: {:?}",
                pools.get(&pool).await.map(|p| (p.metadata, p.status))
            );
        };
        assert_eq!(terminating.reason, "AllocationsRemain", "{policy:?}");
        assert!(
            terminating.message.contains(" 1 "),
            "{}",
            terminating.message
        );
        // Kubernetes garbage collection has had its chance.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            held_by(&h, &pool, "held").await,
            vec![address],
            "{policy:?}"
        );
        let blocks = blocks_of(&h, &pool).await;
        assert_eq!(blocks.len(), 1, "{policy:?}");
        assert!(blocks[0].finalizers().iter().any(|f| f == BLOCK_FINALIZER));
        let refused = plugin("ADD", &net, "late", "eth0", "").await;
        assert_eq!(refused.error_code(), 105, "{policy:?}: {}", refused.result);

        assert_eq!(plugin("DEL", &net, "held", "eth0", "").await.code, 0);
        let gone = within(20, || async {
            let pool_gone = pools.get_opt(&pool).await.unwrap().is_none();
            (pool_gone && blocks_of(&h, &pool).await.is_empty()).then_some(())
        })
        .await;
        assert!(
            gone.is_some(),
            "{policy:?}: the pool and its blocks go at last"
        );
    }
    ctl.signal("TERM");
    let _ = ctl.child.wait().await;
    agent.stop().await;
}

/// A deleted Node's blocks give back the addresses of its gone pods and go once empty;
/// a live pod's address on it stays, whatever the node's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_node_gives_back_its_gone_pods_addresses_and_empty_blocks() {
    let h = Harness::new().await;
    let client = h.client();
    let ns = test_support::namespace(&client).await;
    let pool = h.pool("nodes", v4_pool("10.95.0.0/24", 28)).await;
    let (kept, emptied) = (
        test_support::unique("kept"),
        test_support::unique("emptied"),
    );
    node(&client, &kept).await;
    node(&client, &emptied).await;
    let mut agents = [h.agent(&kept).await, h.agent(&emptied).await];
    let mut uids = Vec::new();
    for (agent, name) in agents.iter().zip(["live", "crashed"]) {
        let uid = create_pod(&client, &ns, name).await;
        let net = network("pods", "1.1.0", &agent.socket, &[&pool]);
        plugin(
            "ADD",
            &net,
            name,
            "eth0",
            &pod_args_for(&ns, name, &uid, name),
        )
        .await
        .addresses();
        uids.push(uid);
    }
    // Both nodes go down hard: no DEL; the crashed pod is gone, the live one is not
    // (its node comes back, or the pod lives on elsewhere under the same record).
    for agent in &mut agents {
        agent.kill().await;
    }
    let mut ctl = controller(&h);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        blocks_of(&h, &pool).await.len(),
        2,
        "live nodes keep their blocks"
    );
    delete_pod(&client, &ns, "crashed").await;
    let nodes = Api::<Node>::all(client.clone());
    nodes.delete(&kept, &DeleteParams::default()).await.unwrap();
    nodes
        .delete(&emptied, &DeleteParams::default())
        .await
        .unwrap();

    let cleaned = within(20, || async {
        let blocks = blocks_of(&h, &pool).await;
        (blocks.len() == 1 && blocks[0].spec.node == kept).then_some(())
    })
    .await;
    assert!(cleaned.is_some(), "{:?}", h.ledger(&pool).await);
    assert_eq!(held_by(&h, &pool, "live").await.len(), 1);
    assert!(held_by(&h, &pool, "crashed").await.is_empty());
    ctl.signal("TERM");
    let _ = ctl.child.wait().await;
    test_support::delete_namespace(&client, &ns).await;
}

/// A live node's blocks that stay empty past the TTL go, all but one with room: the
/// block its next ADD would claim again at once stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_blocks_past_the_ttl_go_but_one_per_node_stays() {
    let h = Harness::new().await;
    let client = h.client();
    // /29 blocks of a /24: 8 addresses each (the pool's network and broadcast addresses
    // are in its first and last block).
    let pool = h.pool("ttl", v4_pool("10.96.0.0/24", 29)).await;
    let name = test_support::unique("node");
    node(&client, &name).await;
    let mut agent = h.agent(&name).await;
    let net = network("pods", "1.1.0", &agent.socket, &[&pool]);
    for i in 0..20 {
        plugin("ADD", &net, &format!("c{i}"), "eth0", "")
            .await
            .addresses();
    }
    assert_eq!(blocks_of(&h, &pool).await.len(), 3);
    let mut ctl = controller(&h);
    for i in 0..20 {
        assert_eq!(
            plugin("DEL", &net, &format!("c{i}"), "eth0", "").await.code,
            0
        );
    }
    let reclaimed = within(20, || async {
        (blocks_of(&h, &pool).await.len() == 1).then_some(())
    })
    .await;
    assert!(
        reclaimed.is_some(),
        "{} blocks",
        blocks_of(&h, &pool).await.len()
    );
    // And it stays so: the node's last block is kept.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let left = blocks_of(&h, &pool).await;
    assert_eq!(left.len(), 1);
    assert!(left[0].metadata.deletion_timestamp.is_none());
    assert_eq!(
        plugin("ADD", &net, "after", "eth0", "")
            .await
            .addresses()
            .len(),
        1
    );
    ctl.signal("TERM");
    let _ = ctl.child.wait().await;
    agent.stop().await;
    h.delete_pool(&pool).await;
}

/// Pool status: numbers equal what the IPBlocks record, and a later pool that overlaps
/// an earlier one says so, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_status_counts_the_blocks_records_and_names_an_overlap() {
    let h = Harness::new().await;
    let pool = h.pool("status", v4_pool("10.97.0.0/24", 28)).await;
    // Creation times have whole seconds; within one second the name decides.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = h
        .pool(
            "later",
            IPPoolSpec {
                cidr: "10.97.0.128/25".into(),
                ..v4_pool("10.97.0.128/25", 28)
            },
        )
        .await;
    let mut agent = h.agent(&test_support::unique("node")).await;
    let net = network("pods", "1.1.0", &agent.socket, &[&pool]);
    for i in 0..20 {
        plugin("ADD", &net, &format!("c{i}"), "eth0", "")
            .await
            .addresses();
    }
    let mut ctl = controller(&h);
    let pools = Api::<IPPool>::all(h.client());
    let status = within(20, || async {
        let status = pools.get(&pool).await.ok()?.status?;
        (status.allocated.as_deref() == Some("20")).then_some(status)
    })
    .await
    .expect("the status counts the allocations");
    let recorded: usize = blocks_of(&h, &pool)
        .await
        .iter()
        .map(|b| b.spec.allocations.len())
        .sum();
    assert_eq!(recorded, 20);
    assert_eq!(status.capacity.as_deref(), Some("254"));
    assert_eq!(status.free.as_deref(), Some("234"));
    assert_eq!(status.blocks, Some(blocks_of(&h, &pool).await.len() as u64));
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");

    let overlapping = within(20, || async {
        let status = pools.get(&later).await.ok()?.status?;
        status
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Overlapping" && c.status == "True")
    })
    .await
    .expect("the later pool is Overlapping");
    assert!(
        overlapping.message.contains(&pool),
        "{}",
        overlapping.message
    );

    // The IPBlock table's Allocated column reads the count each write carries.
    let block = blocks_of(&h, &pool).await.remove(0);
    let request = http::Request::get(format!(
        "/apis/ipledger.io/v1alpha1/ipblocks/{}",
        block.name_any()
    ))
    .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
    .body(Vec::new())
    .unwrap();
    let table: serde_json::Value = h.client().request(request).await.unwrap();
    let column = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .position(|c| c["name"] == "Allocated")
        .unwrap();
    assert_eq!(
        table["rows"][0]["cells"][column],
        block.spec.allocations.len().to_string().as_str()
    );
    ctl.signal("TERM");
    let _ = ctl.child.wait().await;
    agent.stop().await;
    h.delete_pool(&pool).await;
    h.delete_pool(&later).await;
}
