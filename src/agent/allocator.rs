//! What every verb of the agent shares: the pool models, the blocks this node writes to
//! (its own and those it borrowed from) and how a change reaches a block's writer.
//!
//! Each verb has its module (`add`, `del`, `check`, `gc`, `status`); the decisions they
//! take are the core's, the writes the ledger's.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use futures::future::join_all;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::agent::cache::Caches;
use crate::agent::error::AgentError;
use crate::agent::pool_choice::overlapped_by;
use crate::api::usage::summary_of;
use crate::api::{IPBlock, IPBlockSpec, IPPool};
use crate::ledger::RetryPolicy;
use crate::ledger::blocks::{Claim, claim_block, pool_blocks};
use crate::ledger::writer::{CommitError, PoolEntry, PoolLookup, Writers};
use crate::metrics::{AgentMetrics, WriteLabels};
use ipledger_core::{AllocError, Attachment, Block, BlockSummary, Change, Outcome, Pool};

/// The agent's allocation logic, shared by every request.
pub struct Allocator {
    pub(super) node: String,
    pub(super) client: Client,
    pub(super) blocks: Api<IPBlock>,
    pub(super) caches: Caches,
    pub(super) writers: Writers,
    pub(super) pools: Arc<PoolModels>,
    /// Blocks this agent claimed, until its watch cache shows them.
    claimed: Mutex<BTreeMap<String, Arc<IPBlock>>>,
    /// Attachments with an ADD in progress, and how many: CNI GC spares them.
    adding: Mutex<HashMap<Attachment, usize>>,
    /// CNI GC spares allocations younger than this.
    pub(super) gc_grace: std::time::Duration,
    /// One claim at a time per pool on this node: fifty pods starting together need one
    /// new block, not fifty.
    claim_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Pools with a claim ahead running.
    pub(super) claiming_ahead: Mutex<std::collections::HashSet<String>>,
    pub(super) metrics: AgentMetrics,
}

/// A pool model and the resourceVersion of the object it was parsed from.
type ParsedPool = (Option<String>, Arc<Pool>);

/// Parsed pool models, re-parsed only when the pool object changes.
pub struct PoolModels {
    caches: Caches,
    parsed: Mutex<HashMap<String, ParsedPool>>,
}

impl PoolModels {
    /// The pool `name` from the cache, and its validated model.
    pub fn get(&self, name: &str) -> Result<(Arc<IPPool>, Arc<Pool>), AgentError> {
        let object = self.caches.pool(name).ok_or_else(|| {
            AgentError::Unavailable(format!(
                "IPPool {name} is not (or no longer) known to this agent"
            ))
        })?;
        let version = object.resource_version();
        let mut parsed = self.parsed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, model)) = parsed.get(name)
            && *seen == version
        {
            return Ok((object, model.clone()));
        }
        let model = Arc::new(Pool::try_from(&*object)?);
        parsed.insert(name.to_string(), (version, model.clone()));
        Ok((object, model))
    }
}

impl Allocator {
    /// An allocator for `node`, writing through `client`.
    pub fn new(
        node: String,
        client: Client,
        caches: Caches,
        policy: RetryPolicy,
        gc_grace: std::time::Duration,
        metrics: AgentMetrics,
    ) -> Self {
        let blocks = Api::<IPBlock>::all(client.clone());
        let pools = Arc::new(PoolModels {
            caches: caches.clone(),
            parsed: Mutex::default(),
        });
        let lookup_models = pools.clone();
        let lookup: PoolLookup = Arc::new(move |name: &str| {
            lookup_models
                .get(name)
                .map(|(object, model)| PoolEntry {
                    uid: object.uid(),
                    model,
                })
                .map_err(|e| match e {
                    AgentError::InvalidPool(e) => CommitError::InvalidPool(e),
                    _ => CommitError::UnknownPool {
                        pool: name.to_string(),
                    },
                })
        });
        let writers = Writers::new(blocks.clone(), lookup, policy, metrics.clone());
        Self {
            node,
            client,
            blocks,
            caches,
            writers,
            pools,
            claimed: Mutex::default(),
            adding: Mutex::default(),
            gc_grace,
            claim_locks: Mutex::default(),
            claiming_ahead: Mutex::default(),
            metrics,
        }
    }

