//! Leader election on a coordination.k8s.io Lease, and the fence every controller write
//! passes.
//!
//! The Lease is acquired and renewed by replace carrying the resourceVersion read, so two
//! candidates can never both win one round. A leader whose renewal loses the swap, or
//! that has not renewed within the renew deadline, stops writing at once: [`Leadership`]
//! judges this from the monotonic clock at every check, not from a flag another task
//! sets, so a process that was paused (SIGSTOP, a stalled VM) and resumes after its
//! deadline writes nothing even before its election task has run again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipledger_core::{LeaseRecord, LeaseStep, lease_step};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

/// Where the Lease is and how the election runs.
#[derive(Clone, Debug)]
pub struct Election {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This candidate's identity, unique per process.
    pub identity: String,
    /// How long a renewal counts (`leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long stops acting.
    pub renew_deadline: Duration,
    /// How often candidates try to acquire, and leaders renew.
    pub retry_period: Duration,
}

/// The controller has no leadership now: the write was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not the leader (the Lease was lost or not renewed in time): write not sent")]
pub struct NotLeader;

/// Whether this process leads, shared by the election task and every writer.
#[derive(Clone)]
pub struct Leadership {
    /// Leading until this instant; `None` when not leading.
    until: Arc<Mutex<Option<Instant>>>,
    changed: watch::Sender<bool>,
}

impl Default for Leadership {
    fn default() -> Self {
        Self {
            until: Arc::default(),
            changed: watch::channel(false).0,
        }
    }
}

impl Leadership {
    /// Whether writes may be sent now.
    pub fn is_leader(&self) -> bool {
        self.until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }

    /// `Ok` when writes may be sent now: call right before each write.
    pub fn check(&self) -> Result<(), NotLeader> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(NotLeader)
        }
    }

    /// Completes when this process leads (at once if it does).
    pub async fn leading(&self) {
        let mut changes = self.changed.subscribe();
        loop {
            if self.is_leader() {
                return;
            }
            // Woken by every grant; a renewal that lapsed is seen at the next grant.
            if changes.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Completes when this process stops leading: revoked, or its deadline passed.
    pub async fn lost(&self) {
        let mut changes = self.changed.subscribe();
        loop {
            let until = *self.until.lock().unwrap_or_else(|e| e.into_inner());
            let Some(until) = until else { return };
            if Instant::now() >= until {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until.into()) => {}
                _ = changes.changed() => {}
            }
        }
    }

    /// Leads until `until` (the start of the renewal that succeeded plus the deadline).
    fn grant(&self, until: Instant) {
        *self.until.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
        self.changed.send_replace(true);
    }

    /// Stops leading now.
    fn revoke(&self) {
        let was = self
            .until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .is_some();
        if was {
            self.changed.send_replace(false);
        }
    }
}

/// The Lease as this candidate last saw it: its resourceVersion and since when.
struct Observed {
    version: Option<String>,
    since: Instant,
}

/// Runs the election until `shutdown` completes; then, when leading, stops leading and
/// releases the Lease (holder cleared) so another candidate takes over at its next try
/// instead of waiting for the Lease to expire.
pub async fn run(
    api: Api<Lease>,
    election: Election,
    leadership: Leadership,
    on_change: impl Fn(bool) + Send,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut observed: Option<Observed> = None;
    let mut was_leader = false;
    loop {
        let started = Instant::now();
        let attempt = tokio::time::timeout(
            election.renew_deadline,
            try_acquire_or_renew(&api, &election, &mut observed),
        );
        match attempt.await {
            Ok(Ok(true)) => leadership.grant(started + election.renew_deadline),
            Ok(Ok(false)) => leadership.revoke(),
            // A failed renewal keeps the grant of the last one until its deadline.
            Ok(Err(error)) => {
                tracing::warn!(lease = election.name, %error, "lease request failed")
            }
            Err(_) => tracing::warn!(lease = election.name, "lease request timed out"),
        }
        let leader = leadership.is_leader();
        if leader != was_leader {
            tracing::info!(
                lease = election.name,
                identity = election.identity,
                leader,
                "leadership changed"
            );
            on_change(leader);
            was_leader = leader;
        }
        // Followers spread their tries over the last fifth of the period, so that two of
        // them do not ask in lockstep, and still look again within one period.
        let wait = if leader {
            election.retry_period
        } else {
            election.retry_period.mul_f64(0.8 + 0.2 * fastrand::f64())
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = leadership.lost(), if leader => {}
            () = &mut shutdown => break,
        }
    }
    if leadership.is_leader() {
        leadership.revoke();
        on_change(false);
        match release(&api, &election).await {
            Ok(()) => tracing::info!(lease = election.name, "released the lease"),
            Err(error) => {
                tracing::warn!(lease = election.name, %error, "could not release the lease")
            }
        }
    }
}

