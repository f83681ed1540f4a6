//! Churn: pods come and go on several nodes for 2,000 attach/detach operations, a tenth of
//! the detaches never reach the CNI DEL (the node crashed; only the Pod is deleted), and the
//! controller is killed and replaced halfway. Real agents, the real plugin binary and a real
//! controller process against the API emulator (or the cluster `IPLEDGER_TEST_KUBECONFIG`
//! names; nothing here needs the emulator).
//!
//! What must hold (DESIGN.md invariants 1 and 5), checked from the recorded history of every
//! ADD and DEL answer rather than from the final ledger alone:
//! 1. no address was ever held by two live attachments;
//! 2. every ADD and every DEL succeeded (the pool is sized so that exhaustion cannot happen);
//! 3. once the controller's leak GC has converged, the ledger records exactly the
//!    attachments still live, each with the address its ADD answered.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde_json::Value;
use support::controller::{Controller, LEASE};
use support::harness::{Harness, v4_pool};
use support::node::{Agent, network, plugin};
use support::pods::{create_pod, delete_pod, pod_args_for};

/// Attachments made; all but [`KEPT_LIVE`] are detached again, so attaches plus detaches
/// come to 2,000 operations.
const ATTACHMENTS: usize = 1010;
/// Attachments still live at the end: GC must leave their addresses alone.
const KEPT_LIVE: usize = 20;
const DETACHES: usize = ATTACHMENTS - KEPT_LIVE;
const OPERATIONS: usize = ATTACHMENTS + DETACHES;
/// A tenth of the detaches skip the CNI DEL.
const SKIPPED_DELS: usize = DETACHES / 10;
/// Live (or being attached) attachments are kept between these bounds. With the 254
/// addresses of a /24, even the skipped DELs' addresses all leaked at once (no GC) and the
/// upper bound of live ones stay below capacity: no ADD can meet exhaustion.
const MIN_LIVE: usize = KEPT_LIVE;
const MAX_LIVE: usize = 60;
/// Concurrent operations.
const WORKERS: usize = 8;
const NODES: usize = 4;
/// How long the leak GC may take, after the churn, to release every leaked address.
const CONVERGENCE: Duration = Duration::from_secs(60);
/// Short enough for the GC to converge within seconds of the churn's end.
const GC_FLAGS: [&str; 4] = ["--gc-grace", "1s", "--gc-interval", "2s"];

/// One attachment's life as the test saw it.
#[derive(Clone, Debug)]
struct Attachment {
    container_id: String,
    pod: String,
    uid: String,
    node: usize,
    address: IpAddr,
    /// When its ADD answered (the plugin exited): no earlier can the runtime use it.
    live_from: Instant,
    /// When its CNI DEL was called, or, for a skipped DEL, when its Pod's deletion was
    /// answered (the leak GC may free the address once the Pod is gone, and by then it
    /// surely is); None while live.
    live_until: Option<Instant>,
    del_skipped: bool,
}

/// What a worker does next.
enum Step {
    Attach {
        index: usize,
        node: usize,
    },
    Detach {
        attachment: Attachment,
        skip_del: bool,
    },
    /// A detach is due but every live attachment is still being attached: again soon.
    Wait,
    /// Every operation has been handed out.
    Done,
}

/// What is left to do and what happened, shared by the workers.
struct Plan {
    rng: fastrand::Rng,
    attaches_left: usize,
    detaches_left: usize,
    skips_left: usize,
    /// Live attachments plus those being attached.
    reserved: usize,
    /// Live attachments not being detached.
    live: Vec<Attachment>,
    next_index: usize,
    /// Detached attachments.
    history: Vec<Attachment>,
    /// ADDs and DELs that failed: the attachment and the plugin's answer.
    failures: Vec<String>,
}

