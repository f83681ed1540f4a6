//! ADD: one address per IP family of the chosen pools, all or nothing; an attachment
//! that holds addresses already gets them back (DESIGN.md, "The allocation path").
//!
//! Pool choice first, then per family: the attachment's existing address in any pool of
//! the family, else the fullest own block with room, else a newly claimed block, else
//! (without strict affinity) an address borrowed from another node's block, else
//! exhaustion. Where to claim or borrow, or that the pool is exhausted, is decided from
//! the block index, without reading any block.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::ResourceExt;
use kube::api::{Api, PartialObjectMeta};

use super::allocator::{Allocator, allocated, holds, room, taken, unreachable_outcome};
use crate::agent::error::AgentError;
use crate::agent::pool_choice::{
    ANNOTATION_POOLS, ChoiceError, ChoiceInput, FamilyPools, PoolSource, choose_pools,
};
use crate::api::usage::summary_of;
use crate::api::{IPBlock, IPPool};
use crate::ledger::blocks::Claim;
use crate::metrics::PoolLabels;
use ipledger_cni::ErrorCode;
use ipledger_cni::protocol::{AddRequest, AddResponse, AllocatedIp, Dns, ErrorBody, Route};
use ipledger_core::{AllocError, Attachment, Change, NextStep, Outcome, PodRef, Pool};

/// Annotation on a pod asking for specific addresses, comma-separated (one per family).
pub const ANNOTATION_IPS: &str = "ipledger.io/ips";

/// Blocks claimed in one allocation before giving up: each failed claim means another
/// node won that block, and the next search skips it.
const MAX_CLAIMS: usize = 16;

