//! Group commit: one writer task per block turns the requests queued for that block into
//! a single compare-and-swap replace.
//!
//! Fifty pods starting at once on a node all want the same block. Written one by one, each
//! write would conflict with the previous; batched, they cost one write. The writer keeps
//! the object it wrote last, so a busy block is not re-read before each batch: a stale copy
//! costs one 409 and a re-read, never a wrong decision.

use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use tokio::sync::{mpsc, oneshot};

use crate::api::usage::record_usage;
use crate::api::{IPBlock, IPBlockSpec, borrower_label};
use crate::ledger::{self, CasError, Decision, RetryPolicy};
use crate::metrics::{AgentMetrics, WriteLabels};
use ipledger_core::{AllocError, Block, BlockError, Change, NeedsPool, Outcome, Pool, PoolError};

/// Most requests committed in one write; the rest wait for the next batch.
const MAX_BATCH: usize = 256;

/// Most requests queued for one block; beyond it a request is answered "busy, try again"
/// at once rather than piling up behind writes the API server is slow to answer.
const MAX_QUEUE: usize = 4 * MAX_BATCH;

/// What one change's request gets back: its outcome, or why it could not be decided.
pub type Answer = Result<Outcome, CommitError>;

/// Why a change could not be decided or its batch not committed; every request of a
/// failed batch gets the batch's error. `InvalidPool` and `ApiRefused` are permanent (no
/// try succeeds until the pool, RBAC or the CRD is fixed); every other variant is transient.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CommitError {
    /// The block was deleted.
    #[error("IPBlock {block} no longer exists")]
    Gone { block: String },
    /// The ledger record does not parse.
    #[error("IPBlock {block} holds a record ipledger cannot read: {error}")]
    Corrupt { block: String, error: BlockError },
    /// The block's pool is not in this agent's cache (yet, or any more).
    #[error("IPPool {pool} is not (or no longer) known to this agent")]
    UnknownPool { pool: String },
    /// The block's pool is invalid: no allocation from it can succeed until it is fixed.
    #[error(transparent)]
    InvalidPool(PoolError),
    /// The API server could not be reached, kept failing or was too contended.
    #[error("{0}")]
    Api(String),
    /// The API server refused the write for good (400, 403, 422, ...): the same write
    /// gets the same answer until RBAC, the CRD or the object is fixed.
    #[error("the Kubernetes API refused the write of IPBlock {block}: {code} {reason}: {message}")]
    ApiRefused {
        block: String,
        code: u16,
        reason: String,
        message: String,
    },
    /// The writer task is gone (the agent is shutting down).
    #[error("the block writer of IPBlock {block} stopped")]
    Stopped { block: String },
    /// Too many requests are queued for the block already.
    #[error("IPBlock {block} has {MAX_QUEUE} requests queued for writing already")]
    Busy { block: String },
}

struct Request {
    change: Change,
    reply: oneshot::Sender<Answer>,
}

/// A pool as a writer needs it: the object's UID and the model.
#[derive(Clone)]
pub struct PoolEntry {
    /// `metadata.uid` of the IPPool object.
    pub uid: Option<String>,
    /// The validated model.
    pub model: Arc<Pool>,
}

/// Where a writer finds the pool for its block.
pub type PoolLookup = Arc<dyn Fn(&str) -> Result<PoolEntry, CommitError> + Send + Sync>;

/// The handle of one block's writer task.
#[derive(Clone)]
pub struct BlockWriter {
    block: Arc<str>,
    queue: mpsc::Sender<Request>,
    latest: Arc<Mutex<Option<Arc<IPBlock>>>>,
    /// Callers waiting for an answer.
    waiting: Arc<std::sync::atomic::AtomicUsize>,
}

/// Counts a caller as waiting until dropped.
struct Waiting(Arc<std::sync::atomic::AtomicUsize>);

impl Waiting {
    fn new(count: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(count.clone())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
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
        let (queue, requests) = mpsc::channel(MAX_QUEUE);
        let latest = Arc::new(Mutex::new(first.map(Arc::new)));
        let block = Arc::from(name.as_str());
        tokio::spawn(run(
            api,
            name,
            latest.clone(),
            requests,
            pools,
            policy,
            metrics,
        ));
        Self {
            block,
            queue,
            latest,
            waiting: Arc::default(),
        }
    }

    fn stopped(&self) -> CommitError {
        CommitError::Stopped {
            block: self.block.to_string(),
        }
    }

    /// The copy of the block this writer wrote or read last, if it holds one.
    pub fn latest(&self) -> Option<Arc<IPBlock>> {
        self.latest.lock().ok().and_then(|l| l.clone())
    }

    /// Queues `change` and waits until the batch holding it is committed. A caller that
    /// stops waiting (its request was cancelled) before its batch is taken is dropped
    /// from the batch: nothing is written for a request nobody will hear the answer to.
    pub async fn submit(&self, change: Change) -> Answer {
        let _waiting = Waiting::new(&self.waiting);
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Request { change, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => CommitError::Busy {
                    block: self.block.to_string(),
                },
                mpsc::error::TrySendError::Closed(_) => self.stopped(),
            })?;
        answer.await.map_err(|_| self.stopped())?
    }

    /// True when no caller waits for an answer: every write answered is in `latest`
    /// (the writer stores its copy before it answers).
    fn idle(&self) -> bool {
        self.waiting.load(std::sync::atomic::Ordering::SeqCst) == 0
    }
}

