//! The process's Prometheus metrics: one registry, families named `ipledger_*`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Labels of a request served by the agent.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `add`, `del`, `check`, `gc` or `status`.
    pub verb: String,
    /// `ok`, or the failure reason (`exhausted`, `unavailable`, ...).
    pub result: String,
}

/// Labels naming one kind of API write.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `create`, `replace` or `delete`.
    pub operation: String,
}

/// Labels naming a pool.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// The IPPool's name.
    pub pool: String,
}

/// Labels naming why something happened (a failure; a block deletion).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// A short, stable reason, such as `exhausted` or `api_unreachable`.
    pub reason: String,
}

/// The agent's metrics.
#[derive(Clone)]
pub struct AgentMetrics {
    /// Requests served, by verb and result.
    pub requests: Family<RequestLabels, Counter>,
    /// Time to answer a request, by verb and result.
    pub request_seconds: Family<RequestLabels, Histogram>,
    /// 409 Conflicts met by ledger writes: another writer changed the block first.
    pub cas_conflicts: Counter,
    /// Writes sent to the API server, by operation.
    pub api_writes: Family<WriteLabels, Counter>,
    /// Blocks affine to this node, by pool.
    pub blocks_held: Family<PoolLabels, Gauge>,
    /// Failed requests, by reason.
    pub failures: Family<ReasonLabels, Counter>,
    /// Reads made because a watch cache did not hold the pod, namespace or Node that
    /// pool choice looks at (the runtime ran ADD before the watch event arrived).
    pub cache_misses: Counter,
    /// Blocks claimed ahead of need, in the background, by pool.
    pub claims_ahead: Family<PoolLabels, Counter>,
    /// ADDs that waited for a block claim, by pool: each is an ADD a claim ahead did not
    /// spare.
    pub claim_waits: Family<PoolLabels, Counter>,
}

impl AgentMetrics {
    /// Creates the agent's metric families and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            // 100 µs to ~3.3 s: an allocation from a cached block is sub-millisecond, one
            // that claims a block or retries conflicts takes several round trips.
            request_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 16))
            }),
            cas_conflicts: Counter::default(),
            api_writes: Family::default(),
            blocks_held: Family::default(),
            failures: Family::default(),
            cache_misses: Counter::default(),
            claims_ahead: Family::default(),
            claim_waits: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("ipledger_agent");
        r.register(
            "requests",
            "Requests served, by verb and result",
            metrics.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time to answer a request, by verb and result",
            metrics.request_seconds.clone(),
        );
        r.register(
            "cas_conflicts",
            "409 Conflicts met by ledger writes",
            metrics.cas_conflicts.clone(),
        );
        r.register(
            "api_writes",
            "Writes sent to the API server, by operation",
            metrics.api_writes.clone(),
        );
        r.register(
            "blocks_held",
            "Blocks affine to this node, by pool",
            metrics.blocks_held.clone(),
        );
        r.register(
            "failures",
            "Failed requests, by reason",
            metrics.failures.clone(),
        );
        r.register(
            "cache_misses",
            "Reads made because a watch cache did not hold the pod, namespace or Node pool choice needs",
            metrics.cache_misses.clone(),
        );
        r.register(
            "claims_ahead",
            "Blocks claimed ahead of need, in the background, by pool",
            metrics.claims_ahead.clone(),
        );
        r.register(
            "claim_waits",
            "ADDs that waited for a block claim, by pool",
            metrics.claim_waits.clone(),
        );
        metrics
    }
}

/// Labels naming a reconciler.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcilerLabels {
    /// `pools` or `reclaim`.
    pub reconciler: String,
}

/// Labels of a failed reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// The reconciler.
    pub reconciler: String,
    /// A short, stable reason, such as `conflict` or `api_unreachable`.
    pub reason: String,
}

