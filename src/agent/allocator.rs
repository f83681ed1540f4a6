//! What the agent does for each plugin verb: choose the pools, find or claim a block, and
//! hand the change to that block's writer (DESIGN.md, "The allocation path").

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use futures::future::join_all;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::agent::cache::Caches;
use crate::agent::error::AgentError;
use crate::agent::pool_choice::{ChoiceInput, FamilyPools, PoolSource, choose_pools};
use crate::agent::writer::{Change, CommitError, Outcome, PoolLookup, Writers};
use crate::api::{IPBlock, IPBlockSpec, IPPool};
use crate::ledger::RetryPolicy;
use crate::ledger::blocks::{Claim, claim_block, pool_blocks};
use crate::metrics::{AgentMetrics, WriteLabels};
use ipledger_cni::ErrorCode;
use ipledger_cni::protocol::{
    AddRequest, AddResponse, AllocatedIp, CheckRequest, CheckResponse, DelRequest, DelResponse,
    Dns, ErrorBody, GcRequest, GcResponse, Route, StatusQuery, StatusResponse,
};
use ipledger_core::{AllocError, Attachment, Block, PodRef, Pool};

/// Annotation on a pod asking for specific addresses, comma-separated (one per family).
pub const ANNOTATION_IPS: &str = "ipledger.io/ips";

/// Blocks claimed in one allocation before giving up: each failed claim means another
/// node won that block, and the next search skips it.
const MAX_CLAIMS: usize = 16;

/// The agent's allocation logic, shared by every request.
pub struct Allocator {
    node: String,
    client: Client,
    blocks: Api<IPBlock>,
    caches: Caches,
    writers: Writers,
    pools: Arc<PoolModels>,
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
                    AgentError::InvalidPool(e) => CommitError::Invalid(e.to_string()),
                    other => CommitError::Unavailable(other.to_string()),
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

