//! The chart's RBAC, proven: its ServiceAccounts, ClusterRoles, Roles and bindings, as
//! `helm template` renders them, applied to the API server; the agent and the
//! controller run with those ServiceAccounts' tokens only, through allocation,
//! exhaustion, leak GC and pool deletion, and no request of theirs is refused. Then the
//! same tokens are shown refused what the parts have no business doing.
//! Against the emulator, which enforces RBAC as a real server does (docs/emulator.md), or
//! the cluster `IPLEDGER_TEST_KUBECONFIG` names.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ipledger::api::{IPBlock, IPPool, IPPoolSpec, LABEL_POOL, POOL_FINALIZER, label_value};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::chart;
use support::controller::Controller;
use support::harness::Harness;
use support::node::{Agent, network, plugin};
use support::pods::{create_pod, delete_pod, pod_args_for};
use support::within;

/// Applies the chart's RBAC objects and its admission policy (nothing else) with the
/// admin client.
async fn apply_rbac(client: &Client, objects: &[Value]) {
    async fn create<K>(client: &Client, object: &Value)
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + serde::de::DeserializeOwned
            + serde::Serialize
            + Clone
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let typed: K = serde_json::from_value(object.clone()).unwrap();
        let ns = typed
            .namespace()
            .expect("a namespaced object names its namespace");
        Api::<K>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &typed)
            .await
            .unwrap_or_else(|e| panic!("creating {object}: {e}"));
    }
    async fn create_cluster<K>(client: &Client, object: &Value)
    where
        K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>
            + serde::de::DeserializeOwned
            + serde::Serialize
            + Clone
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let typed: K = serde_json::from_value(object.clone()).unwrap();
        Api::<K>::all(client.clone())
            .create(&PostParams::default(), &typed)
            .await
            .unwrap_or_else(|e| panic!("creating {object}: {e}"));
    }
    for object in objects {
        match object["kind"].as_str().unwrap() {
            "ServiceAccount" => create::<ServiceAccount>(client, object).await,
            "Role" => create::<Role>(client, object).await,
            "RoleBinding" => create::<RoleBinding>(client, object).await,
            "ClusterRole" => create_cluster::<ClusterRole>(client, object).await,
            "ClusterRoleBinding" => create_cluster::<ClusterRoleBinding>(client, object).await,
            "ValidatingAdmissionPolicy" => {
                create_cluster::<ValidatingAdmissionPolicy>(client, object).await
            }
            "ValidatingAdmissionPolicyBinding" => {
                create_cluster::<ValidatingAdmissionPolicyBinding>(client, object).await
            }
            _ => {}
        }
    }
}

/// A token of ServiceAccount `namespace/name`, by the TokenRequest API.
async fn token(client: &Client, namespace: &str, name: &str) -> String {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("a token for {namespace}/{name}: {e}"))
        .status
        .expect("a TokenRequest answer has a status")
        .token
}

/// The chart, rendered for a release of its own in a namespace of its own, with its
/// RBAC and admission policy applied.
struct Release {
    namespace: String,
    lease: String,
    agent_sa: String,
    controller_sa: String,
}

async fn install(helm: &Path, admin: &Client) -> Release {
    let namespace = test_support::namespace(admin).await;
    let release = test_support::unique("ipledger");
    let lease = test_support::unique("lease");
    let rendered = chart::objects(
        &chart::template_release(
            helm,
            &release,
            &namespace,
            &["--set", &format!("controller.leaseName={lease}")],
        )
        .unwrap(),
    );
    assert!(
        rendered
            .iter()
            .any(|o| o["kind"] == "ValidatingAdmissionPolicy"),
        "node-bound writes are on by default"
    );
    apply_rbac(admin, &rendered).await;
    Release {
        agent_sa: format!("{release}-agent"),
        controller_sa: format!("{release}-controller"),
        namespace,
        lease,
    }
}

