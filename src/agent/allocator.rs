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
use crate::api::{IPBlock, IPBlockSpec, IPPool};
use crate::ledger::RetryPolicy;
use crate::ledger::blocks::{Claim, claim_block};
use crate::ledger::writer::{CommitError, PoolLookup, Writers};
use crate::metrics::{AgentMetrics, WriteLabels};
use ipledger_core::{AllocError, Attachment, Block, Change, Outcome, Pool};

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
    /// One claim at a time per pool on this node: fifty pods starting together need one
    /// new block, not fifty.
    claim_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    metrics: AgentMetrics,
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
                .map(|(_, model)| model)
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
            claim_locks: Mutex::default(),
            metrics,
        }
    }

    /// Claims block `cidr` of `pool` for this node by creating its IPBlock.
    pub(super) async fn claim(
        &self,
        object: &IPPool,
        pool: &Pool,
        cidr: IpNet,
    ) -> Result<Claim, AgentError> {
        let name = pool.block_name(&cidr);
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

    pub(super) async fn submit(
        &self,
        block: &IPBlock,
        change: Change,
    ) -> Result<Outcome, AgentError> {
        Ok(self.writers.of(block).submit(change).await?)
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
                // A block deleted meanwhile holds nothing any more: stop tracking it.
                Err(AgentError::BlockGone(_)) => self.forget(&block.name_any()),
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
        let mut by_name = self
            .claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for block in self
            .caches
            .blocks
            .state()
            .into_iter()
            .chain(self.caches.borrowed.state())
        {
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
                None => self.forget(&name),
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

    /// Stops tracking a deleted block.
    pub(super) fn forget(&self, name: &str) {
        self.claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        self.writers.forget(name);
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

    pub(super) async fn node_labels(&self) -> Result<BTreeMap<String, String>, AgentError> {
        let node = Api::<Node>::all(self.client.clone())
            .get_opt(&self.node)
            .await?;
        Ok(node.map(|n| n.labels().clone()).unwrap_or_default())
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
        Outcome::Refused(AllocError::BlockFull { .. }) => Ok(None),
        Outcome::Refused(e) => Err(e.into()),
        Outcome::Released(_) => unreachable_outcome(),
    }
}

pub(super) fn unreachable_outcome<T>() -> Result<T, AgentError> {
    Err(AgentError::Corrupt(
        "a block writer answered an allocation with a release".into(),
    ))
}