/// The controller's metrics.
#[derive(Clone)]
pub struct ControllerMetrics {
    /// 1 while this replica leads, else 0.
    pub leader: Gauge,
    /// Addresses a pool can allocate (a float: an IPv6 pool's count exceeds 64 bits).
    pub pool_capacity: Family<PoolLabels, Gauge<f64, AtomicU64>>,
    /// Addresses allocated in a pool.
    pub pool_allocated: Family<PoolLabels, Gauge<f64, AtomicU64>>,
    /// Addresses of a pool not allocated.
    pub pool_free: Family<PoolLabels, Gauge<f64, AtomicU64>>,
    /// Allocations found whose pod is gone, before the re-check.
    pub gc_candidates: Counter,
    /// Leaked allocations released.
    pub gc_releases: Counter,
    /// Empty blocks deleted, by reason: `pool_deleted`, `node_gone` or `empty`.
    pub block_deletions: Family<ReasonLabels, Counter>,
    /// Time of one reconcile pass, by reconciler.
    pub reconcile_seconds: Family<ReconcilerLabels, Histogram>,
    /// Failed reconciles, by reconciler and reason.
    pub reconcile_failures: Family<FailureLabels, Counter>,
}

impl ControllerMetrics {
    /// Creates the controller's metric families and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            leader: Gauge::default(),
            pool_capacity: Family::default(),
            pool_allocated: Family::default(),
            pool_free: Family::default(),
            gc_candidates: Counter::default(),
            gc_releases: Counter::default(),
            block_deletions: Family::default(),
            // 1 ms to ~33 s: a pass over cached objects is fast, one that writes waits
            // for the API server.
            reconcile_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            }),
            reconcile_failures: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("ipledger_controller");
        r.register(
            "leader",
            "1 while this replica leads",
            metrics.leader.clone(),
        );
        r.register(
            "pool_capacity_addresses",
            "Addresses a pool can allocate",
            metrics.pool_capacity.clone(),
        );
        r.register(
            "pool_allocated_addresses",
            "Addresses allocated in a pool",
            metrics.pool_allocated.clone(),
        );
        r.register(
            "pool_free_addresses",
            "Addresses of a pool not allocated",
            metrics.pool_free.clone(),
        );
        r.register(
            "gc_candidates",
            "Allocations whose pod seemed gone, before the re-check",
            metrics.gc_candidates.clone(),
        );
        r.register(
            "gc_releases",
            "Leaked allocations released",
            metrics.gc_releases.clone(),
        );
        r.register(
            "block_deletions",
            "Empty blocks deleted, by reason",
            metrics.block_deletions.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Time of one reconcile pass, by reconciler",
            metrics.reconcile_seconds.clone(),
        );
        r.register(
            "reconcile_failures",
            "Failed reconciles, by reconciler and reason",
            metrics.reconcile_failures.clone(),
        );
        metrics
    }
}

/// Renders `registry` in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_metrics_are_exposed_with_their_labels() {
        let mut registry = Registry::default();
        let metrics = AgentMetrics::register(&mut registry);
        let labels = RequestLabels {
            verb: "add".into(),
            result: "ok".into(),
        };
        metrics.requests.get_or_create(&labels).inc();
        metrics
            .request_seconds
            .get_or_create(&labels)
            .observe(0.002);
        metrics
            .api_writes
            .get_or_create(&WriteLabels {
                operation: "replace".into(),
            })
            .inc_by(3);
        metrics.cas_conflicts.inc();

        let text = encode(&registry);

        assert!(
            text.contains(r#"ipledger_agent_requests_total{verb="add",result="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ipledger_agent_api_writes_total{operation="replace"} 3"#),
            "{text}"
        );
        assert!(
            text.contains("ipledger_agent_cas_conflicts_total 1"),
            "{text}"
        );
        // Every conflict is retried, so a retry counter would only repeat the conflicts.
        assert!(!text.contains("cas_retries"), "{text}");
        assert!(
            text.contains(
                r#"ipledger_agent_request_duration_seconds_count{verb="add",result="ok"} 1"#
            ),
            "{text}"
        );
    }
}
