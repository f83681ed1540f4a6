//! The harness of the allocation-path tests: a cluster with ipledger's CRDs, agents and
//! the ledger as the API holds it.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipledger::api::{IPBlock, IPPool, IPPoolSpec, LABEL_NODE, LABEL_POOL, label_value};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

use super::node::Agent;

/// A cluster with ipledger's CRDs, a kubeconfig file for agent processes, and a
/// directory for sockets.
pub struct Harness {
    pub cluster: test_support::Cluster,
    pub kubeconfig: PathBuf,
    pub dir: tempfile::TempDir,
    /// A kubeconfig per user of [`Harness::with_users`]; empty against a real cluster.
    pub users: BTreeMap<String, PathBuf>,
}

/// The bearer token the emulator knows a [`Harness::with_users`] user by.
fn token_of(user: &str) -> String {
    format!("ipledger-test-{user}")
}

impl Harness {
    pub async fn new() -> Harness {
        Harness::with_users(&[]).await
    }

    /// A harness whose emulator also authenticates `users`, each with a token and a
    /// kubeconfig of its own ([`Harness::kubeconfig_of`]), so that processes started with
    /// them are told apart in the emulator's audit log. A real cluster's users cannot be
    /// made here: there `users` is empty, and a test that needs them skips.
    pub async fn with_users(users: &[&str]) -> Harness {
        let mut config = kube_emulator::Config::default();
        for user in users {
            config.tokens.insert(token_of(user), user.to_string());
        }
        let cluster = test_support::cluster_with(config).await;
        super::install_crds(&cluster.client).await;
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
        let mut kubeconfigs = BTreeMap::new();
        if let Some(emulator) = &cluster.emulator {
            for user in users {
                let path = dir.path().join(format!("kubeconfig-{user}"));
                emulator
                    .write_kubeconfig_with_token(&path, &token_of(user))
                    .unwrap();
                kubeconfigs.insert(user.to_string(), path);
            }
        }
        Harness {
            cluster,
            kubeconfig,
            dir,
            users: kubeconfigs,
        }
    }

    /// The kubeconfig of a [`Harness::with_users`] user (`None` against a real cluster).
    pub fn kubeconfig_of(&self, user: &str) -> Option<&Path> {
        self.users.get(user).map(PathBuf::as_path)
    }

    pub fn client(&self) -> Client {
        self.cluster.client.clone()
    }

    pub async fn agent(&self, node: &str) -> Agent {
        Agent::start(&self.kubeconfig, node, self.dir.path()).await
    }

    /// An agent whose CNI GC spares nothing for its age: the runtime's list is taken to
    /// postdate every ADD.
    pub async fn agent_without_gc_grace(&self, node: &str) -> Agent {
        Agent::start_with(
            &self.kubeconfig,
            node,
            self.dir.path(),
            &["--cni-gc-grace", "0s"],
        )
        .await
    }

    /// Creates a pool and returns its (unique) name.
    pub async fn pool(&self, prefix: &str, spec: IPPoolSpec) -> String {
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
    pub async fn ledger(&self, pool: &str) -> Vec<(IpAddr, String, String)> {
        let blocks = Api::<IPBlock>::all(self.client())
            .list(&ListParams::default().labels(&format!("{LABEL_POOL}={}", label_value(pool))))
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

    /// Makes the agents' watch caches lag the ledger for a while: the history is compacted
    /// and every watch dropped, so each watch gets 410 Gone on re-watching and re-lists only
    /// after kube-runtime's backoff (0.8 s at least). A real API server's watch lags the same
    /// way under load, or while the agent reconnects.
    pub async fn break_watches(&self) {
        let faults = self
            .cluster
            .emulator
            .as_ref()
            .expect("the emulator")
            .faults();
        // A watch that has seen every change may go on from the newest version even after
        // compaction; one unrelated write puts every agent watch one version behind (until
        // its next bookmark, a second away).
        let unrelated: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(
            serde_json::json!({"metadata": {"name": test_support::unique("bump")}}),
        )
        .unwrap();
        Api::default_namespaced(self.client())
            .create(&PostParams::default(), &unrelated)
            .await
            .unwrap();
        faults.compact();
        faults.drop_watches();
        // Long enough for the re-watch to meet its 410, well inside the backoff.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// Test clean-up: deletes the pool and its blocks, records and all. The finalizers
    /// that keep held addresses from being erased are stripped first, as only a test
    /// that is done with the addresses may (no controller runs in most tests).
    pub async fn delete_pool(&self, name: &str) {
        let blocks = Api::<IPBlock>::all(self.client());
        let selector = ListParams::default().labels(&format!("{LABEL_POOL}={}", label_value(name)));
        let unfinalized = Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}}));
        let patch = PatchParams::default();
        if let Ok(list) = blocks.list_metadata(&selector).await {
            for block in list.items {
                let _ = blocks
                    .patch_metadata(&block.name_any(), &patch, &unfinalized)
                    .await;
            }
        }
        let _ = blocks
            .delete_collection(&DeleteParams::default(), &selector)
            .await;
        let pools = Api::<IPPool>::all(self.client());
        let _ = pools.patch_metadata(name, &patch, &unfinalized).await;
        let _ = pools.delete(name, &DeleteParams::default()).await;
    }
}

pub fn v4_pool(cidr: &str, block_size: u8) -> IPPoolSpec {
    IPPoolSpec {
        cidr: cidr.into(),
        block_size: Some(block_size),
        reuse_cooldown_seconds: Some(0),
        ..Default::default()
    }
}

pub fn pod_args(name: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID=x{name}"
    )
}

pub fn duplicates(records: &[(IpAddr, String, String)]) -> Vec<IpAddr> {
    let mut seen = HashSet::new();
    records
        .iter()
        .filter(|r| !seen.insert(r.0))
        .map(|r| r.0)
        .collect()
}

/// The addresses the pool's ledger records for the attachment with containerID `id`.
pub async fn held_by(h: &Harness, pool: &str, id: &str) -> Vec<IpAddr> {
    let mut held: Vec<IpAddr> = h
        .ledger(pool)
        .await
        .into_iter()
        .filter(|r| r.1 == id)
        .map(|r| r.0)
        .collect();
    held.sort();
    held
}