/// One round: reads the Lease, decides, writes. `Ok(true)` when this candidate leads
/// after it.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    election: &Election,
    observed: &mut Option<Observed>,
) -> Result<bool, kube::Error> {
    let current = api.get_opt(&election.name).await?;
    let version = current
        .as_ref()
        .and_then(|l| l.metadata.resource_version.clone());
    let now = Instant::now();
    let since = match observed {
        Some(seen) if seen.version == version => seen.since,
        _ => now,
    };
    *observed = Some(Observed {
        version: version.clone(),
        since,
    });
    let record = current.as_ref().map(record_of);
    let step = lease_step(&election.identity, record.as_ref(), now - since);
    let spec = |acquired: Option<MicroTime>, transitions| LeaseSpec {
        holder_identity: Some(election.identity.clone()),
        lease_duration_seconds: Some(election.lease_duration.as_secs() as i32),
        acquire_time: acquired,
        renew_time: Some(MicroTime(jiff::Timestamp::now())),
        lease_transitions: Some(transitions),
        ..Default::default()
    };
    let written = match (step, current) {
        (LeaseStep::Create, _) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(election.name.clone()),
                    namespace: Some(election.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(spec(Some(MicroTime(jiff::Timestamp::now())), 0)),
            };
            api.create(&PostParams::default(), &lease).await
        }
        (LeaseStep::Follow { .. }, _) | (_, None) => return Ok(false),
        (LeaseStep::Renew, Some(mut lease)) => {
            let old = lease.spec.take().unwrap_or_default();
            lease.spec = Some(spec(old.acquire_time, old.lease_transitions.unwrap_or(0)));
            api.replace(&election.name, &PostParams::default(), &lease)
                .await
        }
        (LeaseStep::TakeOver { transitions }, Some(mut lease)) => {
            lease.spec = Some(spec(Some(MicroTime(jiff::Timestamp::now())), transitions));
            api.replace(&election.name, &PostParams::default(), &lease)
                .await
        }
    };
    match written {
        Ok(lease) => {
            *observed = Some(Observed {
                version: lease.metadata.resource_version,
                since: Instant::now(),
            });
            Ok(true)
        }
        // Another candidate wrote first (AlreadyExists on create, Conflict on replace):
        // this round is lost, and with it any leadership.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

fn record_of(lease: &Lease) -> LeaseRecord {
    let spec = lease.spec.clone().unwrap_or_default();
    LeaseRecord {
        holder: spec.holder_identity,
        duration: Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64),
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}

/// Clears the holder, if this candidate still holds the Lease, so the next candidate takes
/// over at once.
async fn release(api: &Api<Lease>, election: &Election) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&election.name).await? else {
        return Ok(());
    };
    let mut spec = lease.spec.take().unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(election.identity.as_str()) {
        return Ok(());
    }
    let now = MicroTime(jiff::Timestamp::now());
    spec.holder_identity = None;
    // The API requires a positive duration; one second is the least.
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(now.clone());
    spec.acquire_time = Some(now);
    lease.spec = Some(spec);
    api.replace(&election.name, &PostParams::default(), &lease)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_grant_lapses_at_its_deadline_without_any_task_running() {
        let leadership = Leadership::default();
        assert_eq!(leadership.check(), Err(NotLeader));
        leadership.grant(Instant::now() + Duration::from_millis(50));
        assert_eq!(leadership.check(), Ok(()));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(leadership.check(), Err(NotLeader));
        tokio::time::timeout(Duration::from_secs(1), leadership.lost())
            .await
            .expect("a lapsed grant is lost");
    }

    #[tokio::test]
    async fn revoking_wakes_whoever_waits_for_the_loss() {
        let leadership = Leadership::default();
        leadership.grant(Instant::now() + Duration::from_secs(60));
        tokio::time::timeout(Duration::from_secs(1), leadership.leading())
            .await
            .expect("leading");
        let waiter = tokio::spawn({
            let leadership = leadership.clone();
            async move { leadership.lost().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        leadership.revoke();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(leadership.check(), Err(NotLeader));
    }
}
