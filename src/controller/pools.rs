//! Pool status: numbers, conditions and Events, from the cached pools and blocks.
//!
//! A pass runs on every change of a pool or a block, at most once a second, so a pool's
//! status is written at most once a second however fast allocations come; a status that
//! would not change is not written at all. Each write replaces `/status` carrying the
//! resourceVersion read: a pool changed in between is decided again on the next pass.

use std::time::{Duration, Instant};

use ipledger_core::{Alarms, Pool, PoolAge, PoolReport, PoolView, shadowed_by};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};

use super::Context;
use crate::api::{IPPool, IPPoolStatus};
use crate::metrics::{FailureLabels, PoolLabels, ReconcilerLabels};

/// The shortest time between two passes.
const MIN_PASS_INTERVAL: Duration = Duration::from_secs(1);
/// A pass runs at least this often, changes or not (a missed notification costs no more).
const RESYNC: Duration = Duration::from_secs(60);

/// Keeps every pool's status current while this replica leads; started once the caches
/// are synced.
pub async fn run(ctx: Context) {
    let recorder = Recorder::new(
        ctx.client.clone(),
        Reporter {
            controller: "ipledger-controller".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    let labels = ReconcilerLabels {
        reconciler: "pools".into(),
    };
    let mut changed = ctx.caches.changed.subscribe();
    loop {
        ctx.leadership.leading().await;
        let started = Instant::now();
        pass(&ctx, &recorder).await;
        ctx.metrics
            .reconcile_seconds
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        tokio::time::sleep_until((started + MIN_PASS_INTERVAL).into()).await;
        tokio::select! {
            _ = changed.changed() => {}
            _ = tokio::time::sleep(RESYNC) => {}
            _ = ctx.leadership.lost() => {}
        }
    }
}

/// One look at every pool.
async fn pass(ctx: &Context, recorder: &Recorder) {
    let pools = ctx.caches.pools.state();
    let blocks = ctx.caches.blocks.state();
    tracing::debug!(
        pools = pools.len(),
        blocks = blocks.len(),
        "pool status pass"
    );
    let ages: Vec<PoolAge> = pools
        .iter()
        .filter_map(|p| {
            Some(PoolAge {
                name: p.metadata.name.as_deref()?,
                cidr: p.spec.cidr.parse().ok()?,
                created: p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            })
        })
        .collect();
    let api = Api::<IPPool>::all(ctx.client.clone());
    for pool in &pools {
        let name = pool.name_any();
        let parsed = Pool::try_from(pool.as_ref());
        let held: Vec<_> = blocks.iter().filter(|b| b.spec.pool == name).collect();
        let view = PoolView {
            capacity: parsed
                .as_ref()
                .map(Pool::capacity)
                .map_err(|e| e.to_string()),
            shadowed_by: ages
                .iter()
                .find(|a| a.name == name)
                .and_then(|age| shadowed_by(age, &ages))
                .map(str::to_string),
            allocated: held.iter().map(|b| b.spec.allocations.len() as u128).sum(),
            blocks: held.len() as u64,
            disabled: pool.spec.disabled,
            deleting: pool.metadata.deletion_timestamp.is_some(),
        };
        let report = PoolReport::of(&view);
        record_gauges(ctx, &name, &report);
        let generation = pool.metadata.generation;
        let status = status_of(&report, pool.status.as_ref(), generation);
        if pool.status.as_ref() == Some(&status) {
            continue;
        }
        let before = alarms_of(pool.status.as_ref());
        if ctx.leadership.check().is_err() {
            return;
        }
        let mut changed = (**pool).clone();
        changed.status = Some(status);
        match api
            .replace_status(&name, &PostParams::default(), &changed)
            .await
        {
            Ok(_) => {}
            // The pool changed since the cache saw it: the watch brings the new
            // version, and the next pass decides on it.
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {
                continue;
            }
            Err(error) => {
                failed(ctx, "api");
                tracing::warn!(pool = name, %error, "cannot write the pool's status");
                continue;
            }
        }
        for event in report.events(before) {
            if ctx.leadership.check().is_err() {
                return;
            }
            let published = recorder
                .publish(
                    &Event {
                        type_: EventType::Warning,
                        reason: event.reason.into(),
                        note: Some(event.message),
                        action: "Allocate".into(),
                        secondary: None,
                    },
                    &pool.object_ref(&()),
                )
                .await;
            if let Err(error) = published {
                failed(ctx, "event");
                tracing::warn!(pool = name, %error, "cannot publish an Event");
            }
        }
    }
}

fn failed(ctx: &Context, reason: &str) {
    ctx.metrics
        .reconcile_failures
        .get_or_create(&FailureLabels {
            reconciler: "pools".into(),
            reason: reason.into(),
        })
        .inc();
}

fn record_gauges(ctx: &Context, pool: &str, report: &PoolReport) {
    let labels = PoolLabels { pool: pool.into() };
    // Gauges are floats: an IPv6 pool holds more addresses than an integer gauge counts.
    let set = |family: &prometheus_client::metrics::family::Family<PoolLabels, _>,
               value: Option<u128>| {
        let gauge: &prometheus_client::metrics::gauge::Gauge<f64, _> =
            &family.get_or_create(&labels);
        gauge.set(value.map_or(f64::NAN, |v| v as f64));
    };
    set(&ctx.metrics.pool_capacity, report.capacity);
    set(&ctx.metrics.pool_allocated, Some(report.allocated));
    set(&ctx.metrics.pool_free, report.free);
}

/// The status `report` asks for, keeping each condition's `lastTransitionTime` from the
/// current status when the condition's status did not change.
fn status_of(
    report: &PoolReport,
    current: Option<&IPPoolStatus>,
    generation: Option<i64>,
) -> IPPoolStatus {
    let now = Time(jiff::Timestamp::now());
    let conditions = report
        .conditions
        .iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" };
            let since = current
                .and_then(|s| s.conditions.iter().find(|old| old.type_ == c.kind))
                .filter(|old| old.status == status)
                .map(|old| old.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: c.kind.into(),
                status: status.into(),
                reason: c.reason.into(),
                message: c.message.clone(),
                last_transition_time: since,
                observed_generation: generation,
            }
        })
        .collect();
    IPPoolStatus {
        capacity: report.capacity.map(|c| c.to_string()),
        allocated: Some(report.allocated.to_string()),
        free: report.free.map(|f| f.to_string()),
        blocks: Some(report.blocks),
        observed_generation: generation,
        conditions,
    }
}

/// The alarms the last written status raised.
fn alarms_of(status: Option<&IPPoolStatus>) -> Alarms {
    let Some(status) = status else {
        return Alarms::default();
    };
    let is_true = |kind: &str| {
        status
            .conditions
            .iter()
            .any(|c| c.type_ == kind && c.status == "True")
    };
    let number = |s: &Option<String>| s.as_deref().and_then(|s| s.parse::<u128>().ok());
    Alarms {
        exhausted: is_true("Exhausted"),
        nearly_full: match (number(&status.allocated), number(&status.capacity)) {
            (Some(allocated), Some(capacity)) if capacity > 0 => {
                ipledger_core::nearly_full(allocated, capacity)
            }
            _ => false,
        },
        overlapping: is_true("Overlapping"),
    }
}
