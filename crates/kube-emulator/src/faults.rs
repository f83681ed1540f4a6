//! Fault injection for tests: failing writes, writes whose answer is lost, slow responses,
//! dropped watches, compaction.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::error::ApiError;
use super::store::Store;

/// How the answer to a write that landed is lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostResponse {
    /// The connection closes without any response: what a client sees when etcd committed
    /// but the API server or a load balancer in front of it died before answering. The
    /// client gets a transport error ("connection closed before message completed").
    Reset,
    /// The client gets this 5xx status: what it sees when the API server's request
    /// timeout fires after etcd committed (504 Timeout), or when a proxy fails (500, 503).
    /// kube-rs clients with the default retry policy repeat the request on 503 and 504,
    /// so they see the repeat's answer (409 for a create or a replace carrying the old
    /// resourceVersion).
    Status(u16),
}

#[derive(Default)]
struct Plan {
    /// Per resource (plural): status codes the next writes fail with, first first.
    failing_writes: HashMap<String, VecDeque<u16>>,
    /// Per resource (plural): how the answers of the next writes that land are lost.
    lost_responses: HashMap<String, VecDeque<LostResponse>>,
    delay: Duration,
}

/// A handle to inject faults into a running emulator; cheap to clone.
#[derive(Clone)]
pub struct Faults {
    plan: Arc<Mutex<Plan>>,
    drops: Arc<watch::Sender<u64>>,
    store: Arc<Store>,
}

