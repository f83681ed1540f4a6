//! Group commit: one writer task per block turns the requests queued for that block into
//! a single compare-and-swap replace.
//!
//! Fifty pods starting at once on a node all want the same block. Written one by one, each
//! write would conflict with the previous; batched, they cost one write. The writer keeps
//! the object it wrote last, so a busy block is not re-read before each batch: a stale copy
//! costs one 409 and a re-read, never a wrong decision.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use tokio::sync::{mpsc, oneshot};

use crate::api::{IPBlock, IPBlockSpec};
use crate::ledger::{self, CasError, Decision, RetryPolicy};
use crate::metrics::{AgentMetrics, WriteLabels};
use ipledger_core::{AllocError, Attachment, Block, BlockError, PodRef, Pool};

/// Most requests committed in one write; the rest wait for the next batch.
const MAX_BATCH: usize = 256;

/// A change asked of a block.
#[derive(Clone, Debug)]
pub enum Change {
    /// Allocate an address to the attachment (the next free one, or `requested`);
    /// `borrower` names this node when the block belongs to another node.
    Allocate {
        attachment: Attachment,
        pod: Option<PodRef>,
        requested: Option<IpAddr>,
        borrower: Option<String>,
    },
    /// Release whatever the attachment holds in this block.
    Release { attachment: Attachment },
    /// Release every allocation of `network` made for pods of `node` whose
    /// (containerID, ifName) is not in `live`.
    Collect {
        network: String,
        live: Arc<HashSet<(String, String)>>,
        node: String,
    },
}

/// What became of one [`Change`].
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The address now held (new, or held already).
    Allocated(IpAddr),
    /// The core refused the allocation (block full, requested address taken, ...).
    Refused(AllocError),
    /// The addresses released (none when nothing was held).
    Released(Vec<(Attachment, IpAddr)>),
    /// The change could not be decided (its pool is unknown or invalid).
    Failed(CommitError),
}

/// Why a batch could not be committed; every request of the batch gets it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CommitError {
    /// The block or its pool is gone.
    #[error("{0}")]
    Gone(String),
    /// The ledger record or the pool does not parse.
    #[error("{0}")]
    Invalid(String),
    /// The API server could not be reached or kept failing.
    #[error("{0}")]
    Unavailable(String),
}

struct Request {
    change: Change,
    reply: oneshot::Sender<Result<Outcome, CommitError>>,
}

/// Where a writer finds the pool model for its block.
pub type PoolLookup = Arc<dyn Fn(&str) -> Result<Arc<Pool>, CommitError> + Send + Sync>;

/// The handle of one block's writer task.
#[derive(Clone)]
pub struct BlockWriter {
    queue: mpsc::UnboundedSender<Request>,
    latest: Arc<Mutex<Option<Arc<IPBlock>>>>,
}

impl BlockWriter {
    /// Starts the writer of block `name`; `first` is a recent copy of it, if one is at hand.
    pub fn start(
        api: Api<IPBlock>,
        name: String,
        first: Option<IPBlock>,
        pools: PoolLookup,
        policy: RetryPolicy,
        metrics: AgentMetrics,
    ) -> Self {
        let (queue, requests) = mpsc::unbounded_channel();
        let latest = Arc::new(Mutex::new(first.map(Arc::new)));
        tokio::spawn(run(
            api,
            name,
            latest.clone(),
            requests,
            pools,
            policy,
            metrics,
        ));
        Self { queue, latest }
    }

    /// The copy of the block this writer wrote or read last, if it holds one.
    pub fn latest(&self) -> Option<Arc<IPBlock>> {
        self.latest.lock().ok().and_then(|l| l.clone())
    }

    /// Queues `change` and waits until the batch holding it is committed.
    pub async fn submit(&self, change: Change) -> Result<Outcome, CommitError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Request { change, reply })
            .map_err(|_| CommitError::Unavailable("the block writer stopped".into()))?;
        answer
            .await
            .map_err(|_| CommitError::Unavailable("the block writer stopped".into()))?
    }
}

