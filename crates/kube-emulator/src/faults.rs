//! Fault injection for tests: failing writes, slow responses, dropped watches, compaction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::error::ApiError;
use super::store::Store;

#[derive(Default)]
struct Plan {
    /// Per resource (plural): status codes the next writes fail with, first first.
    failing_writes: HashMap<String, Vec<u16>>,
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
    /// such as `ipblocks`) fail with `code`: 409 (Conflict), 500 or 503.
    pub fn fail_next_writes(&self, resource: &str, count: usize, code: u16) {
        self.plan()
            .failing_writes
            .entry(resource.to_string())
            .or_default()
            .extend(std::iter::repeat_n(code, count));
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
        let mut plan = self.plan();
        let queue = plan.failing_writes.get_mut(resource)?;
        if queue.is_empty() {
            return None;
        }
        let code = queue.remove(0);
        Some(match code {
            409 => ApiError::conflict_message(
                group_resource,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ),
            503 => ApiError::unavailable(
                "the server is currently unable to handle the request (injected fault)",
            ),
            _ => ApiError::internal("Internal error occurred: injected fault"),
        })
    }
}
