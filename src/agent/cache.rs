//! The agent's read caches: watches of the IPPools, of the IPBlocks affine to its node (and
//! those it borrowed from), and the block index: the metadata of every IPBlock.
//!
//! Caches only save reads. Every decision that writes is re-made on the object the write
//! swaps against, so a stale cache costs a conflict, never a wrong address.

use std::sync::Arc;

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
        ];
        let caches = Self {
            pools,
            blocks,
            borrowed,
            index,
        };
        (caches, deletions, tasks)
    }

    /// Waits until every watch has listed once.
    pub async fn ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.pools.wait_until_ready().await?;
        self.blocks.wait_until_ready().await?;
        self.borrowed.wait_until_ready().await?;
        self.index.wait_until_ready().await
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

    /// The index's entry of block `name`, when it has one.
    pub fn indexed(&self, name: &str) -> bool {
        self.index.get(&reflector::ObjectRef::new(name)).is_some()
    }
}