    /// Claims block `cidr` of `pool` for this node by creating its IPBlock.
    ///
    /// A claim is the moment a pool starts to hand out a range: the overlap rule is
    /// checked again on a fresh list of the pools, so that a watch lagging behind an older
    /// overlapping pool's creation cannot let this one take its addresses.
    pub(super) async fn claim(
        &self,
        object: &IPPool,
        pool: &Pool,
        cidr: IpNet,
    ) -> Result<Claim, AgentError> {
        let name = pool.block_name(&cidr);
        let fresh = Api::<IPPool>::all(self.client.clone())
            .list(&Default::default())
            .await?;
        // The block's owner must be the pool as it is now: a block owned by a deleted
        // pool of the same name would be garbage-collected with the addresses in it.
        let current = fresh.items.iter().find(|p| p.name_any() == pool.name());
        if current.and_then(|p| p.uid()) != object.uid() {
            return Err(AgentError::Unavailable(format!(
                "IPPool {} was deleted or re-created; this agent's cache is catching up",
                pool.name()
            )));
        }
        if let Some(older) = overlapped_by(object, &fresh.items) {
            return Err(AgentError::Shadowed {
                pool: pool.name().to_string(),
                older,
            });
        }
        self.metrics
            .api_writes
            .get_or_create(&WriteLabels {
                operation: "create".into(),
            })
            .inc();
        let claim = claim_block(&self.blocks, &name, object, cidr, &self.node).await?;
        if let Claim::Won(block) = &claim {
            tracing::info!(block = %name, pool = pool.name(), %cidr, "claimed block");
            // Until the watch shows the new block, this is how DEL and ADD find it.
            self.claimed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name, Arc::new((**block).clone()));
        }
        Ok(claim)
    }

    /// Submits `change` to the writer of `block`. A block found deleted is forgotten at
    /// once, so that the next request claims afresh instead of failing on it again.
    pub(super) async fn submit(
        &self,
        block: &IPBlock,
        change: Change,
    ) -> Result<Outcome, AgentError> {
        let answer = self.writers.of(block).submit(change).await;
        if let Err(CommitError::Gone { block }) = &answer {
            self.forget(block, None);
        }
        Ok(answer?)
    }

    /// Submits `change` to the block `name`, known only from the block index.
    pub(super) async fn submit_named(
        &self,
        name: &str,
        change: Change,
    ) -> Result<Outcome, AgentError> {
        let answer = match self
            .known_blocks(None)
            .iter()
            .find(|b| b.name_any() == name)
        {
            Some(block) => self.writers.of(block),
            None => self.writers.named(name),
        }
        .submit(change)
        .await;
        if let Err(CommitError::Gone { block }) = &answer {
            self.forget(block, None);
        }
        Ok(answer?)
    }

    /// Submits `change` to every block that may hold this node's allocations: its own and
    /// those it borrowed from. Returns what was released and the failures.
    pub(super) async fn submit_everywhere(
        &self,
        change: &Change,
    ) -> (Vec<(Attachment, IpAddr)>, Vec<String>) {
        self.submit_to(self.known_blocks(None), change).await
    }

    /// Submits `change` to each of `blocks` at once; returns what was released and the
    /// failures.
    pub(super) async fn submit_to(
        &self,
        blocks: Vec<Arc<IPBlock>>,
        change: &Change,
    ) -> (Vec<(Attachment, IpAddr)>, Vec<String>) {
        let answers = join_all(blocks.iter().map(|b| self.submit(b, change.clone()))).await;
        let mut released = Vec::new();
        let mut failures = Vec::new();
        for (block, answer) in blocks.iter().zip(answers) {
            match answer {
                Ok(Outcome::Released(ips)) => released.extend(ips),
                Ok(_) => {}
                // A block deleted meanwhile holds nothing any more (submit forgot it).
                Err(AgentError::BlockGone(_)) => {}
                Err(e) => failures.push(format!("IPBlock {}: {e}", block.name_any())),
            }
        }
        (released, failures)
    }

    /// The block `name`: this agent's freshest copy, or read from the API.
    pub(super) async fn block_named(&self, name: &str) -> Result<Option<Arc<IPBlock>>, AgentError> {
        if let Some(block) = self
            .known_blocks(None)
            .into_iter()
            .find(|b| b.name_any() == name)
        {
            return Ok(Some(block));
        }
        Ok(self.blocks.get_opt(name).await?.map(Arc::new))
    }

    /// The blocks this agent writes to (its own and those it borrowed from), optionally of
    /// one pool only, in name order.
    pub(super) fn known_blocks(&self, pool: Option<&str>) -> Vec<Arc<IPBlock>> {
        let cached: Vec<Arc<IPBlock>> = self
            .caches
            .blocks
            .state()
            .into_iter()
            .chain(self.caches.borrowed.state())
            .collect();
        let mut by_name = {
            let mut claimed = self.claimed.lock().unwrap_or_else(|p| p.into_inner());
            // Handed over: the watch cache shows the claimed block now.
            claimed.retain(|name, claim| {
                !cached
                    .iter()
                    .any(|b| b.name_any() == *name && b.uid() == claim.uid())
            });
            claimed.clone()
        };
        for block in cached {
            by_name.insert(block.name_any(), block);
        }
        by_name
            .into_values()
            .filter(|b| pool.is_none_or(|p| b.spec.pool == p))
            .collect()
    }

    /// Reads afresh the blocks of `pool` whose writer holds no copy because its last write
    /// failed: a write whose answer was lost may have landed, and the watch cache may lag
    /// behind it. Deciding "already held" and "room" on the cache would then give the
    /// attachment a second address.
    pub(super) async fn reread_unsure_blocks(&self, pool: &str) -> Result<(), AgentError> {
        for block in self.known_blocks(Some(pool)) {
            let name = block.name_any();
            if !matches!(self.writers.knowledge(&name), Some(None)) {
                continue;
            }
            match self.blocks.get_opt(&name).await? {
                Some(object) => self.writers.offer(&name, object),
                None => self.forget(&name, None),
            }
        }
        Ok(())
    }

    /// The freshest copy of `block` at hand: what its writer wrote last, else `block`.
    pub(super) fn freshest(&self, block: &Arc<IPBlock>) -> Arc<IPBlock> {
        self.writers
            .latest(&block.name_any())
            .unwrap_or_else(|| block.clone())
    }

    /// The freshest model of `block`: the copy its writer wrote last, else `block`.
    /// A record that does not parse is answered by the writer itself (as corrupt, code
    /// 11) when a change reaches it; read-only lookups skip it.
    pub(super) fn latest(&self, block: &Arc<IPBlock>) -> Option<Block> {
        Block::try_from(&self.freshest(block).spec).ok()
    }

    /// Stops tracking a deleted block; with `uid`, only the copies of that object (a
    /// deletion seen late must not forget the block claimed again under its name).
    pub fn forget(&self, name: &str, uid: Option<&str>) {
        {
            let mut claimed = self.claimed.lock().unwrap_or_else(|p| p.into_inner());
            if claimed
                .get(name)
                .is_some_and(|c| uid.is_none() || c.uid().as_deref() == uid)
            {
                claimed.remove(name);
            }
        }
        self.writers.forget(name, uid);
    }

    /// Stops the idle writers of blocks this agent no longer writes to (returned borrows,
    /// deleted blocks), so that memory follows the blocks in use. A writer whose copy
    /// holds this node's addresses stays even when no cache shows the block yet: its copy
    /// is how a repeated ADD finds the address.
    pub fn sweep(&self) {
        let known: std::collections::HashSet<String> = self
            .known_blocks(None)
            .iter()
            .map(|b| b.name_any())
            .collect();
        self.writers.retain(|name, copy| {
            known.contains(name)
                || copy.spec.node == self.node
                || copy
                    .spec
                    .allocations
                    .iter()
                    .any(|a| a.node.as_deref() == Some(&self.node))
        });
    }

    /// How many block writers run (for the memory benchmark and metrics).
    pub fn writers(&self) -> usize {
        self.writers.len()
    }

    /// The pool's blocks as the block index summarizes them, with this agent's freshest
    /// copies of its own blocks in place of their entries. Reads the pool's blocks only
    /// when a block lacks usage annotations (written by an older agent).
    pub(super) async fn summaries(&self, pool: &str) -> Result<Vec<BlockSummary>, AgentError> {
        let mut summaries = match self.caches.pool_summaries(pool, &self.node) {
            Some(summaries) => summaries,
            None => pool_blocks(&self.blocks, pool)
                .await?
                .iter()
                .map(|b| summary_of(b, &self.node))
                .collect(),
        };
        for block in self.known_blocks(Some(pool)) {
            let fresh = summary_of(&self.freshest(&block), &self.node);
            match summaries.iter_mut().find(|s| s.name == fresh.name) {
                Some(entry) => *entry = fresh,
                None => summaries.push(fresh),
            }
        }
        Ok(summaries)
    }

    /// Marks an ADD of `attachment` in progress until the guard is dropped.
    pub(super) fn adding(&self, attachment: &Attachment) -> AddInProgress<'_> {
        *self
            .adding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(attachment.clone())
            .or_default() += 1;
        AddInProgress {
            allocator: self,
            attachment: attachment.clone(),
        }
    }

    /// The attachments of `network` with an ADD in progress: (containerID, ifName).
    pub(super) fn adds_in_progress(&self, network: &str) -> Vec<(String, String)> {
        self.adding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .filter(|a| a.network() == network)
            .map(|a| (a.container_id().to_string(), a.if_name().to_string()))
            .collect()
    }

    pub(super) fn borrower_of(&self, block: &IPBlock) -> Option<String> {
        (block.spec.node != self.node).then(|| self.node.clone())
    }

    pub(super) fn claim_lock(&self, pool: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.claim_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(pool.to_string())
            .or_default()
            .clone()
    }

    /// The node's labels: from the watch cache, else (the Node not listed yet, or
    /// missing) one GET of its metadata.
    pub(super) async fn node_labels(&self) -> Result<BTreeMap<String, String>, AgentError> {
        if let Some(node) = self.caches.node() {
            return Ok(node.labels().clone());
        }
        self.metrics.cache_misses.inc();
        let node = Api::<Node>::all(self.client.clone())
            .get_metadata_opt(&self.node)
            .await?;
        Ok(node.map(|n| n.labels().clone()).unwrap_or_default())
    }
}

