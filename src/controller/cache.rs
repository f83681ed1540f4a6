//! The controller's read caches: watches of the IPPools, the IPBlocks, and the metadata of
//! pods and nodes (metadata only, so memory stays small with 110,000 pods).
//!
//! As in the agent, caches only save reads: every write swaps against the object it
//! changes, and a release is re-checked with a direct read first.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{mpsc, watch};

use crate::api::{IPBlock, IPPool};
use crate::cluster::{drain, drop_managed_fields};

/// A pod that was deleted: namespace and name.
pub type GonePod = (String, String);

/// Watch-fed copies of what the reconcilers decide on.
#[derive(Clone)]
pub struct Caches {
    /// Every IPPool.
    pub pools: Store<IPPool>,
    /// Every IPBlock, records included.
    pub blocks: Store<IPBlock>,
    /// The metadata of every pod.
    pub pods: Store<PartialObjectMeta<Pod>>,
    /// The metadata of every node.
    pub nodes: Store<PartialObjectMeta<Node>>,
    /// Marked changed on every change of a pool or a block; each reconciler subscribes.
    pub changed: Arc<watch::Sender<()>>,
}

/// What the watches report beyond the caches.
pub struct Feeds {
    /// Every pod deletion the pod watch sees.
    pub gone_pods: mpsc::UnboundedReceiver<GonePod>,
    /// Every node deletion the node watch sees, by name.
    pub gone_nodes: mpsc::UnboundedReceiver<String>,
}

impl Caches {
    /// Starts the watches; they run until the returned handles are aborted, re-listing
    /// with backoff after errors.
    pub fn start(client: &Client) -> (Self, Feeds, Vec<tokio::task::JoinHandle<()>>) {
        let changed = Arc::new(watch::Sender::new(()));
        let (pools, pool_writer) = reflector::store();
        let pool_watch = reflector::reflector(
            pool_writer,
            watcher(Api::<IPPool>::all(client.clone()), Default::default())
                .modify(drop_managed_fields),
        );
        let (blocks, block_writer) = reflector::store();
        let block_watch = reflector::reflector(
            block_writer,
            watcher(Api::<IPBlock>::all(client.clone()), Default::default())
                .modify(drop_managed_fields),
        );
        let (pods, pod_writer) = reflector::store();
        let pod_watch = reflector::reflector(
            pod_writer,
            watcher(
                Api::<PartialObjectMeta<Pod>>::all(client.clone()),
                Default::default(),
            )
            .modify(drop_managed_fields),
        );
        let (nodes, node_writer) = reflector::store();
        let node_watch = reflector::reflector(
            node_writer,
            watcher(
                Api::<PartialObjectMeta<Node>>::all(client.clone()),
                Default::default(),
            )
            .modify(drop_managed_fields),
        );
        let (pod_gone, gone_pods) = mpsc::unbounded_channel();
        let (node_gone, gone_nodes) = mpsc::unbounded_channel();
        let (on_pool, on_block) = (changed.clone(), changed.clone());
        let tasks = vec![
            tokio::spawn(drain(pool_watch, "ippools", move |_| {
                on_pool.send_replace(());
            })),
            tokio::spawn(drain(block_watch, "ipblocks", move |_| {
                on_block.send_replace(());
            })),
            tokio::spawn(drain(
                pod_watch,
                "pods (metadata)",
                move |event: watcher::Event<PartialObjectMeta<Pod>>| {
                    if let watcher::Event::Delete(pod) = event {
                        let namespace = pod.metadata.namespace.unwrap_or_default();
                        let name = pod.metadata.name.unwrap_or_default();
                        let _ = pod_gone.send((namespace, name));
                    }
                },
            )),
            tokio::spawn(drain(
                node_watch,
                "nodes (metadata)",
                move |event: watcher::Event<PartialObjectMeta<Node>>| {
                    if let watcher::Event::Delete(node) = event {
                        let _ = node_gone.send(node.metadata.name.unwrap_or_default());
                    }
                },
            )),
        ];
        let caches = Self {
            pools,
            blocks,
            pods,
            nodes,
            changed,
        };
        (
            caches,
            Feeds {
                gone_pods,
                gone_nodes,
            },
            tasks,
        )
    }

    /// Waits until every watch has listed once.
    pub async fn ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.pools.wait_until_ready().await?;
        self.blocks.wait_until_ready().await?;
        self.pods.wait_until_ready().await?;
        self.nodes.wait_until_ready().await
    }
}