async fn run(
    api: Api<IPBlock>,
    name: String,
    latest: Arc<Mutex<Option<Arc<IPBlock>>>>,
    mut requests: mpsc::Receiver<Request>,
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
        // Callers that gave up (cancelled, timed out) before their batch was taken.
        batch.retain(|r| !r.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let (changes, replies): (Vec<Change>, Vec<_>) =
            batch.into_iter().map(|r| (r.change, r.reply)).unzip();
        // The swap consumes its first copy; one clone per batch, not per request.
        let cached = latest.lock().ok().and_then(|l| l.as_deref().cloned());
        let result = commit(&api, &name, cached, &changes, &pools, &policy).await;
        let answers = match result {
            Ok(written) => {
                metrics.cas_conflicts.inc_by(written.conflicts.into());
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
                written.value
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
) -> Result<ledger::Written<IPBlock, Vec<Answer>>, CommitError> {
    let decide = |object: &IPBlock| -> Result<Decision<IPBlock, Vec<Answer>>, CommitError> {
        // Releases need no pool: a pool missing from the cache must not keep an address.
        let entry = pools(&object.spec.pool);
        let pool = entry.clone().map(|e| e.model);
        // A block being deleted takes no new address: it goes once its last is released.
        // Nor does a block owned by an earlier pool of the same name (deleted, then
        // re-created): it is being garbage-collected.
        let doomed = object.metadata.deletion_timestamp.is_some()
            || entry
                .as_ref()
                .ok()
                .and_then(|e| e.uid.as_deref())
                .is_some_and(|uid| {
                    object
                        .owner_references()
                        .iter()
                        .any(|o| o.kind == "IPPool" && o.uid != uid)
                });
        let mut block =
            Block::try_from(&object.spec).map_err(|error: BlockError| CommitError::Corrupt {
                block: name.to_string(),
                error,
            })?;
        let now = Timestamp::now();
        let before = block.clone();
        let outcomes: Vec<Answer> = changes
            .iter()
            .map(|change| {
                if doomed && matches!(change, Change::Allocate { .. }) {
                    return Ok(Outcome::Refused(AllocError::WrongPool {
                        block: object.spec.cidr,
                        pool: object.spec.pool.clone(),
                    }));
                }
                block
                    .apply(pool.as_deref().ok(), change, now)
                    // Asked for only when the lookup failed: that failure is the answer.
                    .map_err(|NeedsPool| {
                        pool.clone()
                            .err()
                            .unwrap_or_else(|| CommitError::UnknownPool {
                                pool: object.spec.pool.clone(),
                            })
                    })
            })
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
                Ok(Outcome::Allocated(_)),
            ) = (change, outcome)
            {
                new.labels_mut().insert(borrower_label(node), String::new());
            }
        }
        // A borrower whose last address here was returned stops watching the block.
        ledger::reclaim::prune_borrowers(&mut new);
        record_usage(&mut new);
        Ok(Decision::Replace(new, outcomes))
    };
    let map_err = |e| match e {
        CasError::Refused(e) => e,
        CasError::NotFound { .. } => CommitError::Gone {
            block: name.to_string(),
        },
        // Retrying a write the API server refuses for good would only make kubelet retry
        // forever: it is answered as permanent.
        CasError::Api {
            source: kube::Error::Api(status),
            ..
        } if ledger::cas::refused_for_good(status.code) => CommitError::ApiRefused {
            block: name.to_string(),
            code: status.code,
            reason: status.reason,
            message: status.message,
        },
        // Transient: the writer drops its copy on failure, so the next batch reads afresh.
        e @ (CasError::Contended { .. } | CasError::Api { .. } | CasError::Unversioned { .. }) => {
            CommitError::Api(e.to_string())
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
        .any(|o| matches!(o, Ok(Outcome::Allocated(_))));
    if answered_from_cache && already_held {
        return ledger::cas::update(api, name, policy, None, decide)
            .await
            .map_err(map_err);
    }
    Ok(written)
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
        self.start(block.name_any(), Some(block))
    }

    /// The writer of the block `name`, started without a copy (it reads the block first)
    /// if none runs yet: for blocks known only from the block index.
    pub fn named(&self, name: &str) -> BlockWriter {
        self.start(name.to_string(), None)
    }

    fn start(&self, name: String, first: Option<&IPBlock>) -> BlockWriter {
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
                    first.cloned(),
                    self.pools.clone(),
                    self.policy.clone(),
                    self.metrics.clone(),
                )
            })
            .clone()
    }

    /// Stops the idle writers that `keep` rejects, given the block's name and the
    /// writer's copy: a writer holds a task and a copy of its block, and borrowing from
    /// ever more blocks must not grow the agent. A writer without a copy is kept: its
    /// last write failed and may have landed, and only a read can tell.
    pub fn retain(&self, keep: impl Fn(&str, &IPBlock) -> bool) {
        self.writers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|name, writer| {
                !writer.idle() || writer.latest().is_none_or(|copy| keep(name, &copy))
            });
    }

    /// How many writers run.
    pub fn len(&self) -> usize {
        self.writers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    /// True when no writer runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    /// Gives the writer of `name`, when it holds no copy, one read by someone else; a copy
    /// staler than what the writer writes meanwhile costs only a 409.
    pub fn offer(&self, name: &str, object: IPBlock) {
        let writers = self
            .writers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(writer) = writers.get(name)
            && let Ok(mut latest) = writer.latest.lock()
            && latest.is_none()
        {
            *latest = Some(Arc::new(object));
        }
    }

    /// Stops writing `name` (the block was deleted); a later use starts a new writer.
    /// With `uid`, only when the writer's copy is of that object or it holds none: a
    /// deletion seen late must not drop the writer of a block claimed again since.
    pub fn forget(&self, name: &str, uid: Option<&str>) {
        let mut writers = self
            .writers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let same = |writer: &BlockWriter| match (uid, writer.latest()) {
            (Some(uid), Some(copy)) => copy.uid().as_deref() == Some(uid),
            _ => true,
        };
        if writers.get(name).is_some_and(same) {
            writers.remove(name);
        }
    }
}
