//! The agent's read caches: watches of the IPPools and of the IPBlocks affine to its node.
//!
//! Caches only save reads. Every decision that writes is re-made on the object the write
//! swaps against, so a stale cache costs a conflict, never a wrong address.

use std::sync::Arc;

use futures::StreamExt;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};

use crate::api::borrower_label;
use crate::api::{IPBlock, IPPool, LABEL_NODE};

/// Watch-fed copies of the pools and of this node's blocks.
#[derive(Clone)]
pub struct Caches {
    /// Every IPPool.
    pub pools: Store<IPPool>,
    /// IPBlocks labelled with this node.
    pub blocks: Store<IPBlock>,
    /// Other nodes' IPBlocks this node borrowed addresses from.
    pub borrowed: Store<IPBlock>,
}

impl Caches {
    /// Starts the watches; they run until the returned handles are dropped or aborted,
    /// re-listing with backoff after errors (and after `410 Gone`).
    pub fn start(client: &Client, node: &str) -> (Self, Vec<tokio::task::JoinHandle<()>>) {
        let (pools, pool_writer) = reflector::store();
        let (blocks, block_writer) = reflector::store();
        let pool_watch = reflector::reflector(
            pool_writer,
            watcher(
                Api::<IPPool>::all(client.clone()),
                watcher::Config::default(),
            ),
        )
        .default_backoff()
        .applied_objects();
        let block_config = watcher::Config::default().labels(&format!("{LABEL_NODE}={node}"));
        let block_watch = reflector::reflector(
            block_writer,
            watcher(Api::<IPBlock>::all(client.clone()), block_config),
        )
        .default_backoff()
        .applied_objects();
        let (borrowed, borrowed_writer) = reflector::store();
        let borrowed_config = watcher::Config::default().labels(&borrower_label(node));
        let borrowed_watch = reflector::reflector(
            borrowed_writer,
            watcher(Api::<IPBlock>::all(client.clone()), borrowed_config),
        )
        .default_backoff()
        .applied_objects();
        let tasks = vec![
            tokio::spawn(drain(pool_watch, "ippools")),
            tokio::spawn(drain(block_watch, "ipblocks")),
            tokio::spawn(drain(borrowed_watch, "ipblocks (borrowed)")),
        ];
        (
            Self {
                pools,
                blocks,
                borrowed,
            },
            tasks,
        )
    }

    /// Waits until both watches have listed once.
    pub async fn ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.pools.wait_until_ready().await?;
        self.blocks.wait_until_ready().await?;
        self.borrowed.wait_until_ready().await
    }

    /// The cached pool named `name`.
    pub fn pool(&self, name: &str) -> Option<Arc<IPPool>> {
        self.pools.get(&reflector::ObjectRef::new(name))
    }
}

async fn drain<S, K>(stream: S, what: &'static str)
where
    S: futures::Stream<Item = Result<K, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        if let Err(error) = event {
            tracing::warn!(resource = what, %error, "watch failed; retrying with backoff");
        }
    }
}
