//! `ipledger controller` processes against the test cluster: leader election and hand-over.

mod support;

use std::time::{Duration, Instant};

use ipledger::api::IPPool;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams};
use support::controller::{Controller, LEASE};
use support::harness::{Harness, v4_pool};

async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
}

/// Waits until the Lease names a holder other than `not` (any holder when `None`).
async fn new_holder(
    leases: &Api<Lease>,
    name: &str,
    not: Option<&str>,
    within: Duration,
) -> String {
    let started = Instant::now();
    loop {
        if let Some(h) = holder(leases, name).await
            && Some(h.as_str()) != not
        {
            return h;
        }
        assert!(
            started.elapsed() < within,
            "no new holder of {name} within {within:?} (was {not:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn two_controllers(harness: &Harness, lease: &str) -> (Controller, Controller, Api<Lease>) {
    let leases: Api<Lease> = Api::namespaced(harness.client(), "default");
    let a = Controller::start(&harness.kubeconfig, lease, &format!("{lease}-a"));
    let b = Controller::start(&harness.kubeconfig, lease, &format!("{lease}-b"));
    (a, b, leases)
}

/// Which of the two leads, by the Lease, after checking that it stays the leader.
async fn the_leader<'a>(
    leases: &Api<Lease>,
    lease: &str,
    a: &'a mut Controller,
    b: &'a mut Controller,
) -> (&'a mut Controller, &'a mut Controller) {
    let first = new_holder(leases, lease, None, Duration::from_secs(20)).await;
    // Exactly one leads, and keeps leading while both run.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(holder(leases, lease).await.as_deref(), Some(first.as_str()));
    }
    if first == a.identity {
        (a, b)
    } else {
        assert_eq!(first, b.identity);
        (b, a)
    }
}

#[tokio::test]
async fn one_leads_and_a_killed_leader_is_replaced_within_the_lease_duration() {
    let harness = Harness::new().await;
    let lease = test_support::unique("election-kill");
    let (mut a, mut b, leases) = two_controllers(&harness, &lease).await;
    let (leader, follower) = the_leader(&leases, &lease, &mut a, &mut b).await;

    leader.child.kill().await.unwrap();
    let killed = Instant::now();
    // Expiry is judged from when the follower last saw the Lease change: at most one
    // retry period before the kill, plus the duration, plus a retry period and its jitter.
    let next = new_holder(&leases, &lease, Some(&leader.identity), LEASE * 3).await;
    let took = killed.elapsed();
    assert_eq!(next, follower.identity);
    assert!(
        took <= LEASE + Duration::from_millis(1500),
        "hand-over after a SIGKILL took {took:?}"
    );
    // A dead leader is never waited for in less than the lease's duration minus one
    // renewal period: the follower does not take over a live lease.
    assert!(
        took >= LEASE - Duration::from_millis(600),
        "took over after {took:?}"
    );
}

#[tokio::test]
async fn a_terminated_leader_hands_over_within_two_seconds() {
    let harness = Harness::new().await;
    let lease = test_support::unique("election-term");
    let (mut a, mut b, leases) = two_controllers(&harness, &lease).await;
    let (leader, follower) = the_leader(&leases, &lease, &mut a, &mut b).await;

    leader.signal("TERM");
    let terminated = Instant::now();
    let exited = tokio::time::timeout(Duration::from_secs(10), leader.child.wait())
        .await
        .expect("the leader exits on SIGTERM")
        .unwrap();
    assert!(exited.success(), "{exited:?}");
    let next = new_holder(&leases, &lease, Some(&leader.identity), LEASE * 2).await;
    let took = terminated.elapsed();
    assert_eq!(next, follower.identity);
    assert!(
        took <= Duration::from_secs(2),
        "hand-over after SIGTERM took {took:?}"
    );
    let lease = leases.get(&lease).await.unwrap().spec.unwrap();
    assert_eq!(lease.lease_transitions, Some(1), "{lease:?}");
}

/// Whether process `pid` is stopped (state `T` in `/proc/<pid>/stat`).
fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the parenthesised command name, which may hold spaces.
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().next().map(|state| state == "T")
        })
        .unwrap_or(false)
}

fn describe(e: &kube_emulator::AuditEvent, since: Instant) -> String {
    format!(
        "{} {} {}/{} -> {} at +{:?}",
        e.verb,
        e.object_resource(),
        e.namespace.as_deref().unwrap_or("-"),
        e.name.as_deref().unwrap_or("-"),
        e.code,
        e.received.saturating_duration_since(since)
    )
}

