//! The agent's read caches: watches of the IPPools, of the IPBlocks affine to its node (and
//! those it borrowed from), the block index (the metadata of every IPBlock), and what pool
//! choice reads around an attachment: the metadata of the pods bound to this node, of the
//! namespaces, and of this node's Node.
//!
//! Caches only save reads. Every decision that writes is re-made on the object the write
//! swaps against, so a stale cache costs a conflict, never a wrong address. On a real
//! server each read costs a round trip; with these caches an ADD in steady state makes
//! one request, its (shared) write.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;

use crate::api::usage::summary_of_metadata;
use crate::api::{IPBlock, IPPool, LABEL_NODE, LABEL_POOL, borrower_label, label_value};
use crate::cluster::{drain, drop_managed_fields};
use ipledger_core::BlockSummary;

/// A deleted IPBlock: its name and UID.
pub type Deleted = (String, Option<String>);

/// Watch-fed copies of the pools and blocks.
#[derive(Clone)]
pub struct Caches {
    /// Every IPPool.
    pub pools: Store<IPPool>,
    /// IPBlocks labelled with this node.
    pub blocks: Store<IPBlock>,
    /// Other nodes' IPBlocks this node borrowed addresses from.
    pub borrowed: Store<IPBlock>,
    /// The metadata of every IPBlock: names, pools, nodes and usage annotations.
    pub index: Store<PartialObjectMeta<IPBlock>>,
    /// The metadata of the pods bound to this node: their annotations choose pools and
    /// addresses. Bounded by the node's pods, not the cluster's.
    pub pods: Store<PartialObjectMeta<Pod>>,
    /// The metadata of every namespace: annotations and labels for pool choice.
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// The metadata of this node's Node: its labels for `nodeSelector`.
    pub node: Store<PartialObjectMeta<Node>>,
}

impl Caches {
    /// Starts the watches; they run until the returned handles are dropped or aborted,
    /// re-listing with backoff after errors (and after `410 Gone`). Every IPBlock deletion
    /// the index watch sees is sent on the returned channel.
    pub fn start(
        client: &Client,
        node: &str,
    ) -> (
        Self,
        mpsc::UnboundedReceiver<Deleted>,
        Vec<tokio::task::JoinHandle<()>>,
    ) {
        let blocks_api = Api::<IPBlock>::all(client.clone());
        let (pools, pool_writer) = reflector::store();
        let pool_watch = reflector::reflector(
            pool_writer,
            watcher(
                Api::<IPPool>::all(client.clone()),
                watcher::Config::default(),
            )
            .modify(drop_managed_fields),
        );
        let (blocks, block_writer) = reflector::store();
        let block_config =
            watcher::Config::default().labels(&format!("{LABEL_NODE}={}", label_value(node)));
        let block_watch = reflector::reflector(
            block_writer,
            watcher(blocks_api.clone(), block_config).modify(drop_managed_fields),
        );
        let (borrowed, borrowed_writer) = reflector::store();
        let borrowed_config = watcher::Config::default().labels(&borrower_label(node));
        let borrowed_watch = reflector::reflector(
            borrowed_writer,
            watcher(blocks_api.clone(), borrowed_config).modify(drop_managed_fields),
        );
        // Metadata only: the index must stay small while every node's every write shows.
        let (index, index_writer) = reflector::store();
        let index_watch = reflector::reflector(
            index_writer,
            watcher(
                Api::<PartialObjectMeta<IPBlock>>::all(client.clone()),
                watcher::Config::default(),
            )
            .modify(drop_managed_fields),
        );
        // Metadata only, and only this node's pods: a real cluster's pod list is the
        // largest there is, and pool choice needs nothing but annotations.
        let (pods, pod_writer) = reflector::store();
        let pod_watch = reflector::reflector(
            pod_writer,
            watcher(
                Api::<PartialObjectMeta<Pod>>::all(client.clone()),
                watcher::Config::default().fields(&format!("spec.nodeName={node}")),
            )
            .modify(drop_managed_fields),
        );
        let (namespaces, namespace_writer) = reflector::store();
        let namespace_watch = reflector::reflector(
            namespace_writer,
            watcher(
                Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
                watcher::Config::default(),
            )
            .modify(drop_managed_fields),
        );
        let (node_store, node_writer) = reflector::store();
        let node_watch = reflector::reflector(
            node_writer,
            watcher(
                Api::<PartialObjectMeta<Node>>::all(client.clone()),
                watcher::Config::default().fields(&format!("metadata.name={node}")),
            )
            .modify(drop_managed_fields),
        );
        let (deleted, deletions) = mpsc::unbounded_channel();
        let tasks = vec![
            tokio::spawn(drain(pool_watch, "ippools", |_| {})),
            tokio::spawn(drain(block_watch, "ipblocks", |_| {})),
            tokio::spawn(drain(borrowed_watch, "ipblocks (borrowed)", |_| {})),
            tokio::spawn(drain(
                index_watch,
                "ipblocks (metadata)",
                move |event: watcher::Event<PartialObjectMeta<IPBlock>>| {
                    if let watcher::Event::Delete(gone) = event {
                        let _ = deleted.send((gone.name_any(), gone.uid()));
                    }
                },
            )),
            tokio::spawn(drain(pod_watch, "pods (metadata)", |_| {})),
            tokio::spawn(drain(namespace_watch, "namespaces (metadata)", |_| {})),
            tokio::spawn(drain(node_watch, "nodes (metadata)", |_| {})),
        ];
        let caches = Self {
            pools,
            blocks,
            borrowed,
            index,
            pods,
            namespaces,
            node: node_store,
        };
        (caches, deletions, tasks)
    }