async fn run(
    api: Api<IPBlock>,
    name: String,
    latest: Arc<Mutex<Option<Arc<IPBlock>>>>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    pools: PoolLookup,
    policy: RetryPolicy,
    metrics: AgentMetrics,
) {
    while let Some(first) = requests.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let (changes, replies): (Vec<Change>, Vec<_>) =
            batch.into_iter().map(|r| (r.change, r.reply)).unzip();
        // The swap consumes its first copy; one clone per batch, not per request.
        let cached = latest.lock().ok().and_then(|l| l.as_deref().cloned());
        let result = commit(&api, &name, cached, &changes, &pools, &policy).await;
        let answers = match result {
            Ok(written) => {
                metrics.cas_conflicts.inc_by(written.conflicts.into());
                metrics.cas_retries.inc_by(written.conflicts.into());
                if written.wrote {
                    metrics
                        .api_writes
                        .get_or_create(&WriteLabels {
                            operation: "replace".into(),
                        })
                        .inc();
                }
                if let Ok(mut l) = latest.lock() {
                    *l = Some(Arc::new(written.object));
                }
                written.value.into_iter().map(Ok).collect()
            }
            Err(error) => {
                // The copy may be what made the write fail; read afresh next time.
                if let Ok(mut l) = latest.lock() {
                    *l = None;
                }
                vec![Err(error); replies.len()]
            }
        };
        for (reply, answer) in replies.into_iter().zip(answers) {
            // A requester that gave up (timed out) no longer listens; nothing to do.
            let _ = reply.send(answer);
        }
    }
}

async fn commit(
    api: &Api<IPBlock>,
    name: &str,
    cached: Option<IPBlock>,
    changes: &[Change],
    pools: &PoolLookup,
    policy: &RetryPolicy,
) -> Result<ledger::Written<IPBlock, Vec<Outcome>>, CommitError> {
    let decide = |object: &IPBlock| -> Result<Decision<IPBlock, Vec<Outcome>>, CommitError> {
        // Releases need no pool: a pool missing from the cache must not keep an address.
        let pool = pools(&object.spec.pool);
        let mut block = Block::try_from(&object.spec)
            .map_err(|e: BlockError| CommitError::Invalid(e.to_string()))?;
        let now = Timestamp::now();
        let before = block.clone();
        let outcomes: Vec<Outcome> = changes
            .iter()
            .map(|change| apply(&mut block, &pool, change, now))
            .collect();
        if block == before {
            return Ok(Decision::Keep(outcomes));
        }
        let mut new = object.clone();
        new.spec = IPBlockSpec::from(&block);
        // A borrower marks the block so that its own watch sees it: DEL and GC on the
        // borrowing node must find the address again without listing every block.
        for (change, outcome) in changes.iter().zip(&outcomes) {
            if let (
                Change::Allocate {
                    borrower: Some(node),
                    ..
                },
                Outcome::Allocated(_),
            ) = (change, outcome)
            {
                new.labels_mut().insert(borrower_label(node), String::new());
            }
        }
        Ok(Decision::Replace(new, outcomes))
    };
    let map_err = |e| match e {
        CasError::Refused(e) => e,
        CasError::NotFound { .. } => CommitError::Gone(format!("IPBlock {name} no longer exists")),
        e @ (CasError::Contended { .. } | CasError::Api { .. }) => {
            CommitError::Unavailable(e.to_string())
        }
    };
    let from_cache = cached.is_some();
    let written = ledger::cas::update(api, name, policy, cached, decide)
        .await
        .map_err(map_err)?;
    // "Already held" decided on the cached copy alone could hand out an address that
    // someone else (the controller's leak GC) released meanwhile: confirm it on the
    // record itself. Releases need no such check: only this node allocates for its own
    // attachments, so a copy that lacks one is not missing a newer allocation.
    let answered_from_cache = from_cache && !written.wrote && written.conflicts == 0;
    let already_held = written
        .value
        .iter()
        .any(|o| matches!(o, Outcome::Allocated(_)));
    if answered_from_cache && already_held {
        return ledger::cas::update(api, name, policy, None, decide)
            .await
            .map_err(map_err);
    }
    Ok(written)
}