/// A leader paused (SIGSTOP) past its renew deadline, and resumed once the other replica
/// leads, writes nothing: its fence has lapsed, so there are never two writers. A write it
/// attempts is refused (a Lease replace carrying the version it read is a 409), which
/// changes nothing; what must be absent are writes that succeeded.
#[tokio::test]
async fn a_leader_resumed_after_sigstop_past_its_deadline_writes_nothing() {
    let harness = Harness::with_users(&["ctl-a", "ctl-b"]).await;
    let Some(emulator) = harness.cluster.emulator.as_ref() else {
        test_support::skip(
            "the controllers' writes are told apart by the emulator's audit log, which a real cluster does not serve",
        );
        return;
    };
    let lease = test_support::unique("election-stop");
    let leases: Api<Lease> = Api::namespaced(harness.client(), "default");
    let start = |user: &str| {
        let kubeconfig = harness.kubeconfig_of(user).unwrap();
        Controller::start(kubeconfig, &lease, &format!("{lease}-{user}"))
    };
    let (mut a, mut b) = (start("ctl-a"), start("ctl-b"));
    let users = [(a.identity.clone(), "ctl-a"), (b.identity.clone(), "ctl-b")];
    let user_of = |identity: &str| users.iter().find(|u| u.0 == identity).unwrap().1;
    let (leader, follower) = the_leader(&leases, &lease, &mut a, &mut b).await;
    let (old_user, new_user) = (user_of(&leader.identity), user_of(&follower.identity));

    let pool = harness.pool("stop", v4_pool("10.60.0.0/16", 26)).await;
    let pools: Api<IPPool> = Api::all(harness.client());
    test_support::wait_for(|| {
        let pools = pools.clone();
        let pool = pool.clone();
        async move {
            let status = pools.get(&pool).await.ok()?.status?;
            (status.allocated.is_some() && !status.conditions.is_empty()).then_some(())
        }
    })
    .await
    .expect("the leader writes the new pool's status");

    // Work the leader has yet to do when it stops: it writes a pool's status at most once a
    // second and has just written this one, so the status the new exclusion asks for waits
    // for its next pass, the first thing it would write on resuming were it not fenced.
    pools
        .patch(
            &pool,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"exclude": ["10.60.0.0/28"]}})),
        )
        .await
        .unwrap();
    let pid = leader.child.id().expect("the leader runs");
    let stopping = Instant::now();
    leader.signal("STOP");
    assert!(
        test_support::wait_for(|| async { is_stopped(pid).then_some(()) })
            .await
            .is_some(),
        "the leader stops on SIGSTOP"
    );
    let next = new_holder(&leases, &lease, Some(&leader.identity), LEASE * 3).await;
    assert_eq!(next, follower.identity);

    // A status that must change: the new leader has to write it.
    let disabled = pools
        .patch(
            &pool,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"disabled": true}})),
        )
        .await
        .unwrap();
    let generation = disabled.metadata.generation;
    test_support::wait_for(|| {
        let pools = pools.clone();
        let pool = pool.clone();
        async move {
            let status = pools.get(&pool).await.ok()?.status?;
            let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
            (status.observed_generation == generation && ready.reason == "Disabled").then_some(())
        }
    })
    .await
    .expect("the new leader writes the disabled pool's status");

    leader.signal("CONT");
    let resumed = Instant::now();
    // Several retry periods: time for the resumed process's election round, its status
    // pass (it still sees the pool change) and any Event.
    tokio::time::sleep(LEASE).await;
    assert!(
        leader.child.try_wait().unwrap().is_none(),
        "the resumed leader keeps running"
    );

    let log = emulator.audit();
    let status_of_pool = |e: &&kube_emulator::AuditEvent| {
        e.changed_something()
            && e.object_resource() == "ipledger.io/ippools/status"
            && e.name.as_deref() == Some(pool.as_str())
    };
    // Writes only: the log records the controllers' gets, lists and watches too.
    let old: Vec<_> = log
        .iter()
        .filter(|e| e.user == old_user && e.is_write())
        .collect();
    let before: Vec<_> = old.iter().filter(|e| e.received < stopping).collect();
    assert!(
        before.iter().any(|e| status_of_pool(e)),
        "{old_user} wrote the pool's status while it led: {:?}",
        before
            .iter()
            .map(|e| describe(e, stopping))
            .collect::<Vec<_>>()
    );
    assert!(
        before
            .iter()
            .any(|e| e.changed_something() && e.resource == "leases"),
        "{old_user} renewed the Lease while it led"
    );
    let new_wrote: Vec<_> = log
        .iter()
        .filter(|e| e.user == new_user && e.changed_something())
        .collect();
    assert!(
        new_wrote
            .iter()
            .filter(|e| e.received >= stopping)
            .any(status_of_pool),
        "{new_user} wrote the pool's status once it led"
    );
    assert!(
        new_wrote.iter().all(|e| e.received >= stopping),
        "{new_user} wrote while it followed: {:?}",
        new_wrote
            .iter()
            .filter(|e| e.received < stopping)
            .map(|e| describe(e, stopping))
            .collect::<Vec<_>>()
    );

    // A request sent just before the signal landed may reach the server a moment later;
    // nothing sent after it can arrive before the resume, seconds later.
    let in_flight = stopping + Duration::from_millis(250);
    let after: Vec<_> = old.iter().filter(|e| e.received >= stopping).collect();
    eprintln!(
        "{old_user} (the stopped leader) attempted {} writes at or after SIGSTOP (resumed at +{:?}):",
        after.len(),
        resumed - stopping
    );
    for e in &after {
        eprintln!("  {}", describe(e, stopping));
    }
    let late: Vec<_> = after.iter().filter(|e| e.received >= in_flight).collect();
    let written: Vec<_> = late
        .iter()
        .filter(|e| e.changed_something())
        .map(|e| describe(e, stopping))
        .collect();
    assert!(
        written.is_empty(),
        "{old_user} wrote after it was stopped past its deadline: {written:?}"
    );
    // Its election may still try the Lease (and be refused); every other write passes the
    // fence, which has lapsed, so none is even sent.
    let fenced: Vec<_> = late
        .iter()
        .filter(|e| e.resource != "leases")
        .map(|e| describe(e, stopping))
        .collect();
    assert!(
        fenced.is_empty(),
        "{old_user} sent writes past its lapsed fence: {fenced:?}"
    );
}
