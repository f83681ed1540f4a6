//! What the agent reads from the API server: in steady state nothing, for ADD, CHECK and
//! DEL alike (its watch caches hold the pods of its node, the namespaces, its Node, the
//! pools and its blocks), and one GET when the runtime runs ADD for a pod its cache does
//! not hold yet. On a real server every read is a round trip before the one write an ADD
//! must make. Counted from the emulator's request log, not from the agent's own numbers.

mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use ipledger::api::IPPoolSpec;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::harness::{Harness, v4_pool};
use support::node::{Agent, network, plugin};
use support::pods::{NO_SCHEDULER, pod_args_for};

/// The user the agent's token authenticates as in the emulator.
const AGENT: &str = "agent";

async fn create_node(client: &Client, name: &str, labels: Value) {
    let node: Node =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
}

async fn create_namespace(client: &Client, name: &str, annotations: Value) {
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "annotations": annotations}}))
            .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
}

/// Creates a pod, bound to `node` when given (as the scheduler binds it before kubelet
/// runs it), and returns its UID.
async fn create_pod(
    client: &Client,
    namespace: &str,
    name: &str,
    node: Option<&str>,
    annotations: Value,
) -> String {
    let mut spec = json!({
        "schedulerName": NO_SCHEDULER,
        "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}],
    });
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
    }
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": name, "annotations": annotations}, "spec": spec}),
    )
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap()
        .uid()
        .unwrap()
}

/// The get and list requests `user` made from the `since`-th entry of the request log
/// on, as `verb resource name`.
fn reads_since(h: &Harness, user: &str, since: usize) -> Vec<String> {
    let emulator = h.cluster.emulator.as_ref().expect("the emulator");
    emulator.audit()[since..]
        .iter()
        .filter(|e| e.user == user && matches!(e.verb, "get" | "list"))
        .map(|e| {
            format!(
                "{} {} {}",
                e.verb,
                e.object_resource(),
                e.name.as_deref().unwrap_or("")
            )
        })
        .collect()
}