/// Applies one change to the block model; pure, so a retry after a conflict re-decides
/// every change of the batch on the fresh record.
fn apply(
    block: &mut Block,
    pool: &Result<Arc<Pool>, CommitError>,
    change: &Change,
    now: Timestamp,
) -> Outcome {
    match change {
        Change::Allocate {
            attachment,
            pod,
            requested,
            borrower,
        } => {
            let pool = match pool {
                Ok(pool) => pool,
                Err(e) => return Outcome::Failed(e.clone()),
            };
            let result = match requested {
                None => block.allocate(pool, attachment, pod.as_ref(), now),
                Some(ip) => block.allocate_requested(pool, *ip, attachment, pod.as_ref(), now),
            };
            match result {
                Ok(ip) => {
                    if let Some(node) = borrower {
                        block.lend(ip, node);
                    }
                    Outcome::Allocated(ip)
                }
                Err(e) => Outcome::Refused(e),
            }
        }
        Change::Release { attachment } => Outcome::Released(
            block
                .release(attachment, now)
                .map(|ip| (attachment.clone(), ip))
                .into_iter()
                .collect(),
        ),
        Change::Collect {
            network,
            live,
            node,
        } => {
            let block_node = block.node().to_string();
            let stale: Vec<Attachment> = block
                .allocations()
                .filter(|a| a.attachment.network() == network)
                // Only the runtime of the node holding the pod knows whether it lives.
                .filter(|a| a.node.as_deref().unwrap_or(&block_node) == node)
                .filter(|a| {
                    !live.contains(&(
                        a.attachment.container_id().to_string(),
                        a.attachment.if_name().to_string(),
                    ))
                })
                .map(|a| a.attachment.clone())
                .collect();
            Outcome::Released(
                stale
                    .into_iter()
                    .filter_map(|a| block.release(&a, now).map(|ip| (a, ip)))
                    .collect(),
            )
        }
    }
}

/// The label a node puts on another node's block when it borrows an address from it:
/// `borrower.ipledger.io/` and a hash of the node name (label names are at most 63
/// characters; node names may be longer).
pub fn borrower_label(node: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(node.as_bytes());
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("borrower.ipledger.io/{hex}")
}

/// The writers of the blocks this agent writes to, started on first use.
#[derive(Clone)]
pub struct Writers {
    api: Api<IPBlock>,
    pools: PoolLookup,
    policy: RetryPolicy,
    metrics: AgentMetrics,
    writers: Arc<Mutex<std::collections::HashMap<String, BlockWriter>>>,
}

impl Writers {
    /// An empty set of writers.
    pub fn new(
        api: Api<IPBlock>,
        pools: PoolLookup,
        policy: RetryPolicy,
        metrics: AgentMetrics,
    ) -> Self {
        Self {
            api,
            pools,
            policy,
            metrics,
            writers: Default::default(),
        }
    }

    /// The writer of `block`, started with `block` as its first copy if it has none yet.
    pub fn of(&self, block: &IPBlock) -> BlockWriter {
        let name = block.name_any();
        let mut writers = self
            .writers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        writers
            .entry(name.clone())
            .or_insert_with(|| {
                BlockWriter::start(
                    self.api.clone(),
                    name,
                    Some(block.clone()),
                    self.pools.clone(),
                    self.policy.clone(),
                    self.metrics.clone(),
                )
            })
            .clone()
    }

    /// The freshest copy of block `name` held by its writer, if it has one.
    pub fn latest(&self, name: &str) -> Option<Arc<IPBlock>> {
        self.writers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(name)
            .and_then(BlockWriter::latest)
    }

