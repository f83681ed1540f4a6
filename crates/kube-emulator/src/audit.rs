//! The audit log: who asked to read or change what, and what the answer was — the
//! emulator's small, in-process counterpart of a real API server's audit log at level
//! `Metadata`.
//!
//! Every resource request is recorded, with its verb as RBAC names it: get, list and watch
//! as well as create, update, patch, delete and deletecollection, on a resource or its
//! `status`. Discovery, `/version`, the health checks and access and token reviews, which
//! name no stored resource, are not. [`AuditEvent::is_write`] and
//! [`AuditEvent::changed_something`] pick out the writes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How many events the log keeps; when full, the oldest is dropped for each new one.
/// An event is a few hundred bytes, so a full log stays in the tens of megabytes. Reads
/// count too: a busy client's gets and lists push out old writes sooner than its writes
/// alone would.
pub const CAPACITY: usize = 100_000;

/// One resource request, recorded once it was answered (a watch: once its response head
/// was ready, the stream still open).
///
/// Times are [`Instant`]s: the emulator runs in the test's process, so a test compares
/// them with instants of its own (the moment it stopped a process), and a monotonic clock
/// cannot step backwards between the two as the wall clock can.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// The user the bearer token authenticated (`system:anonymous` without a token);
    /// empty when the token was refused (401).
    pub user: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete` or
    /// `deletecollection`.
    pub verb: &'static str,
    /// The API group, empty for the core group.
    pub group: String,
    /// The resource, plural (`leases`).
    pub resource: String,
    /// The subresource (`status`), if the path named one.
    pub subresource: Option<String>,
    /// The namespace, for a namespaced path.
    pub namespace: Option<String>,
    /// The object's name, as the real server's audit fills `objectRef.name`: from the
    /// path; for a create, from the object; for a list or watch, from a field selector
    /// `metadata.name=…`; otherwise `None` (a list, a deletecollection).
    pub name: Option<String>,
    /// The status the request was answered with. When fault injection loses the answer
    /// of a write that landed ([`crate::Faults::lose_next_write_responses`]) it is the
    /// status the write got, not the 5xx or reset the client saw: the log says what
    /// happened to the store.
    pub code: u16,
    /// A dry-run write (`dryRun=All`): answered as the write would be, stores nothing.
    /// Never set for a read.
    pub dry_run: bool,
    /// When the request arrived (before any injected delay or storage latency).
    pub received: Instant,
    /// When its answer was ready; for a watch, when its response head was.
    pub answered: Instant,
}

impl AuditEvent {
    /// `group/resource/subresource` as the real audit log's `objectRef` reads
    /// (`coordination.k8s.io/leases`, `ipledger.io/ippools/status`, `events` for the core
    /// group).
    pub fn object_resource(&self) -> String {
        let mut out = if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.group, self.resource)
        };
        if let Some(sub) = &self.subresource {
            out.push('/');
            out.push_str(sub);
        }
        out
    }

    /// Whether the verb writes: `create`, `update`, `patch`, `delete` or
    /// `deletecollection`.
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb,
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }

    /// Whether the verb reads without watching: `get` or `list`.
    pub fn is_read(&self) -> bool {
        matches!(self.verb, "get" | "list")
    }

    /// Whether the request changed the store: a write answered 2xx, not a dry run.
    pub fn changed_something(&self) -> bool {
        self.is_write() && (200..300).contains(&self.code) && !self.dry_run
    }
}

/// The log shared by the server and the [`crate::Emulator`] handle; cheap to clone.
#[derive(Clone, Default)]
pub struct AuditLog {
    events: Arc<Mutex<VecDeque<AuditEvent>>>,
}

impl AuditLog {
    fn events(&self) -> std::sync::MutexGuard<'_, VecDeque<AuditEvent>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `event`, dropping the oldest when [`CAPACITY`] are kept.
    pub fn record(&self, event: AuditEvent) {
        let mut events = self.events();
        if events.len() == CAPACITY {
            events.pop_front();
        }
        events.push_back(event);
    }

    /// The kept events, oldest first.
    pub fn snapshot(&self) -> Vec<AuditEvent> {
        self.events().iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str) -> AuditEvent {
        let now = Instant::now();
        AuditEvent {
            user: "admin".into(),
            verb: "create",
            group: String::new(),
            resource: "configmaps".into(),
            subresource: None,
            namespace: Some("default".into()),
            name: Some(name.into()),
            code: 201,
            dry_run: false,
            received: now,
            answered: now,
        }
    }

    #[test]
    fn a_full_log_drops_its_oldest_events() {
        let log = AuditLog::default();
        for i in 0..CAPACITY + 2 {
            log.record(event(&i.to_string()));
        }
        let kept = log.snapshot();
        assert_eq!(kept.len(), CAPACITY);
        assert_eq!(kept[0].name.as_deref(), Some("2"));
        assert_eq!(
            kept[CAPACITY - 1].name,
            Some((CAPACITY + 1).to_string()),
            "the newest is last"
        );
    }

    #[test]
    fn resources_read_as_the_real_logs_object_refs() {
        let mut e = event("a");
        assert_eq!(e.object_resource(), "configmaps");
        e.group = "ipledger.io".into();
        e.resource = "ippools".into();
        e.subresource = Some("status".into());
        assert_eq!(e.object_resource(), "ipledger.io/ippools/status");
    }

    #[test]
    fn only_stored_write_successes_changed_something() {
        let mut e = event("a");
        assert!(e.changed_something());
        e.dry_run = true;
        assert!(!e.changed_something());
        e.dry_run = false;
        e.code = 409;
        assert!(!e.changed_something());
        e.code = 200;
        for verb in ["get", "list", "watch"] {
            e.verb = verb;
            assert!(!e.changed_something(), "a {verb} answered 200");
            assert!(!e.is_write());
        }
    }

    #[test]
    fn verbs_are_writes_or_reads_or_watches() {
        let mut e = event("a");
        for verb in ["create", "update", "patch", "delete", "deletecollection"] {
            e.verb = verb;
            assert!(e.is_write() && !e.is_read(), "{verb}");
        }
        for verb in ["get", "list"] {
            e.verb = verb;
            assert!(e.is_read() && !e.is_write(), "{verb}");
        }
        e.verb = "watch";
        assert!(!e.is_read() && !e.is_write());
    }
}