fn address(run: &support::node::PluginRun) -> IpAddr {
    run.addresses()[0].addr()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_steady_state_add_check_and_del_make_no_read_request() {
    let h = Harness::with_users(&[AGENT]).await;
    let Some(kubeconfig) = h.kubeconfig_of(AGENT) else {
        test_support::skip(
            "the agent's requests are counted in the emulator's request log, which a real cluster does not serve",
        );
        return;
    };
    let client = h.client();
    let node = test_support::unique("reads-node");
    let namespace = test_support::unique("reads");
    let pool = h.pool("reads", v4_pool("10.96.0.0/24", 26)).await;
    create_node(&client, &node, json!({"ipledger.io/test": "reads"})).await;
    // The namespace names the pool: the agent then also looks at the node's labels, so
    // every cache of pool choice is used.
    create_namespace(&client, &namespace, json!({"ipledger.io/pools": pool})).await;
    let mut uids = Vec::new();
    for i in 0..6 {
        uids.push(
            create_pod(
                &client,
                &namespace,
                &format!("pod-{i}"),
                Some(&node),
                json!({}),
            )
            .await,
        );
    }
    let agent = Agent::start(kubeconfig, &node, h.dir.path()).await;
    let net = network("reads", "1.0.0", &agent.socket, &[]);
    let args = |i: usize| {
        pod_args_for(
            &namespace,
            &format!("pod-{i}"),
            &uids[i],
            &format!("infra-{i}"),
        )
    };

    // The first ADD claims the node's first block (a list of the pools, a create).
    let first = plugin("ADD", &net, "c-0", "eth0", &args(0)).await;
    assert!(
        first.addresses()[0]
            .addr()
            .to_string()
            .starts_with("10.96.0.")
    );
    // Until the watch shows the claimed block.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let since = h.cluster.emulator.as_ref().unwrap().audit().len();
    let mut got = BTreeMap::new();
    for i in 1..6 {
        let id = format!("c-{i}");
        let added = plugin("ADD", &net, &id, "eth0", &args(i)).await;
        let ip = address(&added);
        assert!(
            got.insert(ip, id.clone()).is_none(),
            "{ip} handed out twice"
        );
        let mut checked = net.clone();
        checked["prevResult"] = added.result.clone();
        let check = plugin("CHECK", &checked, &id, "eth0", &args(i)).await;
        assert_eq!(
            check.code, 0,
            "CHECK {id}: {} {}",
            check.result, check.stderr
        );
    }
    for i in 1..4 {
        let id = format!("c-{i}");
        for _ in 0..2 {
            let del = plugin("DEL", &net, &id, "eth0", &args(i)).await;
            assert_eq!(del.code, 0, "DEL {id}: {} {}", del.result, del.stderr);
        }
    }

    let reads = reads_since(&h, AGENT, since);
    assert!(
        reads.is_empty(),
        "steady-state ADD, CHECK and DEL read from the API server: {reads:?}"
    );
    let log = h.cluster.emulator.as_ref().unwrap().audit();
    let writes = log[since..]
        .iter()
        .filter(|e| e.user == AGENT && e.changed_something())
        .count();
    // 5 ADDs and 3 DELs, each one write at most (a repeat and a second DEL write nothing).
    assert!(
        (1..=8).contains(&writes),
        "the agent's writes were counted: {writes}"
    );
    assert_eq!(agent.metric("ipledger_agent_cache_misses_total").await, 0.0);

    // A repeated ADD is answered with the address held, confirmed on the record itself:
    // the leak GC may have released it since this agent's copy was written.
    let since = h.cluster.emulator.as_ref().unwrap().audit().len();
    let again = plugin("ADD", &net, "c-5", "eth0", &args(5)).await;
    assert_eq!(got.get(&address(&again)).map(String::as_str), Some("c-5"));
    let reads = reads_since(&h, AGENT, since);
    assert_eq!(reads.len(), 1, "one read of the block: {reads:?}");
    assert!(
        reads[0].starts_with("get ipledger.io/ipblocks "),
        "{reads:?}"
    );
    Api::<Node>::all(client.clone())
        .delete(&node, &DeleteParams::default())
        .await
        .unwrap();
    test_support::delete_namespace(&client, &namespace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_missing_from_the_cache_still_gets_its_annotations_honoured() {
    let h = Harness::with_users(&[AGENT]).await;
    let kubeconfig = h
        .kubeconfig_of(AGENT)
        .unwrap_or(&h.kubeconfig)
        .to_path_buf();
    let client = h.client();
    let node = test_support::unique("reads-node");
    let namespace = test_support::namespace(&client).await;
    let plain = h
        .pool(
            "plain",
            IPPoolSpec {
                default: true,
                ..v4_pool("10.97.0.0/24", 26)
            },
        )
        .await;
    let chosen = h.pool("chosen", v4_pool("10.98.0.0/24", 26)).await;
    let agent = Agent::start(&kubeconfig, &node, h.dir.path()).await;
    let net = network("reads", "1.0.0", &agent.socket, &[]);

    // Not bound to this node: the agent's pod watch never shows it, as when the runtime
    // runs ADD before the watch event of a newly bound pod arrives.
    let unbound = create_pod(
        &client,
        &namespace,
        "unbound",
        None,
        json!({"ipledger.io/pools": chosen, "ipledger.io/ips": "10.98.0.77"}),
    )
    .await;
    let since = h.cluster.emulator.as_ref().map(|e| e.audit().len());
    let args = pod_args_for(&namespace, "unbound", &unbound, "infra-unbound");
    let run = plugin("ADD", &net, "c-unbound", "eth0", &args).await;
    assert_eq!(
        address(&run),
        "10.98.0.77".parse::<IpAddr>().unwrap(),
        "the pod's annotations choose pool and address: {}",
        run.result
    );
    assert_eq!(run.result["ips"][0]["address"], "10.98.0.77/24");
    assert!(agent.metric("ipledger_agent_cache_misses_total").await >= 1.0);
    if let Some(since) = since {
        let reads = reads_since(&h, AGENT, since);
        assert!(
            reads.contains(&"get pods unbound".to_string()),
            "the agent read the pod it did not hold: {reads:?}"
        );
    }

    // Bound to the node: from the cache, with the same annotations honoured.
    let bound = create_pod(
        &client,
        &namespace,
        "bound",
        Some(&node),
        json!({"ipledger.io/pools": chosen}),
    )
    .await;
    let args = pod_args_for(&namespace, "bound", &bound, "infra-bound");
    let mut ip = None;
    // Until the pod watch shows the pod (a miss would still be honoured, by a GET).
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(since) = h.cluster.emulator.as_ref().map(|e| e.audit().len()) {
            let run = plugin("ADD", &net, "c-bound", "eth0", &args).await;
            let got = address(&run);
            if reads_since(&h, AGENT, since).is_empty() {
                ip = Some(got);
                break;
            }
            plugin("DEL", &net, "c-bound", "eth0", &args).await;
        } else {
            ip = Some(address(
                &plugin("ADD", &net, "c-bound", "eth0", &args).await,
            ));
            break;
        }
    }
    let ip = ip.expect("an ADD answered from the pod cache");
    assert!(
        ip.to_string().starts_with("10.98.0."),
        "{ip} is from {chosen}, which the pod names, not the default pool {plain}"
    );
    test_support::delete_namespace(&client, &namespace).await;
}