impl Plan {
    fn new(seed: u64) -> Plan {
        Plan {
            rng: fastrand::Rng::with_seed(seed),
            attaches_left: ATTACHMENTS,
            detaches_left: DETACHES,
            skips_left: SKIPPED_DELS,
            reserved: 0,
            live: Vec::new(),
            next_index: 0,
            history: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Picks the next operation. `reserved + attaches_left - detaches_left` is always
    /// KEPT_LIVE, so below MIN_LIVE an attach is left and at MAX_LIVE a detach is.
    fn next_step(&mut self) -> Step {
        if self.attaches_left == 0 && self.detaches_left == 0 {
            return Step::Done;
        }
        let attach = if self.detaches_left == 0 || self.reserved < MIN_LIVE {
            true
        } else if self.attaches_left == 0 || self.reserved >= MAX_LIVE {
            false
        } else {
            self.rng.usize(..self.attaches_left + self.detaches_left) < self.attaches_left
        };
        if attach {
            self.attaches_left -= 1;
            self.reserved += 1;
            self.next_index += 1;
            return Step::Attach {
                index: self.next_index - 1,
                node: self.rng.usize(..NODES),
            };
        }
        if self.live.is_empty() {
            return Step::Wait;
        }
        let attachment = self.live.swap_remove(self.rng.usize(..self.live.len()));
        // Exactly SKIPPED_DELS of the detaches skip, spread at random.
        let skip_del = self.rng.usize(..self.detaches_left) < self.skips_left;
        self.skips_left -= usize::from(skip_del);
        self.detaches_left -= 1;
        self.reserved -= 1;
        Step::Detach {
            attachment,
            skip_del,
        }
    }
}

/// The pods being churned, on the agents' nodes.
struct Workload<'a> {
    h: &'a Harness,
    namespace: String,
    nets: Vec<Value>,
    plan: Mutex<Plan>,
    operations: AtomicUsize,
}

impl Workload<'_> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn worker(&self) {
        loop {
            let step = self.lock().next_step();
            match step {
                Step::Attach { index, node } => self.attach(index, node).await,
                Step::Detach {
                    attachment,
                    skip_del,
                } => self.detach(attachment, skip_del).await,
                Step::Wait => tokio::time::sleep(Duration::from_millis(5)).await,
                Step::Done => return,
            }
        }
    }

    /// As kubelet does: the Pod exists (with its UID) before the runtime runs ADD.
    async fn attach(&self, index: usize, node: usize) {
        let container_id = format!("churn{index:04}");
        let pod = format!("pod{index:04}");
        let uid = create_pod(&self.h.client(), &self.namespace, &pod).await;
        let args = pod_args_for(&self.namespace, &pod, &uid, &container_id);
        let run = plugin("ADD", &self.nets[node], &container_id, "eth0", &args).await;
        let live_from = Instant::now();
        self.operations.fetch_add(1, Ordering::SeqCst);
        if run.code != 0 {
            delete_pod(&self.h.client(), &self.namespace, &pod).await;
            let mut plan = self.lock();
            plan.reserved -= 1;
            plan.failures
                .push(format!("ADD {container_id}: {} {}", run.result, run.stderr));
            return;
        }
        let address = run.addresses()[0].addr();
        self.lock().live.push(Attachment {
            container_id,
            pod,
            uid,
            node,
            address,
            live_from,
            live_until: None,
            del_skipped: false,
        });
    }

    /// A normal detach runs DEL, then the Pod goes; a skipped DEL is a node that died
    /// with the pod: only the Pod object is deleted, and the leak GC must find the rest.
    async fn detach(&self, mut attachment: Attachment, skip_del: bool) {
        let client = self.h.client();
        if skip_del {
            delete_pod(&client, &self.namespace, &attachment.pod).await;
            attachment.live_until = Some(Instant::now());
            attachment.del_skipped = true;
        } else {
            attachment.live_until = Some(Instant::now());
            let id = &attachment.container_id;
            // The runtime passes DEL the arguments it passed ADD.
            let args = pod_args_for(&self.namespace, &attachment.pod, &attachment.uid, id);
            let run = plugin("DEL", &self.nets[attachment.node], id, "eth0", &args).await;
            if run.code != 0 {
                self.lock()
                    .failures
                    .push(format!("DEL {id}: {} {}", run.result, run.stderr));
            }
            delete_pod(&client, &self.namespace, &attachment.pod).await;
        }
        self.operations.fetch_add(1, Ordering::SeqCst);
        self.lock().history.push(attachment);
    }
}

/// Two attachments given one address while both were live: (earlier, later).
fn overlaps(history: &[Attachment]) -> Vec<(&Attachment, &Attachment)> {
    let mut by_address: BTreeMap<IpAddr, Vec<&Attachment>> = BTreeMap::new();
    for a in history {
        by_address.entry(a.address).or_default().push(a);
    }
    let mut found = Vec::new();
    for lives in by_address.values_mut() {
        lives.sort_by_key(|a| a.live_from);
        // The life ending last so far: any later start before its end overlaps it.
        let mut longest: Option<&Attachment> = None;
        for &a in lives.iter() {
            if let Some(before) = longest {
                if before.live_until.is_none_or(|end| end > a.live_from) {
                    found.push((before, a));
                }
                if before
                    .live_until
                    .is_some_and(|end| a.live_until.is_none_or(|e| e > end))
                {
                    longest = Some(a);
                }
            } else {
                longest = Some(a);
            }
        }
    }
    found
}