    /// ADD: one address per IP family of the chosen pools, all or nothing; an attachment
    /// that holds addresses already gets them back.
    pub async fn add(&self, request: AddRequest) -> Result<AddResponse, AgentError> {
        request.validate().map_err(AgentError::BadRequest)?;
        let attachment = attachment(&request.attachment)?;
        let pod = request.pod.as_ref().map(|p| PodRef {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            uid: p.uid.clone(),
        });
        let surroundings = self.surroundings(&request.pools, pod.as_ref()).await?;
        let known = self.caches.pools.state();
        let choice = choose_pools(&surroundings.input(&request.pools), &known)?;
        let requested = if request.requested_ips.is_empty() {
            surroundings.annotated_ips()?
        } else {
            request.requested_ips.clone()
        };
        if let Some(ip) = requested
            .iter()
            .find(|ip| !choice.families.iter().any(|f| f.ipv6 == ip.is_ipv6()))
        {
            return Err(AgentError::RequestedOutsidePools {
                address: *ip,
                pools: choice
                    .families
                    .iter()
                    .flat_map(|f| f.pools.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
                source_name: choice.source.to_string(),
            });
        }

        let mut allocated = Vec::new();
        for family in &choice.families {
            let wanted = requested
                .iter()
                .copied()
                .find(|ip| ip.is_ipv6() == family.ipv6);
            match self
                .allocate_in_family(family, choice.source, &attachment, pod.as_ref(), wanted)
                .await
            {
                Ok(done) => allocated.push(done),
                Err(error) => {
                    // Dual-stack is all or nothing: give back what this ADD got so far.
                    if !allocated.is_empty()
                        && let Err(rollback) = self.release_everywhere(&attachment).await
                    {
                        tracing::warn!(%rollback, "could not roll back a partial dual-stack allocation; DEL or GC will");
                    }
                    return Err(error);
                }
            }
        }
        Ok(response(&allocated))
    }

    /// DEL: releases whatever the attachment holds; succeeds when it holds nothing.
    pub async fn del(&self, request: DelRequest) -> Result<DelResponse, AgentError> {
        request.validate().map_err(AgentError::BadRequest)?;
        let attachment = attachment(&request.attachment)?;
        let released = self.release_everywhere(&attachment).await?;
        Ok(DelResponse { released })
    }

    /// CHECK: every address of the previous result must still be held by the attachment.
    pub async fn check(&self, request: CheckRequest) -> Result<CheckResponse, AgentError> {
        request.validate().map_err(AgentError::BadRequest)?;
        let attachment = attachment(&request.attachment)?;
        for ip in &request.ips {
            let holder = self.holder_of(*ip).await?;
            if holder.as_ref() != Some(&attachment) {
                let held_by = holder.map_or("nobody".to_string(), |h| h.to_string());
                return Err(AgentError::Missing(format!(
                    "{ip} of prevResult is not allocated to {attachment}: the ledger records it as held by {held_by}"
                )));
            }
        }
        Ok(CheckResponse {
            verified: request.ips,
        })
    }

    /// GC: releases this node's allocations of the network that the runtime no longer
    /// lists; carries on past failures and reports them together.
    pub async fn gc(&self, request: GcRequest) -> Result<GcResponse, AgentError> {
        request.validate().map_err(AgentError::BadRequest)?;
        let live: Arc<HashSet<(String, String)>> = Arc::new(
            request
                .valid_attachments
                .iter()
                .map(|a| (a.container_id.clone(), a.if_name.clone()))
                .collect(),
        );
        let change = Change::Collect {
            network: request.network.clone(),
            live,
            node: self.node.clone(),
        };
        let (released, failures) = self.submit_everywhere(&change).await;
        if !failures.is_empty() {
            return Err(AgentError::GcIncomplete(format!(
                "released {} allocations but could not check {} blocks: {}",
                released.len(),
                failures.len(),
                failures.join("; ")
            )));
        }
        let released = released
            .into_iter()
            .map(|(a, _)| ipledger_cni::protocol::Attachment {
                network: a.network().to_string(),
                container_id: a.container_id().to_string(),
                if_name: a.if_name().to_string(),
            })
            .collect();
        Ok(GcResponse { released })
    }

    /// STATUS: can an ADD on this network succeed now?
    pub async fn status(&self, query: StatusQuery) -> Result<StatusResponse, AgentError> {
        let cannot = |why: String| AgentError::CannotAllocate(why);
        self.client
            .apiserver_version()
            .await
            .map_err(|e| cannot(format!("the Kubernetes API is unreachable: {e}")))?;
        let named: Vec<String> = query.pool_names().into_iter().map(String::from).collect();
        let known = self.caches.pools.state();
        let node_labels = self
            .node_labels()
            .await
            .map_err(|e| cannot(e.to_string()))?;
        let input = ChoiceInput {
            config_pools: &named,
            node_labels: Some(&node_labels),
            ..Default::default()
        };
        let choice = match choose_pools(&input, &known) {
            Ok(choice) => choice,
            // Without a pod, annotations and namespace selectors are unknown: an ADD may
            // still find a pool through them.
            Err(crate::agent::pool_choice::ChoiceError::NoPool) if named.is_empty() => {
                return Ok(StatusResponse {});
            }
            Err(e) => return Err(cannot(e.to_string())),
        };
        for family in &choice.families {
            let mut reasons = Vec::new();
            for name in &family.pools {
                match self.has_room(name).await {
                    Ok(true) => break,
                    Ok(false) => reasons.push(format!("IPPool {name} has no free address")),
                    Err(e) => reasons.push(e.to_string()),
                }
            }
            if reasons.len() == family.pools.len() {
                return Err(cannot(reasons.join("; ")));
            }
        }
        Ok(StatusResponse {})
    }

    async fn has_room(&self, name: &str) -> Result<bool, AgentError> {
        let (_, pool) = self.pools.get(name)?;
        if pool.is_disabled() {
            return Ok(false);
        }
        // Room in a block of this node answers without a list: runtimes ask often.
        let own_room = self
            .known_blocks(Some(name))
            .iter()
            .filter(|b| b.spec.node == self.node)
            .any(|b| room(&pool, &self.freshest(b).spec) > 0);
        if own_room {
            return Ok(true);
        }
        let blocks = pool_blocks(&self.blocks, name).await?;
        let existing: Vec<IpNet> = blocks.iter().map(|b| b.spec.cidr).collect();
        if pool.next_free_block(&self.node, &existing).is_some() {
            return Ok(true);
        }
        let usable = |b: &&IPBlock| b.spec.node == self.node || !pool.strict_affinity();
        Ok(blocks
            .iter()
            .filter(usable)
            .any(|b| (b.spec.allocations.len() as u128) < pool.block_capacity(&b.spec.cidr)))
    }

    async fn allocate_in_family(
        &self,
        family: &FamilyPools,
        source: PoolSource,
        attachment: &Attachment,
        pod: Option<&PodRef>,
        wanted: Option<IpAddr>,
    ) -> Result<(Arc<IPPool>, Arc<Pool>, IpAddr), AgentError> {
        if let Some(ip) = wanted {
            for name in &family.pools {
                let (object, pool) = self.pools.get(name)?;
                if pool.contains(ip) {
                    let got = self
                        .allocate_requested(&object, &pool, attachment, pod, ip)
                        .await?;
                    return Ok((object, pool, got));
                }
            }
            return Err(AgentError::RequestedOutsidePools {
                address: ip,
                pools: family.pools.join(", "),
                source_name: source.to_string(),
            });
        }
        let mut last = None;
        for name in &family.pools {
            let (object, pool) = self.pools.get(name)?;
            match self.allocate_in_pool(&object, &pool, attachment, pod).await {
                Ok(ip) => return Ok((object, pool, ip)),
                // The next pool of the family may have room.
                Err(
                    e @ (AgentError::Alloc(
                        AllocError::PoolExhausted { .. } | AllocError::PoolDisabled { .. },
                    )
                    | AgentError::NoBlockForNode { .. }),
                ) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(AgentError::Choice(
            crate::agent::pool_choice::ChoiceError::NoPool,
        )))
    }

    async fn allocate_in_pool(
        &self,
        object: &IPPool,
        pool: &Pool,
        attachment: &Attachment,
        pod: Option<&PodRef>,
    ) -> Result<IpAddr, AgentError> {
        let allocate = |borrower: Option<String>| Change::Allocate {
            attachment: attachment.clone(),
            pod: pod.cloned(),
            requested: None,
            borrower,
        };
        // Idempotent ADD: the attachment may hold an address in any block we know of.
        for block in self.known_blocks(Some(pool.name())) {
            if holds(&self.freshest(&block).spec, attachment) {
                return self
                    .expect_address(&block, allocate(self.borrower_of(&block)))
                    .await;
            }
        }
        if pool.is_disabled() {
            return Err(AllocError::PoolDisabled {
                pool: pool.name().to_string(),
            }
            .into());
        }
        let mut tried = HashSet::new();
        if let Some(ip) = self.try_own_blocks(pool, &mut tried, &allocate).await? {
            return Ok(ip);
        }

        let lock = self.claim_lock(pool.name());
        let _claiming = lock.lock().await;
        // A request that held the lock before us may have claimed a block with room.
        if let Some(ip) = self.try_own_blocks(pool, &mut tried, &allocate).await? {
            return Ok(ip);
        }
        let mut blocks = pool_blocks(&self.blocks, pool.name()).await?;
        for _ in 0..MAX_CLAIMS {
            let existing: Vec<IpNet> = blocks.iter().map(|b| b.spec.cidr).collect();
            let Some(cidr) = pool.next_free_block(&self.node, &existing) else {
                break;
            };
            match self.claim(object, pool, cidr).await? {
                Claim::Won(block) => {
                    let block = *block;
                    match allocated(self.submit(&block, allocate(None)).await?)? {
                        Some(ip) => return Ok(ip),
                        None => blocks.push(block),
                    }
                }
                // Another node won it; search again with the pool's current blocks.
                Claim::Taken => blocks = pool_blocks(&self.blocks, pool.name()).await?,
            }
        }

        if !pool.strict_affinity() {
            let mut foreign: Vec<&IPBlock> = blocks
                .iter()
                .filter(|b| b.spec.node != self.node)
                .filter(|b| (b.spec.allocations.len() as u128) < pool.block_capacity(&b.spec.cidr))
                .collect();
            // The emptiest first: borrowing where there is the most room conflicts least.
            foreign.sort_by_key(|b| b.spec.allocations.len());
            for block in foreign {
                let outcome = self
                    .submit(block, allocate(Some(self.node.clone())))
                    .await?;
                if let Some(ip) = allocated(outcome)? {
                    tracing::info!(block = %block.name_any(), %ip, "borrowed an address from another node's block");
                    return Ok(ip);
                }
            }
        }
        let in_use: u128 = pool_blocks(&self.blocks, pool.name())
            .await?
            .iter()
            .map(|b| b.spec.allocations.len() as u128)
            .sum();
        if pool.strict_affinity() && in_use < pool.capacity() {
            return Err(AgentError::NoBlockForNode {
                pool: pool.name().to_string(),
                node: self.node.clone(),
                in_use,
                capacity: pool.capacity(),
            });
        }
        Err(pool.exhausted(in_use).into())
    }

    async fn try_own_blocks(
        &self,
        pool: &Pool,
        tried: &mut HashSet<String>,
        allocate: &impl Fn(Option<String>) -> Change,
    ) -> Result<Option<IpAddr>, AgentError> {
        // The fullest block with room first, going by this agent's freshest copies: blocks
        // fill one by one (concurrent requests meet in one batch, and emptied blocks can be
        // given back), no request waits on a full block, and a stale count costs only a
        // BlockFull answer.
        let mut candidates: Vec<(u128, Arc<IPBlock>)> = self
            .known_blocks(Some(pool.name()))
            .into_iter()
            .filter(|b| b.spec.node == self.node && !tried.contains(&b.name_any()))
            .map(|b| (room(pool, &self.freshest(&b).spec), b))
            .filter(|(room, _)| *room > 0)
            .collect();
        candidates.sort_by_key(|(room, _)| *room);
        for (_, block) in candidates {
            tried.insert(block.name_any());
            if let Some(ip) = allocated(self.submit(&block, allocate(None)).await?)? {
                return Ok(Some(ip));
            }
        }
        Ok(None)
    }

    async fn allocate_requested(
        &self,
        object: &IPPool,
        pool: &Pool,
        attachment: &Attachment,
        pod: Option<&PodRef>,
        ip: IpAddr,
    ) -> Result<IpAddr, AgentError> {
        let cidr = pool.block_for(ip).ok_or_else(|| AllocError::OutsidePool {
            address: ip,
            pool: pool.name().to_string(),
            cidr: pool.cidr(),
        })?;
        let name = pool.block_name(&cidr);
        let block = match self.block_named(&name).await? {
            Some(block) => block,
            None => match self.claim(object, pool, cidr).await? {
                Claim::Won(block) => Arc::new(*block),
                Claim::Taken => self.block_named(&name).await?.ok_or_else(|| {
                    AgentError::Unavailable(format!("IPBlock {name} vanished while claiming it"))
                })?,
            },
        };
        // A requested address is honoured in whichever node's block it lies: a pod with a
        // fixed address may move between nodes.
        let change = Change::Allocate {
            attachment: attachment.clone(),
            pod: pod.cloned(),
            requested: Some(ip),
            borrower: self.borrower_of(&block),
        };
        self.expect_address(&block, change).await
    }

    async fn expect_address(&self, block: &IPBlock, change: Change) -> Result<IpAddr, AgentError> {
        match self.submit(block, change).await? {
            Outcome::Allocated(ip) => Ok(ip),
            Outcome::Refused(e) => Err(e.into()),
            Outcome::Failed(e) => Err(e.into()),
            Outcome::Released(_) => unreachable_outcome(),
        }
    }

    /// Claims block `cidr` of `pool` for this node by creating its IPBlock.
    async fn claim(&self, object: &IPPool, pool: &Pool, cidr: IpNet) -> Result<Claim, AgentError> {
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

    async fn submit(&self, block: &IPBlock, change: Change) -> Result<Outcome, AgentError> {
        Ok(self.writers.of(block).submit(change).await?)
    }

    /// Submits `change` to every block that may hold this node's allocations: its own and
    /// those it borrowed from. Returns what was released and the failures.
    async fn submit_everywhere(&self, change: &Change) -> (Vec<(Attachment, IpAddr)>, Vec<String>) {
        self.submit_to(self.known_blocks(None), change).await
    }

    /// Submits `change` to each of `blocks` at once; returns what was released and the
    /// failures.
    async fn submit_to(
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

    async fn release_everywhere(&self, attachment: &Attachment) -> Result<Vec<IpAddr>, AgentError> {
        // Only blocks that may hold the attachment: every allocation this agent made is in
        // its writer's copy or, for blocks it has not written since it started, in the
        // watch cache. A writer without a copy (its last write failed) is asked anyway.
        let candidates = self
            .known_blocks(None)
            .into_iter()
            .filter(|block| match self.writers.knowledge(&block.name_any()) {
                None => holds(&block.spec, attachment),
                Some(None) => true,
                Some(Some(copy)) => holds(&copy.spec, attachment),
            })
            .collect();
        let release = Change::Release {
            attachment: attachment.clone(),
        };
        let (released, failures) = self.submit_to(candidates, &release).await;
        if !failures.is_empty() {
            return Err(AgentError::Unavailable(format!(
                "could not release {attachment}: {}",
                failures.join("; ")
            )));
        }
        Ok(released.into_iter().map(|(_, ip)| ip).collect())
    }

    /// Who holds `ip` according to the ledger.
    async fn holder_of(&self, ip: IpAddr) -> Result<Option<Attachment>, AgentError> {
        for object in self.caches.pools.state() {
            let Ok((_, pool)) = self.pools.get(&object.name_any()) else {
                continue;
            };
            let Some(cidr) = pool.block_for(ip) else {
                continue;
            };
            let Some(block) = self.block_named(&pool.block_name(&cidr)).await? else {
                continue;
            };
            let model = self.latest(&block).ok_or_else(|| {
                AgentError::Corrupt(format!("IPBlock {} does not parse", block.name_any()))
            })?;
            return Ok(model.holder(ip).map(|a| a.attachment.clone()));
        }
        Ok(None)
    }

    /// The block `name`: this agent's freshest copy, or read from the API.
    async fn block_named(&self, name: &str) -> Result<Option<Arc<IPBlock>>, AgentError> {
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
    fn known_blocks(&self, pool: Option<&str>) -> Vec<Arc<IPBlock>> {
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

    /// The freshest copy of `block` at hand: what its writer wrote last, else `block`.
    fn freshest(&self, block: &Arc<IPBlock>) -> Arc<IPBlock> {
        self.writers
            .latest(&block.name_any())
            .unwrap_or_else(|| block.clone())
    }

    /// The freshest model of `block`: the copy its writer wrote last, else `block`.
    /// A record that does not parse is answered by the writer itself (as corrupt, code
    /// 11) when a change reaches it; read-only lookups skip it.
    fn latest(&self, block: &Arc<IPBlock>) -> Option<Block> {
        Block::try_from(&self.freshest(block).spec).ok()
    }

    /// Stops tracking a deleted block.
    fn forget(&self, name: &str) {
        self.claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        self.writers.forget(name);
    }

    fn borrower_of(&self, block: &IPBlock) -> Option<String> {
        (block.spec.node != self.node).then(|| self.node.clone())
    }

    fn claim_lock(&self, pool: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.claim_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(pool.to_string())
            .or_default()
            .clone()
    }

    async fn node_labels(&self) -> Result<BTreeMap<String, String>, AgentError> {
        let node = Api::<Node>::all(self.client.clone())
            .get_opt(&self.node)
            .await?;
        Ok(node.map(|n| n.labels().clone()).unwrap_or_default())
    }

    /// Reads what pool choice needs beyond the request: the pod, its namespace, the node.
    async fn surroundings(
        &self,
        config_pools: &[String],
        pod: Option<&PodRef>,
    ) -> Result<Surroundings, AgentError> {
        let mut found = Surroundings::default();
        if let Some(pod) = pod {
            found.pod = Api::<Pod>::namespaced(self.client.clone(), &pod.namespace)
                .get_opt(&pod.name)
                .await?;
        }
        let pod_names_pools = found.pod.as_ref().is_some_and(|p| {
            p.annotations()
                .contains_key(crate::agent::pool_choice::ANNOTATION_POOLS)
        });
        if config_pools.is_empty() && !pod_names_pools {
            if let Some(pod) = pod {
                found.namespace = Api::<Namespace>::all(self.client.clone())
                    .get_opt(&pod.namespace)
                    .await?;
            }
            found.node_labels = self.node_labels().await?;
        }
        Ok(found)
    }
}

/// The objects around an attachment that pool choice looks at.
#[derive(Default)]
struct Surroundings {
    pod: Option<Pod>,
    namespace: Option<Namespace>,
    node_labels: BTreeMap<String, String>,
}

impl Surroundings {
    fn input<'a>(&'a self, config_pools: &'a [String]) -> ChoiceInput<'a> {
        ChoiceInput {
            config_pools,
            pod_annotations: self.pod.as_ref().map(|p| p.annotations()),
            namespace_annotations: self.namespace.as_ref().map(|n| n.annotations()),
            namespace_labels: self.namespace.as_ref().map(|n| n.labels()),
            node_labels: Some(&self.node_labels),
        }
    }

    /// Addresses the pod's `ipledger.io/ips` annotation asks for.
    fn annotated_ips(&self) -> Result<Vec<IpAddr>, AgentError> {
        let Some(value) = self
            .pod
            .as_ref()
            .and_then(|p| p.annotations().get(ANNOTATION_IPS))
        else {
            return Ok(Vec::new());
        };
        let mut ips = Vec::new();
        for part in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let ip: IpAddr = part.parse().map_err(|_| {
                AgentError::BadRequest(ErrorBody {
                    code: ErrorCode::InvalidNetworkConfig.as_u32(),
                    msg: format!("pod annotation {ANNOTATION_IPS}: {part:?} is not an IP address"),
                    details: None,
                })
            })?;
            if ips
                .iter()
                .any(|other: &IpAddr| other.is_ipv6() == ip.is_ipv6())
            {
                return Err(AgentError::BadRequest(ErrorBody {
                    code: ErrorCode::InvalidNetworkConfig.as_u32(),
                    msg: format!(
                        "pod annotation {ANNOTATION_IPS}: more than one address of the family of {ip}"
                    ),
                    details: None,
                }));
            }
            ips.push(ip);
        }
        Ok(ips)
    }
}

fn attachment(wire: &ipledger_cni::protocol::Attachment) -> Result<Attachment, AgentError> {
    Ok(Attachment::new(
        &wire.network,
        &wire.container_id,
        &wire.if_name,
    )?)
}

/// Whether the ledger record holds an address for `attachment`.
fn holds(spec: &IPBlockSpec, attachment: &Attachment) -> bool {
    spec.allocations.iter().any(|r| {
        r.container_id == attachment.container_id()
            && r.if_name == attachment.if_name()
            && r.network == attachment.network()
    })
}

/// Allocatable addresses of the block not held (cooling-down ones included).
fn room(pool: &Pool, spec: &IPBlockSpec) -> u128 {
    pool.block_capacity(&spec.cidr)
        .saturating_sub(spec.allocations.len() as u128)
}

/// The address an allocation got, `None` when the block was full (try the next one), or
/// the refusal.
fn allocated(outcome: Outcome) -> Result<Option<IpAddr>, AgentError> {
    match outcome {
        Outcome::Allocated(ip) => Ok(Some(ip)),
        Outcome::Refused(AllocError::BlockFull { .. }) => Ok(None),
        Outcome::Refused(e) => Err(e.into()),
        Outcome::Failed(e) => Err(e.into()),
        Outcome::Released(_) => unreachable_outcome(),
    }
}

fn unreachable_outcome<T>() -> Result<T, AgentError> {
    Err(AgentError::Corrupt(
        "a block writer answered an allocation with a release".into(),
    ))
}

/// The ADD answer: each address with its pool's prefix length and gateway, the pools'
/// routes and DNS settings.
fn response(allocated: &[(Arc<IPPool>, Arc<Pool>, IpAddr)]) -> AddResponse {
    let mut response = AddResponse {
        ips: Vec::new(),
        routes: Vec::new(),
        dns: Dns::default(),
    };
    for (object, pool, ip) in allocated {
        let address =
            IpNet::new(*ip, pool.cidr().prefix_len()).unwrap_or_else(|_| IpNet::from(*ip));
        response.ips.push(AllocatedIp {
            address,
            gateway: pool.gateway(),
            pool: pool.name().to_string(),
        });
        for route in pool.routes() {
            response.routes.push(Route {
                dst: route.dst,
                gw: route.gw,
            });
        }
        for ip in pool.nameservers() {
            if !response.dns.nameservers.contains(ip) {
                response.dns.nameservers.push(*ip);
            }
        }
        if let Some(dns) = &object.spec.dns {
            if response.dns.domain.is_none() {
                response.dns.domain = dns.domain.clone();
            }
            for search in &dns.search {
                if !response.dns.search.contains(search) {
                    response.dns.search.push(search.clone());
                }
            }
            for option in &dns.options {
                if !response.dns.options.contains(option) {
                    response.dns.options.push(option.clone());
                }
            }
        }
    }
    response
}
