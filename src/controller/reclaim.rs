//! Leak GC, block reclaim, node cleanup and the pool finalizer: everything that gives
//! addresses and blocks back.
//!
//! A pass runs after a pod or node deletion, on changes of pools and blocks (at most
//! once a second), when an allocation of a gone pod comes of age, and every
//! `--gc-interval`. It decides on the caches with the core's rules
//! ([`ipledger_core::leaked`], [`ipledger_core::block_fates`]) and then acts only on what
//! a fresh read confirms: each leaked pod is read again directly, each record is removed
//! by a swap that removes only that exact record, each block is deleted only if it is
//! unchanged since it was read, and a block's finalizer comes off only while it holds
//! nothing.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use ipledger_core::{
    Allocation, Block, BlockFacts, BlockFate, DeleteReason, Pool, PoolState, ReclaimRules,
    block_fates, leaked, pod_gone,
};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tokio::sync::mpsc;

use super::Context;
use super::cache::Feeds;
use crate::api::{IPBlock, IPPool, LABEL_POOL, POOL_FINALIZER, label_value};
use crate::ledger::RetryPolicy;
use crate::ledger::reclaim::{delete_unchanged, finalize, needs_tidying, tidy};
use crate::metrics::{FailureLabels, ReasonLabels, ReconcilerLabels};

/// The shortest time between two passes.
const MIN_PASS_INTERVAL: Duration = Duration::from_secs(1);

/// Gives back leaked addresses and unneeded blocks while this replica leads; started
/// once the caches are synced.
pub async fn run(ctx: Context, mut feeds: Feeds) {
    let labels = ReconcilerLabels {
        reconciler: "reclaim".into(),
    };
    let mut changed = ctx.caches.changed.subscribe();
    let mut reclaim = Reclaim::default();
    loop {
        ctx.leadership.leading().await;
        let started = Instant::now();
        let next = reclaim.pass(&ctx).await;
        ctx.metrics
            .reconcile_seconds
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        tokio::time::sleep_until((started + MIN_PASS_INTERVAL).into()).await;
        let wake = next.map_or(ctx.args.gc_interval, |n| n.min(ctx.args.gc_interval));
        tokio::select! {
            Some(_) = feeds.gone_pods.recv() => drain(&mut feeds.gone_pods),
            Some(_) = feeds.gone_nodes.recv() => drain(&mut feeds.gone_nodes),
            _ = changed.changed() => {}
            _ = tokio::time::sleep(wake.saturating_sub(started.elapsed())) => {}
            _ = ctx.leadership.lost() => {}
        }
    }
}

/// Empties a channel of triggers: one pass handles them all.
fn drain<T>(feed: &mut mpsc::UnboundedReceiver<T>) {
    while feed.try_recv().is_ok() {}
}

/// What the reclaim reconciler remembers between passes.
#[derive(Default)]
struct Reclaim {
    /// Since when each block (by uid) has been seen holding nothing. In memory only: a
    /// restarted controller starts the clock again, which only delays a reclaim.
    empty_since: HashMap<String, Timestamp>,
}

