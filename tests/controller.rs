//! `ipledger controller` processes against the test cluster: leader election and hand-over.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use support::controller::{Controller, LEASE};
use support::harness::Harness;

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