    /// What this agent knows of block `name` beyond its watch cache: `None` when no writer
    /// runs for it (the cache holds every allocation this agent made), `Some(None)` when its
    /// writer holds no copy (its last write failed: only a read can tell), `Some(copy)`.
    pub fn knowledge(&self, name: &str) -> Option<Option<Arc<IPBlock>>> {
        self.writers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(name)
            .map(BlockWriter::latest)
    }

    /// Stops writing `name` (the block was deleted); a later use starts a new writer.
    pub fn forget(&self, name: &str) {
        let mut writers = self
            .writers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        writers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipledger_core::PoolSpec;

    fn pool() -> Arc<Pool> {
        let spec = PoolSpec {
            cidr: "10.0.0.0/24".into(),
            block_size: Some(28),
            ..Default::default()
        };
        Arc::new(Pool::parse("p", &spec).unwrap())
    }

    fn att(network: &str, id: &str) -> Attachment {
        Attachment::new(network, id, "eth0").unwrap()
    }

    fn allocate(
        block: &mut Block,
        pool: &Result<Arc<Pool>, CommitError>,
        a: &Attachment,
        borrower: Option<&str>,
    ) -> IpAddr {
        let change = Change::Allocate {
            attachment: a.clone(),
            pod: None,
            requested: None,
            borrower: borrower.map(String::from),
        };
        match apply(block, pool, &change, Timestamp::now()) {
            Outcome::Allocated(ip) => ip,
            other => panic!("expected an address, got {other:?}"),
        }
    }

    #[test]
    fn collect_releases_only_this_nodes_dead_attachments_of_the_network() {
        let pool = Ok(pool());
        let mut block =
            Block::new(pool.as_ref().unwrap(), "10.0.0.0/28".parse().unwrap(), "n1").unwrap();
        allocate(&mut block, &pool, &att("net", "live"), None);
        allocate(&mut block, &pool, &att("net", "dead"), None);
        allocate(&mut block, &pool, &att("other", "dead-elsewhere"), None);
        allocate(&mut block, &pool, &att("net", "borrowed"), Some("n2"));
        let live = Arc::new(HashSet::from([("live".to_string(), "eth0".to_string())]));
        let collect = Change::Collect {
            network: "net".into(),
            live,
            node: "n1".into(),
        };

        let Outcome::Released(released) = apply(&mut block, &pool, &collect, Timestamp::now())
        else {
            panic!("collect releases");
        };

        let ids: Vec<&str> = released.iter().map(|(a, _)| a.container_id()).collect();
        assert_eq!(
            ids,
            ["dead"],
            "n2's borrowed address and the other network stay"
        );
        let held: Vec<&str> = block
            .allocations()
            .map(|a| a.attachment.container_id())
            .collect();
        assert_eq!(held.len(), 3);
    }

    #[test]
    fn an_unknown_pool_fails_allocations_but_not_releases() {
        let known = Ok(pool());
        let mut block = Block::new(
            known.as_ref().unwrap(),
            "10.0.0.0/28".parse().unwrap(),
            "n1",
        )
        .unwrap();
        let ip = allocate(&mut block, &known, &att("net", "c1"), None);
        let unknown = Err(CommitError::Unavailable("IPPool p is not known".into()));

        let change = Change::Allocate {
            attachment: att("net", "c2"),
            pod: None,
            requested: None,
            borrower: None,
        };
        assert!(matches!(
            apply(&mut block, &unknown, &change, Timestamp::now()),
            Outcome::Failed(_)
        ));
        let release = Change::Release {
            attachment: att("net", "c1"),
        };
        let Outcome::Released(released) = apply(&mut block, &unknown, &release, Timestamp::now())
        else {
            panic!("release answers released");
        };
        assert_eq!(released, vec![(att("net", "c1"), ip)]);
    }

    #[test]
    fn borrower_labels_are_short_stable_and_distinct() {
        let long = "n".repeat(253);
        let label = borrower_label(&long);
        let name = label.split_once('/').unwrap().1;
        assert!(name.len() <= 63, "{label}");
        assert_eq!(label, borrower_label(&long));
        assert_ne!(borrower_label("node-a"), borrower_label("node-b"));
    }
}