impl Faults {
    pub(crate) fn new(store: Arc<Store>) -> Self {
        Self {
            plan: Arc::default(),
            drops: Arc::new(watch::channel(0).0),
            store,
        }
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next `count` writes (create, update, patch, delete) to `resource` (a plural
    /// such as `ipblocks`) fail with `code`: 409 (Conflict), 500 or 503, or a refusal the
    /// real server repeats for the same request: 400, 403 (Forbidden, as RBAC answers) or
    /// 422 (Invalid).
    pub fn fail_next_writes(&self, resource: &str, count: usize, code: u16) {
        self.plan()
            .failing_writes
            .entry(resource.to_string())
            .or_default()
            .extend(std::iter::repeat_n(code, count));
    }

    /// The next `count` writes (create, update, patch, delete) to `resource` that succeed
    /// land in the store exactly as usual (new resourceVersion, watch events), and then
    /// their answer is lost as `lost` says. Writes that fail (a 409, a 422, an injected
    /// failure) and dry runs answer normally and do not count.
    ///
    /// # Panics
    ///
    /// When `lost` is a status outside 500..=599: a lost answer is a server-side failure.
    pub fn lose_next_write_responses(&self, resource: &str, count: usize, lost: LostResponse) {
        if let LostResponse::Status(code) = lost {
            assert!(
                (500..600).contains(&code),
                "a lost write answer is a 5xx, not {code}"
            );
        }
        self.plan()
            .lost_responses
            .entry(resource.to_string())
            .or_default()
            .extend(std::iter::repeat_n(lost, count));
    }

    /// Every response is delayed by `delay` (zero turns it off).
    pub fn delay_responses(&self, delay: Duration) {
        self.plan().delay = delay;
    }

    /// Closes every open watch connection; clients re-watch from their last version.
    pub fn drop_watches(&self) {
        self.drops.send_modify(|n| *n += 1);
    }

    /// Forgets the change history: watches from an older resourceVersion get 410 Gone.
    pub fn compact(&self) {
        self.store.compact();
    }

    pub(crate) fn delay(&self) -> Duration {
        self.plan().delay
    }

    pub(crate) fn watch_drops(&self) -> watch::Receiver<u64> {
        self.drops.subscribe()
    }

    /// The injected failure for this write, if one is due.
    pub(crate) fn take_write_failure(
        &self,
        resource: &str,
        group_resource: &str,
        name: &str,
    ) -> Option<ApiError> {
        let code = self.plan().failing_writes.get_mut(resource)?.pop_front()?;
        Some(match code {
            409 => ApiError::conflict_message(
                group_resource,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ),
            503 => ApiError::unavailable(
                "the server is currently unable to handle the request (injected fault)",
            ),
            400 => ApiError::bad_request(format!("{group_resource} {name:?}: injected fault")),
            403 => ApiError::forbidden(format!(
                "{group_resource} {name:?} is forbidden: User \"system:serviceaccount:test:test\" cannot write resource {resource:?} (injected fault)"
            )),
            422 => ApiError::unprocessable(format!(
                "{group_resource} {name:?} is invalid: injected fault"
            )),
            _ => ApiError::internal("Internal error occurred: injected fault"),
        })
    }

    /// How the answer of this write to `resource`, which landed, is lost, if it is due.
    pub(crate) fn take_lost_response(&self, resource: &str) -> Option<LostResponse> {
        self.plan().lost_responses.get_mut(resource)?.pop_front()
    }
}

/// The status a write that landed is answered with when its answer is lost as
/// `Status(code)`, worded as the real server (or a proxy) words it.
pub(crate) fn lost_status(code: u16) -> ApiError {
    match code {
        // The API server's handler timeout: the write may or may not have happened.
        504 => ApiError::timeout(
            "Timeout: request did not complete within requested timeout - context deadline exceeded",
        ),
        503 => ApiError::unavailable(
            "the server is currently unable to handle the request (injected fault: the write landed)",
        ),
        code => ApiError::new(
            code,
            "InternalError",
            "Internal error occurred: injected fault (the write landed)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults() -> Faults {
        Faults::new(Store::new(10))
    }

    #[test]
    fn lost_responses_are_taken_in_order_per_resource() {
        let f = faults();
        f.lose_next_write_responses("ipblocks", 2, LostResponse::Reset);
        f.lose_next_write_responses("ipblocks", 1, LostResponse::Status(504));
        f.lose_next_write_responses("configmaps", 1, LostResponse::Status(500));
        assert_eq!(
            f.take_lost_response("ippools"),
            None,
            "other resources untouched"
        );
        assert_eq!(
            f.take_lost_response("configmaps"),
            Some(LostResponse::Status(500))
        );
        assert_eq!(f.take_lost_response("configmaps"), None);
        let taken: Vec<_> = std::iter::from_fn(|| f.take_lost_response("ipblocks")).collect();
        assert_eq!(
            taken,
            [
                LostResponse::Reset,
                LostResponse::Reset,
                LostResponse::Status(504)
            ]
        );
    }

    #[test]
    fn lost_responses_and_failing_writes_are_separate_queues() {
        let f = faults();
        f.fail_next_writes("ipblocks", 1, 409);
        f.lose_next_write_responses("ipblocks", 1, LostResponse::Reset);
        // A write refused by the injected 409 never lands, so it does not take the loss.
        assert_eq!(
            f.take_write_failure("ipblocks", "ipblocks.x", "b")
                .unwrap()
                .code,
            409
        );
        assert!(
            f.take_write_failure("ipblocks", "ipblocks.x", "b")
                .is_none()
        );
        assert_eq!(f.take_lost_response("ipblocks"), Some(LostResponse::Reset));
    }

    #[test]
    fn lost_statuses_read_like_the_real_servers() {
        let timeout = lost_status(504);
        assert_eq!((timeout.code, timeout.reason), (504, "Timeout"));
        assert!(
            timeout
                .message
                .starts_with("Timeout: request did not complete")
        );
        assert_eq!(lost_status(503).reason, "ServiceUnavailable");
        let other = lost_status(502);
        assert_eq!((other.code, other.reason), (502, "InternalError"));
    }

    #[test]
    #[should_panic(expected = "a lost write answer is a 5xx")]
    fn a_lost_answer_is_never_a_client_error() {
        faults().lose_next_write_responses("ipblocks", 1, LostResponse::Status(409));
    }
}