    /// Waits until every watch has listed once.
    pub async fn ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.pools.wait_until_ready().await?;
        self.blocks.wait_until_ready().await?;
        self.borrowed.wait_until_ready().await?;
        self.index.wait_until_ready().await?;
        self.pods.wait_until_ready().await?;
        self.namespaces.wait_until_ready().await?;
        self.node.wait_until_ready().await
    }

    /// The cached metadata of pod `namespace/name`; with `uid`, only of that pod (not of
    /// an earlier one of the same name).
    pub fn pod(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Option<Arc<PartialObjectMeta<Pod>>> {
        self.pods
            .get(&reflector::ObjectRef::new(name).within(namespace))
            .filter(|pod| uid.is_none_or(|uid| pod.uid().as_deref() == Some(uid)))
    }

    /// The cached metadata of namespace `name`.
    pub fn namespace(&self, name: &str) -> Option<Arc<PartialObjectMeta<Namespace>>> {
        self.namespaces.get(&reflector::ObjectRef::new(name))
    }

    /// The cached metadata of this node's Node.
    pub fn node(&self) -> Option<Arc<PartialObjectMeta<Node>>> {
        self.node.state().into_iter().next()
    }

    /// The cached pool named `name`.
    pub fn pool(&self, name: &str) -> Option<Arc<IPPool>> {
        self.pools.get(&reflector::ObjectRef::new(name))
    }

    /// The index's summaries of `pool`'s blocks as `node` sees them; `None` when a block of
    /// the pool carries no usage annotations (an older agent wrote it): only reading the
    /// blocks can tell then.
    pub fn pool_summaries(&self, pool: &str, node: &str) -> Option<Vec<BlockSummary>> {
        let value = label_value(pool);
        self.index
            .state()
            .iter()
            .filter(|b| b.labels().get(LABEL_POOL) == Some(&value))
            .map(|b| summary_of_metadata(&b.metadata, node))
            .collect()
    }

    /// How many blocks of `pool` the index shows.
    pub fn pool_block_count(&self, pool: &str) -> u128 {
        let value = label_value(pool);
        self.index
            .state()
            .iter()
            .filter(|b| b.labels().get(LABEL_POOL) == Some(&value))
            .count() as u128
    }

    /// The index's entry of block `name`, when it has one.
    pub fn indexed(&self, name: &str) -> bool {
        self.index.get(&reflector::ObjectRef::new(name)).is_some()
    }
}