/// An ADD in progress; dropping it ends it.
pub(super) struct AddInProgress<'a> {
    allocator: &'a Allocator,
    attachment: Attachment,
}

impl Drop for AddInProgress<'_> {
    fn drop(&mut self) {
        let mut adding = self
            .allocator
            .adding
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = adding.get_mut(&self.attachment) {
            *count -= 1;
            if *count == 0 {
                adding.remove(&self.attachment);
            }
        }
    }
}

/// Whether the ledger record holds an address for `attachment`.
pub(super) fn holds(spec: &IPBlockSpec, attachment: &Attachment) -> bool {
    spec.allocations.iter().any(|r| {
        r.container_id == attachment.container_id()
            && r.if_name == attachment.if_name()
            && r.network == attachment.network()
    })
}

/// What a search knows of block `cidr` once a claim found it taken by another node: full,
/// until the index shows what it holds.
pub(super) fn taken(pool: &Pool, cidr: IpNet) -> BlockSummary {
    BlockSummary {
        name: pool.block_name(&cidr),
        cidr,
        mine: false,
        in_use: pool.block_capacity(&cidr),
        released: 0,
        last_release: None,
    }
}

/// Allocatable addresses of the block not held (cooling-down ones included).
pub(super) fn room(pool: &Pool, spec: &IPBlockSpec) -> u128 {
    pool.block_capacity(&spec.cidr)
        .saturating_sub(spec.allocations.len() as u128)
}

/// The address an allocation got, `None` when the block was full (try the next one), or
/// the refusal.
pub(super) fn allocated(outcome: Outcome) -> Result<Option<IpAddr>, AgentError> {
    match outcome {
        Outcome::Allocated(ip) => Ok(Some(ip)),
        // A full block, or one of a deleted pool that is about to go: try the next one.
        Outcome::Refused(AllocError::BlockFull { .. } | AllocError::WrongPool { .. }) => Ok(None),
        Outcome::Refused(e) => Err(e.into()),
        Outcome::Released(_) => unreachable_outcome(),
    }
}

pub(super) fn unreachable_outcome<T>() -> Result<T, AgentError> {
    Err(AgentError::Corrupt(
        "a block writer answered an allocation with a release".into(),
    ))
}