impl Reclaim {
    /// One pass over every block and pool; returns when a pass is due again because an
    /// allocation of a gone pod comes of age.
    async fn pass(&mut self, ctx: &Context) -> Option<Duration> {
        let now = Timestamp::now();
        let grace = signed(ctx.args.gc_grace);
        let blocks = ctx.caches.blocks.state();
        let pools: HashMap<String, std::sync::Arc<IPPool>> = ctx
            .caches
            .pools
            .state()
            .into_iter()
            .map(|p| (p.name_any(), p))
            .collect();
        // Parsed once per pass, not once per block.
        let models: HashMap<&str, Pool> = pools
            .iter()
            .filter_map(|(name, p)| Some((name.as_str(), Pool::try_from(p.as_ref()).ok()?)))
            .collect();
        let block_api = Api::<IPBlock>::all(ctx.client.clone());
        let policy = RetryPolicy::default();
        let mut next: Option<Duration> = None;
        let mut facts = Vec::new();
        let mut claimed: HashMap<&str, u128> = HashMap::new();
        for block in &blocks {
            *claimed.entry(block.spec.pool.as_str()).or_default() += 1;
        }
        let mut current: HashMap<String, IPBlock> = HashMap::new();
        for cached in &blocks {
            let name = cached.name_any();
            let block = match Block::try_from(&cached.spec) {
                Ok(block) => block,
                Err(error) => {
                    self.failed(ctx, "corrupt_block");
                    tracing::warn!(block = name, %error, "cannot read the block's records; leaving it alone");
                    continue;
                }
            };
            let candidates = leaked(&block, |ns, pod| self.live_uid(ctx, ns, pod), now, grace);
            ctx.metrics.gc_candidates.inc_by(candidates.len() as u64);
            next = earliest(next, self.coming_of_age(ctx, &block, now, grace));
            let mut object = (**cached).clone();
            let confirmed = self.confirm(ctx, &candidates).await;
            if !confirmed.is_empty() || needs_tidying(cached) {
                if ctx.leadership.check().is_err() {
                    return None;
                }
                match tidy(&block_api, &name, Some(object.clone()), &confirmed, &policy).await {
                    Ok((released, after)) => {
                        ctx.metrics.gc_releases.inc_by(released.len() as u64);
                        for record in confirmed.iter().filter(|r| released.contains(&r.address)) {
                            let pod = record.pod.as_ref();
                            tracing::info!(
                                block = name,
                                address = %record.address,
                                container_id = record.attachment.container_id(),
                                pod_namespace = pod.map(|p| p.namespace.as_str()),
                                pod_name = pod.map(|p| p.name.as_str()),
                                "released a leaked address: its pod is gone"
                            );
                        }
                        // The block is judged as the swap left it.
                        object = after;
                    }
                    Err(error) => {
                        self.failed(ctx, "write");
                        tracing::warn!(block = name, %error, "cannot release leaked addresses");
                        continue;
                    }
                }
            }
            facts.push(self.facts(&object, &pools, &models, &claimed, ctx, now));
            current.insert(name, object);
        }
        let seen: HashSet<String> = blocks.iter().filter_map(|b| b.uid()).collect();
        self.empty_since.retain(|uid, _| seen.contains(uid));

        let rules = ReclaimRules {
            unseen_grace: grace,
            empty_ttl: signed(ctx.args.empty_block_ttl),
            now,
        };
        for (name, fate) in block_fates(&facts, &rules) {
            let Some(object) = current.remove(&name) else {
                continue;
            };
            if ctx.leadership.check().is_err() {
                return None;
            }
            match fate {
                BlockFate::Delete(reason) => self.delete(ctx, &block_api, &object, reason).await,
                BlockFate::Finalize => {
                    if let Err(error) = finalize(&block_api, &name, Some(object), &policy).await {
                        self.failed(ctx, "write");
                        tracing::warn!(block = name, %error, "cannot take the finalizer off a deleted block");
                    }
                }
            }
        }
        self.pool_finalizers(ctx, &pools, &facts).await;
        next
    }

    /// The UID of the live pod `namespace/name`, from the cache.
    fn live_uid(&self, ctx: &Context, namespace: &str, name: &str) -> Option<String> {
        let key = ObjectRef::new(name).within(namespace);
        ctx.caches.pods.get(&key).and_then(|p| p.uid())
    }

    /// The candidates whose pod a direct read confirms gone: the cache may lag a pod
    /// created again under the same name, and only a read tells.
    async fn confirm(&self, ctx: &Context, candidates: &[&Allocation]) -> Vec<Allocation> {
        let mut confirmed = Vec::new();
        for record in candidates {
            let Some(pod) = &record.pod else { continue };
            let api = Api::<Pod>::namespaced(ctx.client.clone(), &pod.namespace);
            match api.get_metadata_opt(&pod.name).await {
                Ok(live) => {
                    if pod_gone(pod, live.as_ref().and_then(|p| p.uid()).as_deref()) {
                        confirmed.push((*record).clone());
                    }
                }
                Err(error) => {
                    self.failed(ctx, "api");
                    tracing::warn!(pod = %format!("{}/{}", pod.namespace, pod.name), %error, "cannot re-check a pod; its address stays");
                }
            }
        }
        confirmed
    }

    /// When the next allocation of `block` whose pod is gone but that is younger than
    /// the grace period comes of age.
    fn coming_of_age(
        &self,
        ctx: &Context,
        block: &Block,
        now: Timestamp,
        grace: SignedDuration,
    ) -> Option<Duration> {
        block
            .allocations()
            .filter(|a| {
                a.pod.as_ref().is_some_and(|pod| {
                    pod_gone(
                        pod,
                        self.live_uid(ctx, &pod.namespace, &pod.name).as_deref(),
                    )
                })
            })
            .filter_map(|a| a.allocated_at.checked_add(grace).ok())
            .filter(|due| *due >= now)
            .min()
            .and_then(|due| Duration::try_from(due.duration_since(now)).ok())
            // Whole seconds in the ledger: a moment past the due time.
            .map(|d| d + Duration::from_millis(1100))
    }