/// How the ledger differs from the live attachments, by what each difference means.
#[derive(Default)]
struct Difference {
    /// Live attachments the ledger has not (or at another address): GC freed a live pod's
    /// address, or the agent lost it.
    live_missing: Vec<(String, IpAddr)>,
    /// Records of attachments whose DEL was skipped: leaks the GC has not released yet.
    leaked_skipped: Vec<(String, IpAddr)>,
    /// Records of anything else: DEL'd attachments still held, or unknown records.
    leaked_other: Vec<(String, IpAddr)>,
    /// Records the ledger holds more than once.
    repeated: Vec<(String, IpAddr)>,
}

impl Difference {
    fn between(
        ledger: &[(String, IpAddr)],
        live: &[(String, IpAddr)],
        history: &[Attachment],
    ) -> Difference {
        let skipped: BTreeSet<&str> = history
            .iter()
            .filter(|a| a.del_skipped)
            .map(|a| a.container_id.as_str())
            .collect();
        let mut d = Difference {
            repeated: ledger
                .windows(2)
                .filter(|w| w[0] == w[1])
                .map(|w| w[0].clone())
                .collect(),
            ..Difference::default()
        };
        let ledger: BTreeSet<_> = ledger.iter().cloned().collect();
        let live: BTreeSet<_> = live.iter().cloned().collect();
        d.live_missing = live.difference(&ledger).cloned().collect();
        for record in ledger.difference(&live) {
            if skipped.contains(record.0.as_str()) {
                d.leaked_skipped.push(record.clone());
            } else {
                d.leaked_other.push(record.clone());
            }
        }
        d
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |records: &[(String, IpAddr)]| {
            records
                .iter()
                .take(10)
                .map(|(id, ip)| format!("{id}={ip}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        write!(
            f,
            "{} live attachments missing or at another address [{}]; \
             {} skipped-DEL allocations not released [{}]; \
             {} other allocations held [{}]; {} records held twice [{}]",
            self.live_missing.len(),
            show(&self.live_missing),
            self.leaked_skipped.len(),
            show(&self.leaked_skipped),
            self.leaked_other.len(),
            show(&self.leaked_other),
            self.repeated.len(),
            show(&self.repeated),
        )
    }
}

async fn lease_holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases
        .get_opt(name)
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_with_skipped_dels_and_a_controller_restart_leaks_and_duplicates_nothing() {
    let seed = std::env::var("IPLEDGER_CHURN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("churn seed {seed} (IPLEDGER_CHURN_SEED repeats it)");

    let h = Harness::new().await;
    let client = h.client();
    let namespace = test_support::namespace(&client).await;
    let pool = h.pool("churn", v4_pool("10.91.0.0/24", 28)).await;
    let mut agents: Vec<Agent> = Vec::new();
    for i in 0..NODES {
        agents.push(h.agent(&test_support::unique(&format!("churn{i}"))).await);
    }
    let lease = test_support::unique("churn");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let first = Controller::start_with(&h.kubeconfig, &lease, &format!("{lease}-a"), &GC_FLAGS);

    let workload = Workload {
        h: &h,
        namespace: namespace.clone(),
        nets: agents
            .iter()
            .map(|a| network("pods", "1.1.0", &a.socket, &[&pool]))
            .collect(),
        plan: Mutex::new(Plan::new(seed)),
        operations: AtomicUsize::new(0),
    };

    let started = Instant::now();
    let workers = futures::future::join_all((0..WORKERS).map(|_| workload.worker()));
    // Halfway through, the controller dies at once (SIGKILL, perhaps mid-pass) and a new
    // process takes its place: it must wait out the dead one's Lease and carry on, while
    // the churn goes on.
    let restart = async {
        let mut first = first;
        while workload.operations.load(Ordering::SeqCst) < OPERATIONS / 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let at = workload.operations.load(Ordering::SeqCst);
        first.child.kill().await.expect("SIGKILL the controller");
        let killed = Instant::now();
        let second =
            Controller::start_with(&h.kubeconfig, &lease, &format!("{lease}-b"), &GC_FLAGS);
        test_support::wait_for(|| async {
            (lease_holder(&leases, &lease).await.as_deref() == Some(second.identity.as_str()))
                .then_some(())
        })
        .await
        .expect("the restarted controller takes the Lease");
        (second, at, killed.elapsed())
    };
    let (_, (second, restarted_at, took_over)) = tokio::join!(workers, restart);
    let churned = started.elapsed();

    let (history, live, failures) = {
        let mut plan = workload.lock();
        let live = std::mem::take(&mut plan.live);
        let mut history = std::mem::take(&mut plan.history);
        history.extend(live.iter().cloned());
        (history, live, std::mem::take(&mut plan.failures))
    };
    let addresses: BTreeSet<IpAddr> = history.iter().map(|a| a.address).collect();
    let overlapping = overlaps(&history);
    let skipped = history.iter().filter(|a| a.del_skipped).count();
    eprintln!(
        "churn: {OPERATIONS} operations ({} attachments, {} detaches, {skipped} without DEL) \
         on {NODES} nodes in {churned:?}; {} distinct addresses, {} ADDs answered with an \
         address used before; controller killed after {restarted_at} operations, its \
         successor led {took_over:?} later (lease {LEASE:?}); {} failed ADD/DEL; {} duplicates",
        history.len(),
        history.len() - live.len(),
        addresses.len(),
        history.len() - addresses.len(),
        failures.len(),
        overlapping.len(),
    );

    // 1. No address was held by two live attachments at any moment.
    assert!(
        overlapping.is_empty(),
        "addresses given to an attachment while another held them: {}",
        overlapping
            .iter()
            .take(10)
            .map(|(a, b)| format!(
                "{} to {} at +{:?} while {} held it from +{:?} until {}",
                b.address,
                b.container_id,
                b.live_from - started,
                a.container_id,
                a.live_from - started,
                a.live_until
                    .map_or("the end".to_string(), |t| format!("+{:?}", t - started)),
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    // 2. Every ADD and DEL succeeded.
    assert!(failures.is_empty(), "failed: {failures:#?}");
    assert_eq!(history.len(), ATTACHMENTS);
    assert_eq!(live.len(), KEPT_LIVE);
    assert_eq!(skipped, SKIPPED_DELS);

    // 3. After GC converges, the ledger holds exactly the live attachments' addresses,
    // each once.
    let mut live_records: Vec<(String, IpAddr)> = live
        .iter()
        .map(|a| (a.container_id.clone(), a.address))
        .collect();
    live_records.sort();
    let waited = Instant::now();
    let ledger = loop {
        let mut ledger: Vec<(String, IpAddr)> = h
            .ledger(&pool)
            .await
            .into_iter()
            .map(|(ip, id, _)| (id, ip))
            .collect();
        ledger.sort();
        if ledger == live_records || waited.elapsed() > CONVERGENCE {
            break ledger;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let converged = waited.elapsed();
    let difference = Difference::between(&ledger, &live_records, &history);
    eprintln!("after {converged:?} of GC: {difference}");
    assert!(
        ledger == live_records,
        "the ledger is not the live attachments {converged:?} after the churn: {difference}"
    );

    drop(second);
    for agent in &mut agents {
        agent.stop().await;
    }
    for a in &live {
        delete_pod(&client, &namespace, &a.pod).await;
    }
    h.delete_pool(&pool).await;
    test_support::delete_namespace(&client, &namespace).await;
}

/// The history check itself: lives of one address that touch do not overlap; one that
/// starts before another ends, or while another never ended, does.
#[test]
fn overlaps_are_found_only_between_lives_of_one_address() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let life = |id: &str, ip: &str, from: u64, until: Option<u64>| Attachment {
        container_id: id.into(),
        pod: id.into(),
        uid: id.into(),
        node: 0,
        address: ip.parse().unwrap(),
        live_from: at(from),
        live_until: until.map(at),
        del_skipped: false,
    };
    let clean = [
        life("a", "10.0.0.1", 0, Some(10)),
        life("b", "10.0.0.1", 10, Some(20)),
        life("c", "10.0.0.1", 30, None),
        life("d", "10.0.0.2", 5, None),
    ];
    assert!(overlaps(&clean).is_empty());

    let found = |history: &[Attachment]| -> Vec<(String, String)> {
        overlaps(history)
            .into_iter()
            .map(|(a, b)| (a.container_id.clone(), b.container_id.clone()))
            .collect()
    };
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    // A long life hides no overlap behind a short one that starts inside it.
    let nested = [
        life("long", "10.0.0.1", 0, Some(100)),
        life("short", "10.0.0.1", 10, Some(20)),
        life("later", "10.0.0.1", 50, Some(60)),
    ];
    assert_eq!(
        found(&nested),
        [pair("long", "short"), pair("long", "later")]
    );
    let after_a_live_one = [
        life("kept", "10.0.0.1", 0, None),
        life("new", "10.0.0.1", 500, None),
    ];
    assert_eq!(found(&after_a_live_one), [pair("kept", "new")]);
}