/// A Node named `name`.
async fn create_node(admin: &Client, name: &str) {
    let node: Node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Node>::all(admin.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
}

/// The kubeconfig of an agent on `node`: the token the kubelet would project into the
/// DaemonSet's pod there, bound to that pod and so to the node.
async fn agent_kubeconfig(h: &Harness, release: &Release, node: &str) -> PathBuf {
    let (token, _) = test_support::pod_bound_token(
        &h.client(),
        &release.namespace,
        &release.agent_sa,
        &format!("agent-{node}"),
        node,
    )
    .await;
    kubeconfig_with(
        &h.kubeconfig,
        &token,
        &h.dir.path().join(format!("agent-{node}-kubeconfig")),
    )
}

/// A kubeconfig like the admin's `base` whose every user sends `token` and nothing else.
fn kubeconfig_with(base: &Path, token: &str, path: &Path) -> PathBuf {
    let mut config = kube::config::Kubeconfig::read_from(base).unwrap();
    for user in &mut config.auth_infos {
        user.auth_info = Some(kube::config::AuthInfo {
            token: Some(token.to_string().into()),
            ..Default::default()
        });
    }
    std::fs::write(path, serde_yaml_ng::to_string(&config).unwrap()).unwrap();
    path.to_path_buf()
}

async fn client_of(kubeconfig: &Path) -> Client {
    let config = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// The HTTP status of a refused call, or a panic when it was allowed.
fn refused<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

fn forbidden<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>) {
    let status = refused(what, result);
    assert_eq!(status.code, 403, "{what}: {status:?}");
    assert!(
        status.message.contains("is forbidden"),
        "{what}: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_and_the_controller_do_their_whole_job_with_the_charts_rbac_only() {
    let Some(helm) = chart::helm() else { return };
    let h = Harness::new().await;
    let admin = h.client();
    let dir = &h.dir;
    let admin_kubeconfig = h.kubeconfig.clone();

    let r = install(&helm, &admin).await;
    let (namespace, lease) = (r.namespace.as_str(), r.lease.as_str());
    let (agent_sa, controller_sa) = (r.agent_sa.as_str(), r.controller_sa.as_str());

    // A node, its agent's pod-bound token, and a pool of six addresses (a /29 less
    // network and broadcast).
    let node_name = test_support::unique("node");
    create_node(&admin, &node_name).await;
    let agent_kubeconfig = agent_kubeconfig(&h, &r, &node_name).await;
    let controller_kubeconfig = kubeconfig_with(
        &admin_kubeconfig,
        &token(&admin, namespace, controller_sa).await,
        &dir.path().join("controller-kubeconfig"),
    );
    let pool = test_support::unique("rbac");
    let spec = IPPoolSpec {
        cidr: "10.97.0.0/29".into(),
        block_size: Some(29),
        ..Default::default()
    };
    let pools = Api::<IPPool>::all(admin.clone());
    pools
        .create(&PostParams::default(), &IPPool::new(&pool, spec))
        .await
        .unwrap();

    let mut agent = Agent::start(&agent_kubeconfig, &node_name, dir.path()).await;
    let mut controller = Controller::start_in(
        &controller_kubeconfig,
        namespace,
        lease,
        "rbac-test",
        &[
            "--gc-grace",
            "1s",
            "--gc-interval",
            "2s",
            "--empty-block-ttl",
            "3s",
        ],
    );

    // Allocation up to exhaustion: six pods get the six addresses, the seventh is refused.
    let net = network("pods", "1.1.0", &agent.socket, &[&pool]);
    let pod_ns = test_support::namespace(&admin).await;
    let mut held = Vec::new();
    for i in 0..6 {
        let name = format!("pod-{i}");
        let uid = create_pod(&admin, &pod_ns, &name).await;
        let run = plugin(
            "ADD",
            &net,
            &name,
            "eth0",
            &pod_args_for(&pod_ns, &name, &uid, &name),
        )
        .await;
        held.push(run.addresses()[0].addr());
    }
    held.sort();
    held.dedup();
    assert_eq!(held.len(), 6, "six distinct addresses: {held:?}");
    let uid = create_pod(&admin, &pod_ns, "pod-6").await;
    let full = plugin(
        "ADD",
        &net,
        "pod-6",
        "eth0",
        &pod_args_for(&pod_ns, "pod-6", &uid, "pod-6"),
    )
    .await;
    assert!(
        full.error_code() >= 100,
        "exhaustion is ipledger's own code: {:?}",
        full.result
    );

    // The controller (leader through the Lease its Role names) writes the pool's status
    // and an Event in `default`.
    let status = within(20, || async {
        let p = pools.get(&pool).await.ok()?;
        let s = p.status?;
        (s.allocated.as_deref() == Some("6")).then_some(s)
    })
    .await;
    assert!(
        status.is_some(),
        "the pool's status never showed 6 allocated: {:?}",
        pools.get(&pool).await
    );
    let leases = Api::<Lease>::namespaced(admin.clone(), namespace);
    let holder = leases
        .get(lease)
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert_eq!(holder.as_deref(), Some("rbac-test"));
    let exhausted = within(20, || async {
        let events = Api::<Event>::namespaced(admin.clone(), "default")
            .list(&ListParams::default())
            .await
            .ok()?;
        events.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("PoolExhausted")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pool.as_str())
        })
    })
    .await;
    assert!(exhausted.is_some(), "no PoolExhausted Event for {pool}");

    // A DEL through the agent, and a pod deleted without one: the controller's GC
    // releases the second.
    let del = plugin(
        "DEL",
        &net,
        "pod-0",
        "eth0",
        &pod_args_for(&pod_ns, "pod-0", "", "pod-0"),
    )
    .await;
    assert_eq!(del.code, 0, "DEL: {:?} {}", del.result, del.stderr);
    delete_pod(&admin, &pod_ns, "pod-1").await;
    let blocks = Api::<IPBlock>::all(admin.clone());
    let selector = ListParams::default().labels(&format!("{LABEL_POOL}={}", label_value(&pool)));
    let containers = || async {
        let mut ids: Vec<String> = blocks
            .list(&selector)
            .await
            .unwrap()
            .items
            .iter()
            .flat_map(|b| b.spec.allocations.iter().map(|a| a.container_id.clone()))
            .collect();
        ids.sort();
        ids
    };
    let released = within(30, || async {
        let ids = containers().await;
        (ids == ["pod-2", "pod-3", "pod-4", "pod-5"]).then_some(())
    })
    .await;
    assert!(
        released.is_some(),
        "GC did not release pod-1's address: {:?}",
        containers().await
    );

    // Deletion: once the controller has put its finalizer on the pool (a replace, which
    // may first lose a race with its own status write), the pool waits for its last
    // allocations, then goes with its blocks.
    let finalized = within(20, || async {
        let p = pools.get(&pool).await.ok()?;
        p.finalizers()
            .iter()
            .any(|f| f == POOL_FINALIZER)
            .then_some(())
    })
    .await;
    assert!(
        finalized.is_some(),
        "the controller never put its finalizer on {pool}"
    );
    pools.delete(&pool, &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        pools.get_opt(&pool).await.unwrap().is_some(),
        "the pool went with allocations left"
    );
    for name in ["pod-2", "pod-3", "pod-4", "pod-5"] {
        let del = plugin(
            "DEL",
            &net,
            name,
            "eth0",
            &pod_args_for(&pod_ns, name, "", name),
        )
        .await;
        assert_eq!(del.code, 0, "DEL {name}: {:?}", del.result);
    }
    let gone = within(30, || async {
        let pool_gone = pools.get_opt(&pool).await.ok()?.is_none();
        let blocks_gone = blocks.list(&selector).await.ok()?.items.is_empty();
        (pool_gone && blocks_gone).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "the pool or its blocks stayed: {:?}",
        pools.get_opt(&pool).await
    );

    // Not one of their requests was refused (the emulator's request log).
    if let Some(emulator) = &h.cluster.emulator {
        let users = [
            format!("system:serviceaccount:{namespace}:{agent_sa}"),
            format!("system:serviceaccount:{namespace}:{controller_sa}"),
        ];
        let log = emulator.audit();
        for user in &users {
            assert!(
                log.iter().any(|e| &e.user == user),
                "{user} made no request"
            );
        }
        let refused: Vec<String> = log
            .iter()
            .filter(|e| users.contains(&e.user) && (e.code == 401 || e.code == 403))
            .map(|e| {
                format!(
                    "{} {} {} {:?}: {}",
                    e.user,
                    e.verb,
                    e.object_resource(),
                    e.name,
                    e.code
                )
            })
            .collect();
        assert!(refused.is_empty(), "refused requests: {refused:#?}");
    }

    // What the agent's token may not do.
    let agent_client = client_of(&agent_kubeconfig).await;
    let any_pool = IPPool::new(
        "rbac-probe",
        IPPoolSpec {
            cidr: "10.98.0.0/24".into(),
            ..Default::default()
        },
    );
    forbidden(
        "agent deletes a pool",
        Api::<IPPool>::all(agent_client.clone())
            .delete("rbac-probe", &DeleteParams::default())
            .await,
    );
    forbidden(
        "agent creates a pool",
        Api::<IPPool>::all(agent_client.clone())
            .create(&PostParams::default(), &any_pool)
            .await,
    );
    forbidden(
        "agent writes pool status",
        Api::<IPPool>::all(agent_client.clone())
            .patch_status(
                "rbac-probe",
                &PatchParams::default(),
                &Patch::Merge(json!({})),
            )
            .await,
    );
    forbidden(
        "agent deletes a block",
        Api::<IPBlock>::all(agent_client.clone())
            .delete("rbac-probe", &DeleteParams::default())
            .await,
    );
    forbidden(
        "agent reads a secret",
        Api::<Secret>::namespaced(agent_client.clone(), namespace)
            .get("anything")
            .await,
    );
    forbidden(
        "agent lists secrets",
        Api::<Secret>::all(agent_client.clone())
            .list(&ListParams::default())
            .await,
    );
    let pods = Api::<Pod>::namespaced(agent_client.clone(), &pod_ns);
    let probe: Pod = serde_json::from_value(json!({"metadata": {"name": "probe"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})).unwrap();
    forbidden(
        "agent creates a pod",
        pods.create(&PostParams::default(), &probe).await,
    );
    forbidden(
        "agent labels a pod",
        pods.patch(
            "pod-2",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await,
    );
    forbidden(
        "agent deletes a pod",
        pods.delete("pod-2", &DeleteParams::default()).await,
    );
    forbidden(
        "agent writes a Lease",
        Api::<Lease>::namespaced(agent_client.clone(), namespace)
            .delete(lease, &DeleteParams::default())
            .await,
    );
    // What pool choice needs, it may read.
    pods.get_metadata("pod-2")
        .await
        .expect("the agent reads pod metadata");

    // What the controller's token may not do.
    let controller_client = client_of(&controller_kubeconfig).await;
    forbidden(
        "controller reads a secret",
        Api::<Secret>::namespaced(controller_client.clone(), namespace)
            .get("anything")
            .await,
    );
    forbidden(
        "controller creates a pool",
        Api::<IPPool>::all(controller_client.clone())
            .create(&PostParams::default(), &any_pool)
            .await,
    );
    forbidden(
        "controller deletes a pod",
        Api::<Pod>::namespaced(controller_client.clone(), &pod_ns)
            .delete("pod-2", &DeleteParams::default())
            .await,
    );
    forbidden(
        "controller reads another Lease",
        Api::<Lease>::namespaced(controller_client.clone(), namespace)
            .get("someone-elses")
            .await,
    );
    forbidden(
        "controller writes Events elsewhere",
        Api::<Event>::namespaced(controller_client.clone(), namespace)
            .list(&ListParams::default())
            .await,
    );

    agent.kill().await;
    let _ = controller.child.kill().await;
}

/// Node-bound writes: every agent may update every IPBlock (a borrower writes into
/// another node's block), but the chart's ValidatingAdmissionPolicy lets an agent's
/// pod-bound token change only the records of its own node. Node B holds the pool's one
/// block; node A borrows from it. A frees its own borrowed address as usual; then A's
/// token, used by hand as a compromised node would, is refused every change to B's
/// records or to the block itself, and B's token is refused A's record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_changes_only_the_records_of_its_own_node() {
    let Some(helm) = chart::helm() else { return };
    let h = Harness::new().await;
    let admin = h.client();
    let r = install(&helm, &admin).await;
    let (node_a, node_b) = (
        test_support::unique("node-a"),
        test_support::unique("node-b"),
    );
    create_node(&admin, &node_a).await;
    create_node(&admin, &node_b).await;
    let kubeconfig_a = agent_kubeconfig(&h, &r, &node_a).await;
    let kubeconfig_b = agent_kubeconfig(&h, &r, &node_b).await;
    // One block only: whoever claims it first, the other node must borrow.
    let pool = h
        .pool(
            "bound",
            IPPoolSpec {
                cidr: "10.96.0.0/28".into(),
                block_size: Some(28),
                ..Default::default()
            },
        )
        .await;
    let mut agent_a = Agent::start(&kubeconfig_a, &node_a, h.dir.path()).await;
    let mut agent_b = Agent::start(&kubeconfig_b, &node_b, h.dir.path()).await;
    let net_a = network("pods", "1.1.0", &agent_a.socket, &[&pool]);
    let net_b = network("pods", "1.1.0", &agent_b.socket, &[&pool]);
    let pod_ns = test_support::namespace(&admin).await;
    let attach = |net: &Value, name: &'static str| {
        let (admin, pod_ns, net) = (admin.clone(), pod_ns.clone(), net.clone());
        async move {
            let uid = create_pod(&admin, &pod_ns, name).await;
            plugin(
                "ADD",
                &net,
                name,
                "eth0",
                &pod_args_for(&pod_ns, name, &uid, name),
            )
            .await
            .addresses()[0]
                .addr()
        }
    };
    attach(&net_b, "on-b").await;
    attach(&net_a, "borrowed-1").await;

    let blocks = Api::<IPBlock>::all(admin.clone());
    let selector = ListParams::default().labels(&format!("{LABEL_POOL}={}", label_value(&pool)));
    let block = blocks.list(&selector).await.unwrap().items.remove(0);
    let name = block.name_any();
    assert_eq!(block.spec.node, node_b, "B claimed the one block");
    let owners = |b: &IPBlock| -> Vec<(String, Option<String>)> {
        b.spec
            .allocations
            .iter()
            .map(|a| (a.container_id.clone(), a.node.clone()))
            .collect()
    };
    assert_eq!(
        owners(&block),
        [
            ("on-b".to_string(), None),
            ("borrowed-1".to_string(), Some(node_a.clone()))
        ],
        "A borrowed from B's block"
    );

    // A's own record in B's block is A's to release, and to take again.
    let del = plugin(
        "DEL",
        &net_a,
        "borrowed-1",
        "eth0",
        &pod_args_for(&pod_ns, "borrowed-1", "", "borrowed-1"),
    )
    .await;
    assert_eq!(
        del.code, 0,
        "A's DEL of its borrowed address: {:?}",
        del.result
    );
    attach(&net_a, "borrowed-2").await;

    // What a compromised node A tries with its token.
    let as_a = Api::<IPBlock>::all(client_of(&kubeconfig_a).await);
    let refused_by_policy = |what: &str, result: Result<IPBlock, kube::Error>, says: &str| {
        let status = refused(what, result);
        assert_eq!(status.code, 403, "{what}: {status:?}");
        assert!(
            status.message.contains("ValidatingAdmissionPolicy") && status.message.contains(says),
            "{what}: {status:?}"
        );
    };
    let current = blocks.get(&name).await.unwrap();
    let mut freed = current.clone();
    freed.spec.allocations.retain(|a| a.container_id != "on-b");
    refused_by_policy(
        "A frees B's address",
        as_a.replace(&name, &PostParams::default(), &freed).await,
        "may change only its own records",
    );
    let mut stolen = current.clone();
    for a in &mut stolen.spec.allocations {
        if a.container_id == "on-b" {
            a.node = Some(node_a.clone());
        }
    }
    refused_by_policy(
        "A takes B's record over",
        as_a.replace(&name, &PostParams::default(), &stolen).await,
        "may change only its own records",
    );
    let mut moved = current.clone();
    moved.spec.node = node_a.clone();
    refused_by_policy(
        "A takes B's block",
        as_a.replace(&name, &PostParams::default(), &moved).await,
        "may not change a block's node",
    );
    let mut unguarded = current.clone();
    unguarded.metadata.finalizers = None;
    refused_by_policy(
        "A strips B's block's finalizer",
        as_a.replace(&name, &PostParams::default(), &unguarded)
            .await,
        "finalizers",
    );
    let mut claim = current.clone();
    claim.metadata = kube::api::ObjectMeta {
        name: Some(format!("{pool}.10-96-0-16-28")),
        labels: current.metadata.labels.clone(),
        ..Default::default()
    };
    claim.spec.cidr = "10.96.0.16/28".parse().unwrap();
    claim.spec.allocations.clear();
    refused_by_policy(
        "A claims a block for B",
        as_a.create(&PostParams::default(), &claim).await,
        "may claim blocks only for its own node",
    );

    // And B, whose block it is, may not free A's borrowed address either.
    let as_b = Api::<IPBlock>::all(client_of(&kubeconfig_b).await);
    let mut evicted = blocks.get(&name).await.unwrap();
    evicted
        .spec
        .allocations
        .retain(|a| a.container_id != "borrowed-2");
    refused_by_policy(
        "B frees A's borrowed address",
        as_b.replace(&name, &PostParams::default(), &evicted).await,
        "may change only its own records",
    );

    // Nothing of it landed: both records stand as the agents wrote them.
    assert_eq!(
        owners(&blocks.get(&name).await.unwrap()),
        [
            ("on-b".to_string(), None),
            ("borrowed-2".to_string(), Some(node_a.clone()))
        ]
    );
    agent_a.kill().await;
    agent_b.kill().await;
    h.delete_pool(&pool).await;
}