    /// What the core's block rules need to know of `object`.
    fn facts(
        &mut self,
        object: &IPBlock,
        pools: &HashMap<String, std::sync::Arc<IPPool>>,
        models: &HashMap<&str, Pool>,
        claimed: &HashMap<&str, u128>,
        ctx: &Context,
        now: Timestamp,
    ) -> BlockFacts {
        let pool = pools.get(&object.spec.pool);
        let model = models.get(object.spec.pool.as_str());
        let in_use = object.spec.allocations.len() as u128;
        let uid = object.uid().unwrap_or_default();
        let empty_since = if in_use == 0 {
            Some(*self.empty_since.entry(uid).or_insert(now))
        } else {
            self.empty_since.remove(&uid);
            None
        };
        let cooling = match (&model, Block::try_from(&object.spec)) {
            (Some(model), Ok(block)) => block.is_cooling(model, now),
            _ => !object.spec.released.is_empty(),
        };
        BlockFacts {
            name: object.name_any(),
            pool: object.spec.pool.clone(),
            pool_state: match pool {
                None => PoolState::Absent,
                // A block of an older pool of the same name is the old pool's.
                Some(p) if !owned_by(object, p) => PoolState::Absent,
                Some(p) if p.metadata.deletion_timestamp.is_some() => PoolState::Deleting,
                Some(_) => PoolState::Live,
            },
            node: object.spec.node.clone(),
            node_seen: ctx
                .caches
                .nodes
                .get(&ObjectRef::new(&object.spec.node))
                .is_some(),
            in_use,
            capacity: model.map_or(0, |m| m.block_capacity(&object.spec.cidr)),
            cooling,
            deleting: object.metadata.deletion_timestamp.is_some(),
            empty_since,
            // The agents' claim-ahead rule, so that what they claim ahead stays.
            reserve: model.map_or(0, |m| {
                m.claim_ahead_reserve(claimed.get(m.name()).copied().unwrap_or(0))
            }),
        }
    }

    async fn delete(
        &self,
        ctx: &Context,
        api: &Api<IPBlock>,
        object: &IPBlock,
        reason: DeleteReason,
    ) {
        match delete_unchanged(api, object).await {
            Ok(true) => {
                ctx.metrics
                    .block_deletions
                    .get_or_create(&ReasonLabels {
                        reason: reason.as_str().into(),
                    })
                    .inc();
                tracing::info!(
                    block = object.name_any(),
                    node = object.spec.node,
                    reason = reason.as_str(),
                    "deleting an empty block"
                );
            }
            // Changed since it was read (an allocation, most likely): it stays.
            Ok(false) => {}
            Err(error) => {
                self.failed(ctx, "api");
                tracing::warn!(block = object.name_any(), %error, "cannot delete an empty block");
            }
        }
    }

    /// Puts ipledger's finalizer on every live pool, and takes it off a deleted pool
    /// once none of its blocks is left (checked by a direct list, not the cache).
    async fn pool_finalizers(
        &self,
        ctx: &Context,
        pools: &HashMap<String, std::sync::Arc<IPPool>>,
        facts: &[BlockFacts],
    ) {
        let api = Api::<IPPool>::all(ctx.client.clone());
        let with_blocks: BTreeSet<&str> = facts.iter().map(|f| f.pool.as_str()).collect();
        for (name, pool) in pools {
            let ours = pool.finalizers().iter().any(|f| f == POOL_FINALIZER);
            let deleting = pool.metadata.deletion_timestamp.is_some();
            let mut changed = (**pool).clone();
            if !deleting && !ours {
                changed.finalizers_mut().push(POOL_FINALIZER.to_string());
            } else if deleting && ours && !with_blocks.contains(name.as_str()) {
                match self.blocks_left(ctx, pool).await {
                    Ok(false) => changed.finalizers_mut().retain(|f| f != POOL_FINALIZER),
                    Ok(true) => continue,
                    Err(error) => {
                        self.failed(ctx, "api");
                        tracing::warn!(pool = name, %error, "cannot list the blocks of a deleted pool");
                        continue;
                    }
                }
            } else {
                continue;
            }
            if ctx.leadership.check().is_err() {
                return;
            }
            // A replace carrying the resourceVersion read: a pool changed since is
            // decided again on the next pass.
            match api.replace(name, &PostParams::default(), &changed).await {
                Ok(_) => {
                    tracing::info!(
                        pool = name,
                        finalizer = POOL_FINALIZER,
                        added = !deleting,
                        "pool finalizer updated"
                    );
                }
                Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {}
                Err(error) => {
                    self.failed(ctx, "api");
                    tracing::warn!(pool = name, %error, "cannot update the pool's finalizer");
                }
            }
        }
    }

    /// Whether any IPBlock of `pool` exists, by a direct list.
    async fn blocks_left(&self, ctx: &Context, pool: &IPPool) -> Result<bool, kube::Error> {
        let name = pool.name_any();
        let params = ListParams::default().labels(&format!("{LABEL_POOL}={}", label_value(&name)));
        let blocks = Api::<IPBlock>::all(ctx.client.clone())
            .list_metadata(&params)
            .await?;
        Ok(!blocks.items.is_empty())
    }

    fn failed(&self, ctx: &Context, reason: &str) {
        ctx.metrics
            .reconcile_failures
            .get_or_create(&FailureLabels {
                reconciler: "reclaim".into(),
                reason: reason.into(),
            })
            .inc();
    }
}

/// True when `block` belongs to this `pool` object, not an older one of its name.
fn owned_by(block: &IPBlock, pool: &IPPool) -> bool {
    let uid = pool.meta().uid.as_deref();
    block
        .owner_references()
        .iter()
        .filter(|o| o.kind == "IPPool")
        .all(|o| Some(o.uid.as_str()) == uid)
}

fn earliest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn signed(duration: Duration) -> SignedDuration {
    SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX)
}