impl Allocator {
    /// Answers an ADD request.
    pub async fn add(self: &Arc<Self>, request: AddRequest) -> Result<AddResponse, AgentError> {
        request.validate().map_err(AgentError::BadRequest)?;
        let attachment = Attachment::try_from(&request.attachment)?;
        let pod: Option<PodRef> = request.pod.as_ref().map(Into::into);
        let surroundings = self.surroundings(&request.pools, pod.as_ref()).await?;
        let known = self.caches.pools.state();
        let choice = match choose_pools(&surroundings.input(&request.pools), &known) {
            Ok(choice) => choice,
            Err(ChoiceError::UnknownPool { name, named_in }) => {
                return Err(self.unknown_pool(name, named_in).await);
            }
            Err(e) => return Err(e.into()),
        };
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

        let _adding = self.adding(&attachment);
        let mut rollback = Rollback {
            allocator: self.clone(),
            attachment: attachment.clone(),
            armed: false,
        };
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
                Ok(done) => {
                    allocated.push(done);
                    rollback.armed = true;
                }
                Err(error) => {
                    // Dual-stack is all or nothing: give back what this ADD got so far.
                    if rollback.armed {
                        if let Err(error) = self.release_everywhere(&attachment).await {
                            tracing::warn!(%error, "could not roll back a partial dual-stack allocation; DEL or GC will");
                        }
                        rollback.armed = false;
                    }
                    return Err(error);
                }
            }
        }
        rollback.armed = false;
        for (object, pool, _) in &allocated {
            self.claim_ahead(object, pool);
        }
        Ok(response(&allocated))
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
        // Idempotent ADD: the attachment may hold an address in any pool of the family, a
        // later one too (the first was full then and may have room now).
        for name in &family.pools {
            let (object, pool) = self.pools.get(name)?;
            if let Some(ip) = self.held(&pool, attachment, pod).await? {
                return Ok((object, pool, ip));
            }
        }
        let mut last = None;
        for name in &family.pools {
            let (object, pool) = self.pools.get(name)?;
            match self.allocate_in_pool(&object, &pool, attachment, pod).await {
                Ok(ip) => return Ok((object, pool, ip)),
                // The next pool of the family may have room.
                Err(
                    e @ (AgentError::Alloc(
                        AllocError::PoolExhausted { .. }
                        | AllocError::PoolDisabled { .. }
                        | AllocError::PoolDeleting { .. },
                    )
                    | AgentError::NoBlockForNode { .. }
                    | AgentError::Shadowed { .. }),
                ) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(AgentError::Choice(ChoiceError::NoPool)))
    }

    /// The address `attachment` holds in `pool` already, if it holds one.
    async fn held(
        &self,
        pool: &Pool,
        attachment: &Attachment,
        pod: Option<&PodRef>,
    ) -> Result<Option<IpAddr>, AgentError> {
        // Also in a block whose last write failed yet landed.
        self.reread_unsure_blocks(pool.name()).await?;
        for block in self.known_blocks(Some(pool.name())) {
            if holds(&self.freshest(&block).spec, attachment) {
                let again = Change::Allocate {
                    attachment: attachment.clone(),
                    pod: pod.cloned(),
                    requested: None,
                    borrower: self.borrower_of(&block),
                };
                return self.expect_address(&block, again).await.map(Some);
            }
        }
        Ok(None)
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
        if pool.is_disabled() {
            return Err(AllocError::PoolDisabled {
                pool: pool.name().to_string(),
            }
            .into());
        }
        if object.metadata.deletion_timestamp.is_some() {
            return Err(AllocError::PoolDeleting {
                pool: pool.name().to_string(),
            }
            .into());
        }
        let mut tried = HashSet::new();
        if let Some(ip) = self.try_own_blocks(pool, &mut tried, &allocate).await? {
            return Ok(ip);
        }
        // An exhausted pool is answered from the block index at once: an exhaustion
        // storm must not queue every ADD of the node behind the claim lock.
        match pool.next_step(
            &self.node,
            &self.summaries(pool.name()).await?,
            Timestamp::now(),
        ) {
            NextStep::Exhausted(error) => return Err(error.into()),
            NextStep::NoBlockForNode { in_use } => return Err(self.no_block(pool, in_use)),
            NextStep::Claim(_) => {
                self.metrics
                    .claim_waits
                    .get_or_create(&PoolLabels {
                        pool: pool.name().to_string(),
                    })
                    .inc();
            }
            NextStep::Borrow(_) => {}
        }

        let lock = self.claim_lock(pool.name());
        let _claiming = lock.lock().await;
        // A request that held the lock before us may have claimed a block with room.
        if let Some(ip) = self.try_own_blocks(pool, &mut tried, &allocate).await? {
            return Ok(ip);
        }
        let mut blocks = self.summaries(pool.name()).await?;
        for _ in 0..MAX_CLAIMS {
            match pool.next_step(&self.node, &blocks, Timestamp::now()) {
                NextStep::Claim(cidr) => match self.claim(object, pool, cidr).await? {
                    Claim::Won(block) => {
                        let block = *block;
                        if let Some(ip) = allocated(self.submit(&block, allocate(None)).await?)? {
                            return Ok(ip);
                        }
                        blocks.push(summary_of(&self.freshest(&Arc::new(block)), &self.node));
                    }
                    // Another node won it (the index had not shown it yet): search again.
                    Claim::Taken => blocks.push(taken(pool, cidr)),
                },
                NextStep::Borrow(names) => {
                    for name in names.iter().filter(|n| !tried.contains(*n)) {
                        let outcome = match self
                            .submit_named(name, allocate(Some(self.node.clone())))
                            .await
                        {
                            Ok(outcome) => outcome,
                            Err(AgentError::BlockGone(_)) => continue,
                            Err(e) => return Err(e),
                        };
                        if let Some(ip) = allocated(outcome)? {
                            tracing::info!(block = %name, %ip, "borrowed an address from another node's block");
                            return Ok(ip);
                        }
                    }
                    break;
                }
                NextStep::Exhausted(error) => return Err(error.into()),
                NextStep::NoBlockForNode { in_use } => return Err(self.no_block(pool, in_use)),
            }
        }
        // The index promised room the blocks did not have (it lags behind their writes).
        let blocks = self.summaries(pool.name()).await?;
        let now = Timestamp::now();
        let in_use = blocks.iter().map(|b| b.in_use).sum();
        let cooling = blocks.iter().map(|b| b.cooling(pool, now)).sum();
        Err(pool.exhausted(in_use, cooling).into())
    }

    fn no_block(&self, pool: &Pool, in_use: u128) -> AgentError {
        AgentError::NoBlockForNode {
            pool: pool.name().to_string(),
            node: self.node.clone(),
            in_use,
            capacity: pool.capacity(),
        }
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
            let outcome = match self.submit(&block, allocate(None)).await {
                Ok(outcome) => outcome,
                // Deleted under us (an empty block reclaimed, its pool deleted): forgotten
                // by `submit`; the next block, or a claim, has room.
                Err(AgentError::BlockGone(_)) => continue,
                Err(e) => return Err(e),
            };
            if let Some(ip) = allocated(outcome)? {
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
            Outcome::Released(_) => unreachable_outcome(),
        }
    }

    /// A pool named but missing from the pool cache: "does not exist" (permanent) only when
    /// the API says so; the cache may lag behind a pool just created or be re-listing.
    async fn unknown_pool(&self, name: String, named_in: PoolSource) -> AgentError {
        match Api::<IPPool>::all(self.client.clone()).get_opt(&name).await {
            Ok(None) => ChoiceError::UnknownPool { name, named_in }.into(),
            Ok(Some(_)) => AgentError::Unavailable(format!(
                "IPPool {name} named in {named_in} exists but this agent's cache does not show it yet"
            )),
            Err(e) => e.into(),
        }
    }

    /// What pool choice needs beyond the request: the metadata of the pod, of its
    /// namespace and of the node, from the watch caches. The runtime may run ADD before
    /// the pod watch shows the pod (or while it still shows an earlier pod of that name):
    /// then one GET of the pod's metadata, and likewise for a namespace or node missing
    /// from the cache.
    async fn surroundings(
        &self,
        config_pools: &[String],
        pod: Option<&PodRef>,
    ) -> Result<Surroundings, AgentError> {
        let mut found = Surroundings::default();
        if let Some(pod) = pod {
            found.pod = match self
                .caches
                .pod(&pod.namespace, &pod.name, pod.uid.as_deref())
            {
                Some(cached) => Some(cached),
                None => {
                    self.metrics.cache_misses.inc();
                    Api::<Pod>::namespaced(self.client.clone(), &pod.namespace)
                        .get_metadata_opt(&pod.name)
                        .await?
                        .map(Arc::new)
                }
            };
        }
        let pod_names_pools = found
            .pod
            .as_ref()
            .is_some_and(|p| p.annotations().contains_key(ANNOTATION_POOLS));
        if config_pools.is_empty() && !pod_names_pools {
            if let Some(pod) = pod {
                found.namespace = match self.caches.namespace(&pod.namespace) {
                    Some(cached) => Some(cached),
                    None => {
                        self.metrics.cache_misses.inc();
                        Api::<Namespace>::all(self.client.clone())
                            .get_metadata_opt(&pod.namespace)
                            .await?
                            .map(Arc::new)
                    }
                };
            }
            found.node_labels = self.node_labels().await?;
        }
        Ok(found)
    }
}

/// Gives back what a dual-stack ADD got when its handler is dropped between the families
/// (the request timed out, the agent is stopping): the runtime sees the ADD fail, so
/// nothing may stay held for it.
struct Rollback {
    allocator: Arc<Allocator>,
    attachment: Attachment,
    armed: bool,
}

impl Drop for Rollback {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let allocator = self.allocator.clone();
        let attachment = self.attachment.clone();
        tokio::spawn(async move {
            if let Err(error) = allocator.release_everywhere(&attachment).await {
                tracing::warn!(%error, %attachment, "could not roll back a cancelled ADD; DEL or GC will");
            }
        });
    }
}

/// The objects around an attachment that pool choice looks at.
#[derive(Default)]
struct Surroundings {
    pod: Option<Arc<PartialObjectMeta<Pod>>>,
    namespace: Option<Arc<PartialObjectMeta<Namespace>>>,
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
