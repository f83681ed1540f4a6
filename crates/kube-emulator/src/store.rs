//! The object store: every object of every resource under one lock, one global strictly
//! increasing resourceVersion, and a bounded history of changes for watches.
//!
//! One mutex makes every operation linearizable, like etcd's single revision counter; the
//! critical sections are short (no I/O, no serialization), so it is not the bottleneck.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value, json};
use tokio::sync::{Notify, broadcast};

use super::admission::{self, Operation, Requester};
use super::apply::{self, FieldManager};
use super::error::{ApiError, ApiResult, Cause, GroupResource};
use super::resources::{self, Registry, ResourceType};
use super::validation;

/// Namespace and name of an object; the namespace is empty for cluster-scoped objects.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Namespace, empty when cluster-scoped.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// A key.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

/// The type of a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

impl EventType {
    /// The `type` field of a watch event.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the history and sent to watchers.
#[derive(Debug)]
pub struct Event {
    /// The resourceVersion of this change.
    pub rv: u64,
    /// The resource changed.
    pub gr: GroupResource,
    /// The object changed.
    pub key: ObjectKey,
    /// What happened.
    pub kind: EventType,
    /// The object after the change (for DELETED, the last state with the deletion's rv).
    pub object: Arc<Value>,
    /// The object before the change; lets consistent list pages be rebuilt and selector
    /// watches turn a MODIFIED into ADDED/DELETED.
    pub prev: Option<Arc<Value>>,
    /// Watch lines already rendered from this event.
    pub rendered: Rendered,
}

/// The watch lines rendered from one event, by how they were rendered (event type,
/// shape, version): every watcher asking for the same line shares one serialization, as
/// the real server's watch cache serializes an event once per encoding.
#[derive(Debug, Default)]
pub struct Rendered(std::sync::Mutex<Vec<(String, bytes::Bytes)>>);

impl Rendered {
    /// The line rendered under `key`, rendering it with `render` the first time.
    pub fn get_or(&self, key: String, render: impl FnOnce() -> bytes::Bytes) -> bytes::Bytes {
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, line)) = lines.iter().find(|(k, _)| *k == key) {
            return line.clone();
        }
        let line = render();
        lines.push((key, line.clone()));
        line
    }
}

/// How a write treats `status` when the resource has a status subresource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The main resource: status changes are ignored.
    Main,
    /// The `/status` subresource: everything but status is ignored.
    Status,
}

/// `DeleteOptions` the store honours.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `propagationPolicy`: Background (default), Foreground or Orphan.
    pub propagation: Option<String>,
}

/// A page of a list.
#[derive(Debug)]
pub struct ListPage {
    /// Matching objects, in namespace/name order.
    pub items: Vec<Arc<Value>>,
    /// The resourceVersion the list is consistent with.
    pub rv: u64,
    /// Token for the next page, when there is one.
    pub continue_token: Option<String>,
    /// Objects left after this page (only without selectors, as in the real server).
    pub remaining: Option<u64>,
}

/// Which state a list reads.
#[derive(Clone, Copy, Debug)]
pub enum ListFrom<'a> {
    /// The current state.
    Latest,
    /// The snapshot a `continue` token was issued for, after its last key.
    Continue(&'a str),
    /// `resourceVersionMatch=Exact`: the snapshot at that version.
    Exact(u64),
    /// `resourceVersion=N` (NotOlderThan): the current state, if it is at least N.
    NotOlderThan(u64),
}

/// Where a watch starts.
#[derive(Debug)]
pub struct WatchStart {
    /// Events to send first, oldest first (synthetic ADDED events when starting from now).
    pub backlog: Vec<Arc<Event>>,
    /// Later events.
    pub receiver: broadcast::Receiver<Arc<Event>>,
    /// The resourceVersion the watch is current with after the backlog.
    pub rv: u64,
}

const ADMISSION_GROUP: &str = "admissionregistration.k8s.io";
const POLICIES: &str = "validatingadmissionpolicies";
const BINDINGS: &str = "validatingadmissionpolicybindings";

/// A ValidatingAdmissionPolicy, whose status reports the generation it has checked.
fn is_policy(t: &ResourceType) -> bool {
    t.group == ADMISSION_GROUP && t.plural == POLICIES
}

/// What the real server's type-checking controller reports once it has seen a policy's
/// generation (there, shortly after the write; here, with it).
fn observe_generation(obj: &mut Value) {
    let generation = meta(obj)["generation"].clone();
    if !obj["status"].is_object() {
        obj["status"] = json!({});
    }
    obj["status"]["observedGeneration"] = generation;
    if obj["status"]["typeChecking"].is_null() {
        obj["status"]["typeChecking"] = json!({});
    }
}

const CRD_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";
const ORPHAN_FINALIZER: &str = "orphan";
const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

#[derive(Clone)]
struct State {
    rv: u64,
    /// Copy-on-write: requests take a cheap snapshot, CRD changes replace it.
    registry: Arc<Registry>,
    objects: HashMap<GroupResource, BTreeMap<ObjectKey, Arc<Value>>>,
    history: VecDeque<Arc<Event>>,
    /// Every event with a resourceVersion above this one is still in `history`.
    history_start: u64,
    window: usize,
    /// Objects being deleted with an `orphan` or `foregroundDeletion` finalizer: the
    /// garbage collector's work list.
    propagating: BTreeSet<(GroupResource, ObjectKey)>,
    /// How many stored objects name each owner UID in their ownerReferences: a delete
    /// looks for dependents only when something names the deleted object, rather than
    /// scanning every object on every delete (a real server's garbage collector keeps
    /// a dependency graph for the same reason). A CRD's objects dropped with it leave
    /// their counts behind: an owner counted too often costs a scan that finds nothing.
    owner_refs: HashMap<String, usize>,
}

/// The store shared by all connections.
pub struct Store {
    state: Mutex<State>,
    events: Channels,
    /// Wakes the garbage collector ([`Store::run_garbage_collector`]).
    gc_wake: Notify,
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn meta(obj: &Value) -> &Value {
    &obj["metadata"]
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("set to an object above")
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Sets what a pending deletion shows: deletionTimestamp, a zero grace period, and the
/// generation bump the real server makes.
fn mark_deleting(obj: &mut Value) {
    let m = meta_mut(obj);
    m.insert("deletionTimestamp".into(), now().into());
    m.insert("deletionGracePeriodSeconds".into(), 0.into());
    if let Some(g) = m.get("generation").and_then(Value::as_i64) {
        m.insert("generation".into(), (g + 1).into());
    }
}

/// Whether `obj` names `owner_uid` among its ownerReferences.
/// The owner UIDs `obj`'s ownerReferences name.
fn owner_uids(obj: &Value) -> impl Iterator<Item = &str> {
    meta(obj)["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["uid"].as_str())
}

fn owned_by(obj: &Value, owner_uid: &str) -> bool {
    meta(obj)["ownerReferences"]
        .as_array()
        .is_some_and(|owners| owners.iter().any(|o| o["uid"] == owner_uid))
}

/// Whether `a` and `b` agree on the content that `metadata.generation` tracks: everything
/// but metadata, and but status when status is a subresource. Compared in place: this runs
/// on every update, under the store's lock.
fn same_spec(t: &ResourceType, a: &Value, b: &Value) -> bool {
    let tracked = |key: &str| {
        let untracked = matches!(key, "metadata" | "apiVersion" | "kind")
            || (t.status_subresource && key == "status");
        !untracked
    };
    match (a.as_object(), b.as_object()) {
        (Some(a), Some(b)) => {
            let count =
                |m: &serde_json::Map<String, Value>| m.keys().filter(|k| tracked(k)).count();
            count(a) == count(b)
                && a.iter()
                    .filter(|(k, _)| tracked(k))
                    .all(|(k, v)| b.get(k) == Some(v))
        }
        _ => a == b,
    }
}

/// Label keys (`[prefix/]name`) and values, checked as the real server checks them: one
/// cause per broken rule.
fn validate_labels(meta: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let Some(labels) = meta["labels"].as_object() else {
        return causes;
    };
    let cause = |shown: &str, why: String| Cause {
        reason: "FieldValueInvalid",
        field: "metadata.labels".into(),
        message: format!("Invalid value: \"{shown}\": {why}"),
    };
    for (key, value) in labels {
        for why in validation::qualified_name_errors(key) {
            causes.push(cause(key, why));
        }
        let shown = value
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| value.to_string());
        for why in validation::label_value_errors(&shown) {
            causes.push(cause(&shown, why));
        }
    }
    causes
}

fn generate_suffix() -> String {
    // The alphabet of the real server's name generator (no vowels, no confusable digits).
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// The watch channels, one per resource: a change wakes only the watchers of its own
/// resource, as the real server's watch cache (one per resource) does. A CRD's deletion
/// also goes to the channel of the resource it declared, whose watches then end.
pub struct Channels {
    by_resource: std::sync::Mutex<HashMap<GroupResource, broadcast::Sender<Arc<Event>>>>,
    capacity: usize,
}

impl Channels {
    /// Channels whose watchers are closed once they are `capacity` changes behind.
    fn new(capacity: usize) -> Channels {
        Channels {
            by_resource: std::sync::Mutex::new(HashMap::new()),
            capacity,
        }
    }

    fn senders(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<GroupResource, broadcast::Sender<Arc<Event>>>> {
        self.by_resource.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands `event` to the watchers of its resource (none is fine: nobody watches).
    fn send(&self, event: Arc<Event>) {
        let senders = self.senders();
        let crd_removed = (event.kind == EventType::Deleted
            && event.gr.group == "apiextensions.k8s.io"
            && event.gr.resource == "customresourcedefinitions")
            .then(|| event.key.name.split_once('.'))
            .flatten()
            .map(|(plural, group)| GroupResource::new(group, plural));
        if let Some(declared) = crd_removed
            && let Some(sender) = senders.get(&declared)
        {
            let _ = sender.send(event.clone());
        }
        if let Some(sender) = senders.get(&event.gr) {
            let _ = sender.send(event);
        }
    }

    /// A receiver of `gr`'s changes from now on.
    fn subscribe(&self, gr: &GroupResource) -> broadcast::Receiver<Arc<Event>> {
        self.senders()
            .entry(gr.clone())
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .subscribe()
    }
}

impl Store {
    /// A store holding the default namespaces, keeping `window` events of history.
    pub fn new(window: usize) -> Arc<Self> {
        // A watcher more than this many changes behind is closed and re-watches from the
        // history; the bound keeps slow watchers from pinning old object versions.
        let events = Channels::new(1024);
        let store = Arc::new(Self {
            state: Mutex::new(State {
                rv: 0,
                registry: Arc::new(Registry::builtin()),
                objects: HashMap::new(),
                history: VecDeque::new(),
                history_start: 0,
                window: window.max(1),
                propagating: BTreeSet::new(),
                owner_refs: HashMap::new(),
            }),
            events,
            gc_wake: Notify::new(),
        });
        let ns = store
            .registry()
            .lookup("", "v1", "namespaces")
            .expect("built in");
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            store
                .create(
                    &ns,
                    "",
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
                )
                .expect("fresh store");
        }
        store
    }

    /// A private copy of the store for a `dryRun=All` request: the write runs through
    /// every check on the copy, which is then dropped; no watcher sees it.
    pub fn dry_run_copy(&self) -> Arc<Self> {
        let state = self.lock().clone();
        let events = Channels::new(16);
        Arc::new(Self {
            state: Mutex::new(state),
            events,
            gc_wake: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (writes are applied last).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A snapshot of the registry of served resources.
    pub fn registry(&self) -> Arc<Registry> {
        self.lock().registry.clone()
    }

    /// The current resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// Drops all history: watches from any earlier resourceVersion get 410 Gone.
    pub fn compact(&self) {
        let mut s = self.lock();
        s.history.clear();
        s.history_start = s.rv;
    }

    /// Reads one object.
    pub fn get(&self, t: &ResourceType, namespace: &str, name: &str) -> ApiResult<Arc<Value>> {
        let s = self.lock();
        s.objects
            .get(&t.group_resource())
            .and_then(|m| m.get(&ObjectKey::new(namespace, name)))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&t.group_resource(), name))
    }

    /// Every stored object of `gr`, in namespace and name order (for the authorizer,
    /// which reads all RBAC objects on each request).
    pub fn all_of(&self, gr: &GroupResource) -> Vec<Arc<Value>> {
        self.lock()
            .objects
            .get(gr)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Lists objects (of one namespace when `namespace` is given) matching `filter`.
    pub fn list(
        &self,
        t: &ResourceType,
        namespace: Option<&str>,
        filter: &dyn Fn(&Value) -> bool,
        has_selector: bool,
        limit: Option<usize>,
        from: ListFrom<'_>,
    ) -> ApiResult<ListPage> {
        let s = self.lock();
        let gr = t.group_resource();
        let too_large = |rv: u64, retry: bool| {
            // The real server (after waiting for its cache) answers 504 like this; only
            // the cache's answer (not Exact's) asks the client to retry after a second.
            let mut details = json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}]});
            if retry {
                details["retryAfterSeconds"] = 1.into();
            }
            ApiError {
                details: Some(details),
                ..ApiError::timeout(format!(
                    "Too large resource version: {rv}, current: {}",
                    s.rv
                ))
            }
        };
        let (at_rv, start_after) = match from {
            ListFrom::Latest => (s.rv, None),
            ListFrom::NotOlderThan(rv) if rv > s.rv => return Err(too_large(rv, true)),
            ListFrom::NotOlderThan(_) => (s.rv, None),
            ListFrom::Exact(rv) if rv > s.rv => return Err(too_large(rv, false)),
            ListFrom::Exact(rv) if rv < s.history_start => {
                return Err(ApiError::expired(format!(
                    "too old resource version: {rv} ({})",
                    s.history_start + 1
                )));
            }
            ListFrom::Exact(rv) => (rv, None),
            ListFrom::Continue(token) => {
                let (rv, key) = decode_continue(token)
                    .ok_or_else(|| ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
                if rv < s.history_start {
                    return Err(ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                    ));
                }
                (rv, Some(key))
            }
        };
        let empty = BTreeMap::new();
        let current = s.objects.get(&gr).unwrap_or(&empty);
        // A continued list reads the snapshot of its first page: undo later changes.
        let snapshot;
        let objects = if at_rv < s.rv {
            let mut m = current.clone();
            for e in s.history.iter().rev().take_while(|e| e.rv > at_rv) {
                if e.gr == gr {
                    match &e.prev {
                        Some(p) => m.insert(e.key.clone(), p.clone()),
                        None => m.remove(&e.key),
                    };
                }
            }
            snapshot = m;
            &snapshot
        } else {
            current
        };
        let range = objects.iter().filter(|(k, _)| {
            namespace.is_none_or(|ns| k.namespace == ns)
                && start_after.as_ref().is_none_or(|after| *k > after)
        });
        let mut items = Vec::new();
        let mut last = None;
        let mut more = false;
        let mut remaining = 0u64;
        for (k, v) in range {
            if !filter(v) {
                continue;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                more = true;
                remaining += 1;
                continue;
            }
            items.push(v.clone());
            last = Some(k.clone());
        }
        let continue_token = match (more, last) {
            (true, Some(k)) => Some(encode_continue(at_rv, &k)),
            _ => None,
        };
        Ok(ListPage {
            items,
            rv: at_rv,
            remaining: (more && !has_selector).then_some(remaining),
            continue_token,
        })
    }

    /// The store's current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Starts a watch of one resource from `from` (None: from now, with synthetic ADDED
    /// events for every existing object).
    pub fn watch(&self, t: &ResourceType, from: Option<u64>) -> ApiResult<WatchStart> {
        let s = self.lock();
        let gr = t.group_resource();
        // Subscribing under the lock means no event falls between backlog and receiver.
        let receiver = self.events.subscribe(&gr);
        let backlog = match from {
            None => s
                .objects
                .get(&gr)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            Arc::new(Event {
                                rv: s.rv,
                                gr: gr.clone(),
                                key: k.clone(),
                                kind: EventType::Added,
                                object: v.clone(),
                                prev: None,
                                rendered: Rendered::default(),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
            Some(rv) if rv < s.history_start => {
                return Err(ApiError::expired(format!(
                    "too old resource version: {rv} ({})",
                    s.history_start + 1
                )));
            }
            Some(rv) => s
                .history
                .iter()
                .filter(|e| e.rv > rv && e.gr == gr)
                .cloned()
                .collect(),
        };
        Ok(WatchStart {
            backlog,
            receiver,
            rv: s.rv,
        })
    }

    /// Creates an object. `obj` is the request body; the namespace comes from the URL.
    pub fn create(&self, t: &ResourceType, namespace: &str, obj: Value) -> ApiResult<Value> {
        self.create_as(t, namespace, obj, FieldManager::default())
    }

    /// Creates an object on behalf of a field manager, recorded in `managedFields` in the
    /// request's apiVersion (an empty manager records nothing: internal writes and
    /// server-side apply).
    pub fn create_as(
        &self,
        t: &ResourceType,
        namespace: &str,
        obj: Value,
        manager: FieldManager<'_>,
    ) -> ApiResult<Value> {
        let mut s = self.lock();
        let created = s.create(t, namespace, obj, manager, &self.events);
        self.wake_gc(&s);
        created
    }

    /// Replaces an object (PUT), on the main resource or its status.
    pub fn update(
        &self,
        t: &ResourceType,
        namespace: &str,
        name: &str,
        obj: Value,
        part: Part,
    ) -> ApiResult<Value> {
        self.update_as(t, namespace, name, obj, part, FieldManager::default())
    }

    /// Replaces an object on behalf of a field manager (see [`Store::create_as`]).
    pub fn update_as(
        &self,
        t: &ResourceType,
        namespace: &str,
        name: &str,
        obj: Value,
        part: Part,
        manager: FieldManager<'_>,
    ) -> ApiResult<Value> {
        let mut s = self.lock();
        let updated = s.update(t, namespace, name, obj, part, true, manager, &self.events);
        self.wake_gc(&s);
        updated
    }

    /// Reads, changes with `change` and writes back atomically (PATCH).
    pub fn modify(
        &self,
        t: &ResourceType,
        namespace: &str,
        name: &str,
        part: Part,
        change: &dyn Fn(&Value) -> ApiResult<Value>,
    ) -> ApiResult<Value> {
        self.modify_as(t, namespace, name, part, change, FieldManager::default())
    }

    /// Patches an object on behalf of a field manager (see [`Store::create_as`]).
    pub fn modify_as(
        &self,
        t: &ResourceType,
        namespace: &str,
        name: &str,
        part: Part,
        change: &dyn Fn(&Value) -> ApiResult<Value>,
        manager: FieldManager<'_>,
    ) -> ApiResult<Value> {
        let mut s = self.lock();
        let current = s
            .objects
            .get(&t.group_resource())
            .and_then(|m| m.get(&ObjectKey::new(namespace, name)))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&t.group_resource(), name))?;
        let mut changed = change(&current)?;
        if !changed.is_object() {
            return Err(ApiError::unprocessable(
                "the server rejected our request due to an error in our request: the patched object is not a JSON object",
            ));
        }
        // A patch that does not mention resourceVersion applies to the current version.
        if str_of(meta(&changed), "resourceVersion").is_empty() {
            let rv = str_of(meta(&current), "resourceVersion").to_string();
            meta_mut(&mut changed).insert("resourceVersion".into(), rv.into());
        }
        let updated = s.update(
            t,
            namespace,
            name,
            changed,
            part,
            false,
            manager,
            &self.events,
        );
        self.wake_gc(&s);
        updated
    }

    /// Deletes an object: at once, or by setting deletionTimestamp while finalizers remain.
    /// Returns the object and whether it is gone.
    pub fn delete(
        &self,
        t: &ResourceType,
        namespace: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<(Value, bool)> {
        self.delete_as(t, namespace, name, opts, None)
    }

    /// Deletes an object on behalf of an API request's user, whom validating admission
    /// policies check (see [`Store::delete`]).
    pub fn delete_as(
        &self,
        t: &ResourceType,
        namespace: &str,
        name: &str,
        opts: &DeleteOptions,
        requester: Option<&Requester>,
    ) -> ApiResult<(Value, bool)> {
        let mut s = self.lock();
        let deleted = s.delete(t, namespace, name, opts, requester, &self.events);
        self.wake_gc(&s);
        deleted
    }

    /// Wakes the garbage collector when an object waits for it.
    fn wake_gc(&self, s: &State) {
        if !s.propagating.is_empty() {
            self.gc_wake.notify_one();
        }
    }

    /// Runs the garbage collector until nothing is left for it to do now: Orphan and
    /// Foreground deletions make progress here, not in the DELETE request, as on a real
    /// cluster. Returns whether anything changed.
    pub fn collect_garbage(&self) -> bool {
        let mut s = self.lock();
        let mut changed = false;
        // Each pass may hand work to the next (a dependent deleted in foreground).
        for _ in 0..64 {
            if !s.collect_garbage(&self.events) {
                break;
            }
            changed = true;
        }
        changed
    }

    /// The garbage collector's task: a pass whenever a write leaves an object waiting
    /// for it, and every `interval` besides. The emulator spawns it and aborts it when it
    /// stops.
    pub async fn run_garbage_collector(self: Arc<Self>, interval: std::time::Duration) {
        loop {
            let _ = tokio::time::timeout(interval, self.gc_wake.notified()).await;
            self.collect_garbage();
        }
    }
}

fn encode_continue(rv: u64, key: &ObjectKey) -> String {
    let raw = format!("{rv}\n{}\n{}", key.namespace, key.name);
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Option<(u64, ObjectKey)> {
    if !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    let raw = String::from_utf8(bytes?).ok()?;
    let mut parts = raw.splitn(3, '\n');
    let rv = parts.next()?.parse().ok()?;
    Some((rv, ObjectKey::new(parts.next()?, parts.next()?)))
}

impl State {
    fn record(&mut self, events: &Channels, event: Event) {
        let event = Arc::new(event);
        self.history.push_back(event.clone());
        while self.history.len() > self.window {
            if let Some(old) = self.history.pop_front() {
                self.history_start = old.rv;
            }
        }
        events.send(event);
    }

    fn object(&self, gr: &GroupResource, key: &ObjectKey) -> Option<Arc<Value>> {
        self.objects.get(gr).and_then(|m| m.get(key)).cloned()
    }

    /// Stores `obj` under a new resourceVersion and records the event.
    fn put(
        &mut self,
        events: &Channels,
        gr: &GroupResource,
        key: ObjectKey,
        mut obj: Value,
        kind: EventType,
    ) -> Value {
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), self.rv.to_string().into());
        let waits_for_gc = kind != EventType::Deleted
            && !meta(&obj)["deletionTimestamp"].is_null()
            && finalizers(&obj)
                .iter()
                .any(|f| f == ORPHAN_FINALIZER || f == FOREGROUND_FINALIZER);
        if waits_for_gc {
            self.propagating.insert((gr.clone(), key.clone()));
        } else {
            self.propagating.remove(&(gr.clone(), key.clone()));
        }
        let obj = Arc::new(obj);
        let prev = match kind {
            EventType::Deleted => self.objects.get_mut(gr).and_then(|m| m.remove(&key)),
            _ => self
                .objects
                .entry(gr.clone())
                .or_default()
                .insert(key.clone(), obj.clone()),
        };
        if kind != EventType::Deleted {
            for uid in owner_uids(&obj) {
                *self.owner_refs.entry(uid.to_string()).or_default() += 1;
            }
        }
        let gone = match kind {
            EventType::Deleted => Some(&obj),
            _ => prev.as_ref(),
        };
        for uid in gone.into_iter().flat_map(|o| owner_uids(o)) {
            if let Some(count) = self.owner_refs.get_mut(uid) {
                *count -= 1;
                if *count == 0 {
                    self.owner_refs.remove(uid);
                }
            }
        }
        let rv = self.rv;
        self.record(
            events,
            Event {
                rv,
                gr: gr.clone(),
                key,
                kind,
                object: obj.clone(),
                prev,
                rendered: Rendered::default(),
            },
        );
        Arc::unwrap_or_clone(obj)
    }

    /// Validating admission policies on an API write (none on the server's own writes):
    /// the write is refused with the real server's error, or its warnings are noted.
    #[allow(clippy::too_many_arguments)]
    fn admit_policies(
        &self,
        t: &ResourceType,
        operation: Operation,
        key: &ObjectKey,
        object: Option<&Value>,
        old_object: Option<&Value>,
        part: Part,
        requester: Option<&Requester>,
    ) -> ApiResult<()> {
        let Some(requester) = requester else {
            return Ok(());
        };
        let policies = self
            .objects
            .get(&GroupResource::new(ADMISSION_GROUP, POLICIES));
        let bindings = self
            .objects
            .get(&GroupResource::new(ADMISSION_GROUP, BINDINGS));
        let (Some(policies), Some(bindings)) = (policies, bindings) else {
            return Ok(());
        };
        if policies.is_empty() || bindings.is_empty() {
            return Ok(());
        }
        let namespace_object = if key.namespace.is_empty() {
            None
        } else {
            self.object(
                &GroupResource::new("", "namespaces"),
                &ObjectKey::new("", &key.namespace),
            )
        };
        let api_version = str_of(object.or(old_object).unwrap_or(&Value::Null), "apiVersion");
        let version = api_version
            .rsplit('/')
            .next()
            .unwrap_or(t.storage_version());
        let attrs = admission::Attributes {
            operation,
            user: &requester.user,
            group: &t.group,
            version,
            resource: &t.plural,
            subresource: if part == Part::Status { "status" } else { "" },
            kind: &t.kind,
            name: &key.name,
            namespace: &key.namespace,
            object,
            old_object,
            namespace_object: namespace_object.as_deref(),
            dry_run: requester.dry_run,
        };
        // CEL evaluation is third-party code: a panic must not poison the store.
        let decision = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            admission::decide(
                policies.values().map(|p| &**p),
                bindings.values().map(|b| &**b),
                &attrs,
            )
        }))
        .map_err(|_| {
            ApiError::internal(format!(
                "Internal error occurred: evaluating validating admission policies for {} \"{}\" failed",
                t.group_resource(),
                key.name
            ))
        })?;
        requester.warn(decision.warnings);
        match decision.denial {
            None => Ok(()),
            Some(d) => {
                let gr = t.group_resource();
                Err(ApiError {
                    code: d.code,
                    reason: d.reason,
                    message: format!("{gr} \"{}\" is forbidden: {}", key.name, d.message),
                    details: Some(json!({
                        "name": key.name,
                        "group": gr.group,
                        "kind": gr.resource,
                        "causes": [{"message": d.message}],
                    })),
                })
            }
        }
    }

    fn invalid(t: &ResourceType, name: &str, causes: Vec<Cause>) -> ApiError {
        ApiError::invalid(&t.qualified_kind(), &t.group, &t.kind, name, causes)
    }

    /// Schema pruning, defaulting and validation of custom resources; CRD registration
    /// checks. `old` is the stored object on update.
    fn admit(
        &self,
        t: &ResourceType,
        obj: &mut Value,
        old: Option<&Value>,
        name: &str,
    ) -> ApiResult<()> {
        let causes = validate_labels(meta(obj));
        if !causes.is_empty() {
            return Err(Self::invalid(t, name, causes));
        }
        if t.custom {
            let version = str_of(obj, "apiVersion")
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string();
            let schema = t
                .version(&version)
                .or_else(|| t.versions.first())
                .and_then(|v| v.schema.clone());
            if let Some(schema) = schema {
                // CEL evaluation is third-party code: a panic in it must not take down the
                // connection or poison the store (nothing has been written yet).
                let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    schema.prune_and_default(obj);
                    schema.validate(obj, old)
                }));
                let causes = checked.map_err(|_| {
                    ApiError::internal(format!(
                        "Internal error occurred: validating {} \"{name}\" failed",
                        t.qualified_kind()
                    ))
                })?;
                if !causes.is_empty() {
                    return Err(Self::invalid(t, name, causes));
                }
            }
        }
        if t.group == "apiextensions.k8s.io" && t.plural == "customresourcedefinitions" {
            let declared = resources::from_crd(obj).map_err(|e| {
                let (field, message) = e.split_once(": ").unwrap_or(("", &e));
                Self::invalid(
                    t,
                    name,
                    vec![Cause {
                        reason: "FieldValueInvalid",
                        field: field.into(),
                        message: message.into(),
                    }],
                )
            })?;
            let expected = format!("{}.{}", declared.plural, declared.group);
            if name != expected {
                return Err(Self::invalid(
                    t,
                    name,
                    vec![Cause {
                        reason: "FieldValueInvalid",
                        field: "metadata.name".into(),
                        message: format!(
                            "Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
                        ),
                    }],
                ));
            }
            if let Some(existing) = self.registry.get(&declared.group_resource())
                && !existing.custom
            {
                return Err(Self::invalid(
                    t,
                    name,
                    vec![Cause {
                        reason: "FieldValueInvalid",
                        field: "spec.group".into(),
                        message: format!(
                            "Invalid value: \"{}\": is a built-in group",
                            declared.group
                        ),
                    }],
                ));
            }
        }
        Ok(())
    }

    /// The names other CRDs of `group` have been granted (`status.acceptedNames`):
    /// resource names (plural, singular, short names) and kinds (kind, list kind).
    fn names_taken_in_group(
        &self,
        group: &str,
        except: &str,
    ) -> (HashSet<String>, HashSet<String>) {
        let crd_gr = GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions");
        let (mut resources, mut kinds) = (HashSet::new(), HashSet::new());
        let Some(crds) = self.objects.get(&crd_gr) else {
            return (resources, kinds);
        };
        for (k, crd) in crds {
            if k.name == except || crd["spec"]["group"] != group {
                continue;
            }
            let accepted = &crd["status"]["acceptedNames"];
            let text = |f: &str| accepted[f].as_str().unwrap_or("").to_string();
            resources.insert(text("plural"));
            resources.insert(text("singular"));
            for s in accepted["shortNames"].as_array().into_iter().flatten() {
                resources.insert(s.as_str().unwrap_or("").to_string());
            }
            kinds.insert(text("kind"));
            kinds.insert(text("listKind"));
        }
        resources.remove("");
        kinds.remove("");
        (resources, kinds)
    }

    /// Decides a CRD's names against the other CRDs of its group and reports them in its
    /// status, as the apiextensions naming and establishing controllers do: a name another
    /// CRD holds is not accepted (`NamesAccepted=False`, `"WidgetList" is already in use`),
    /// and a CRD whose names were never all accepted is not established nor served.
    /// Registers (or re-registers) the resource otherwise.
    fn establish(&mut self, crd: &mut Value) {
        let Ok(t) = resources::from_crd(crd) else {
            return;
        };
        let when = now();
        let name = str_of(meta(crd), "name").to_string();
        let (taken_resources, taken_kinds) = self.names_taken_in_group(&t.group, &name);
        let mut stored: Vec<String> = crd["status"]["storedVersions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if !stored.iter().any(|v| v == t.storage_version()) {
            stored.push(t.storage_version().to_string());
        }
        let mut requested = crd["spec"]["names"].clone();
        if requested["singular"].is_null() {
            requested["singular"] = t.singular.clone().into();
        }
        if requested["listKind"].is_null() {
            requested["listKind"] = format!("{}List", t.kind).into();
        }
        let before = crd["status"]["acceptedNames"].clone();
        let mut accepted = if before.is_object() {
            before.clone()
        } else {
            json!({"plural": "", "kind": ""})
        };
        let mut conflict: Option<(&str, String)> = None;
        let fresh = |requested: &str, accepted: &str, taken: &HashSet<String>| {
            if requested == accepted || !taken.contains(requested) {
                Ok(())
            } else {
                Err(format!("\"{requested}\" is already in use"))
            }
        };
        for (field, reason, taken) in [
            ("plural", "PluralConflict", &taken_resources),
            ("singular", "SingularConflict", &taken_resources),
            ("kind", "KindConflict", &taken_kinds),
            ("listKind", "ListKindConflict", &taken_kinds),
        ] {
            let want = requested[field].as_str().unwrap_or("");
            let had = before[field].as_str().unwrap_or("");
            match fresh(want, had, taken) {
                Ok(()) => accepted[field] = want.into(),
                Err(e) => conflict = Some((reason, e)),
            }
            if field == "singular" {
                // Short names come between singular and kind in the real controller.
                let mine: HashSet<&str> = before["shortNames"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let errs: Vec<String> = requested["shortNames"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .filter(|s| !mine.contains(s))
                    .filter_map(|s| fresh(s, "", &taken_resources).err())
                    .collect();
                match errs.len() {
                    0 => {
                        if !requested["shortNames"].is_null() {
                            accepted["shortNames"] = requested["shortNames"].clone();
                        }
                    }
                    1 => conflict = Some(("ShortNamesConflict", errs[0].clone())),
                    _ => conflict = Some(("ShortNamesConflict", format!("[{}]", errs.join(", ")))),
                }
            }
        }
        if !requested["categories"].is_null() {
            accepted["categories"] = requested["categories"].clone();
        }
        let keep_time = |ty: &str, status: &str| {
            crd["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == ty && c["status"] == status))
                .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_string))
                .unwrap_or_else(|| when.clone())
        };
        let was_established = crd["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        });
        let names_accepted = match &conflict {
            None => {
                json!({"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": keep_time("NamesAccepted", "True")})
            }
            Some((reason, message)) => {
                json!({"type": "NamesAccepted", "status": "False", "reason": reason, "message": message, "lastTransitionTime": keep_time("NamesAccepted", "False")})
            }
        };
        let established = if conflict.is_none() || was_established {
            json!({"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": keep_time("Established", "True")})
        } else {
            json!({"type": "Established", "status": "False", "reason": "NotAccepted", "message": "not all names are accepted", "lastTransitionTime": keep_time("Established", "False")})
        };
        let serve = conflict.is_none() || was_established;
        crd["status"] = json!({
            "conditions": [names_accepted, established],
            "acceptedNames": accepted,
            "storedVersions": stored,
        });
        if serve {
            Arc::make_mut(&mut self.registry).insert(t);
        }
    }

    /// After a CRD goes, the names it held are free: CRDs of its group waiting for them
    /// are decided again.
    fn reconsider_names(&mut self, events: &Channels, group: &str) {
        let crd_gr = GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions");
        let waiting: Vec<(ObjectKey, Arc<Value>)> = self
            .objects
            .get(&crd_gr)
            .map(|m| {
                m.iter()
                    .filter(|(_, c)| {
                        c["spec"]["group"] == group
                            && meta(c)["deletionTimestamp"].is_null()
                            && c["status"]["conditions"].as_array().is_some_and(|cs| {
                                cs.iter()
                                    .any(|c| c["type"] == "NamesAccepted" && c["status"] == "False")
                            })
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for (k, crd) in waiting {
            let mut crd = (*crd).clone();
            self.establish(&mut crd);
            self.put(events, &crd_gr, k, crd, EventType::Modified);
        }
    }

    fn create(
        &mut self,
        t: &ResourceType,
        namespace: &str,
        mut obj: Value,
        manager: FieldManager<'_>,
        events: &Channels,
    ) -> ApiResult<Value> {
        let gr = t.group_resource();
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        let body_ns = str_of(meta(&obj), "namespace").to_string();
        if t.namespaced {
            if !body_ns.is_empty() && body_ns != namespace {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        } else if !body_ns.is_empty() {
            meta_mut(&mut obj).remove("namespace");
        }
        if !str_of(meta(&obj), "resourceVersion").is_empty() {
            // The storage layer refuses it with a plain error, which the real server
            // reports as a 500 with no reason.
            return Err(ApiError {
                reason: "",
                ..ApiError::internal("resourceVersion should not be set on objects to be created")
            });
        }
        let mut name = str_of(meta(&obj), "name").to_string();
        let generate = str_of(meta(&obj), "generateName").to_string();
        if name.is_empty() && !generate.is_empty() {
            loop {
                name = format!("{generate}{}", generate_suffix());
                if self
                    .object(&gr, &ObjectKey::new(namespace, &name))
                    .is_none()
                {
                    break;
                }
            }
            meta_mut(&mut obj).insert("name".into(), name.clone().into());
        }
        if name.is_empty() {
            return Err(Self::invalid(
                t,
                "",
                vec![Cause {
                    reason: "FieldValueRequired",
                    field: "metadata.name".into(),
                    message: "Required value: name or generateName is required".into(),
                }],
            ));
        }
        let label = t.group.is_empty() && t.plural == "namespaces";
        let name_errors = if label {
            let mut errs = Vec::new();
            if name.len() > 63 {
                errs.push("must be no more than 63 characters".to_string());
            }
            let pattern = !name.is_empty()
                && name
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && !name.starts_with('-')
                && !name.ends_with('-');
            if !pattern {
                errs.push("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".to_string());
            }
            errs
        } else {
            validation::dns_subdomain_errors(&name)
        };
        if !name_errors.is_empty() {
            // One cause per broken rule, as the real server reports them.
            let causes = name_errors
                .into_iter()
                .map(|why| Cause {
                    reason: "FieldValueInvalid",
                    field: "metadata.name".into(),
                    message: format!("Invalid value: \"{name}\": {why}"),
                })
                .collect();
            return Err(Self::invalid(t, &name, causes));
        }
        if t.namespaced {
            let ns_gr = GroupResource::new("", "namespaces");
            let ns = self
                .object(&ns_gr, &ObjectKey::new("", namespace))
                .ok_or_else(|| ApiError::not_found(&ns_gr, namespace))?;
            if !meta(&ns)["deletionTimestamp"].is_null() {
                return Err(ApiError::forbidden(format!(
                    "{gr} \"{name}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated"
                )));
            }
        }
        if t.custom && self.crd_terminating(t) {
            return Err(ApiError::method_not_allowed(
                "create not allowed while custom resource definition is terminating",
            ));
        }
        let key = ObjectKey::new(if t.namespaced { namespace } else { "" }, &name);
        if self.object(&gr, &key).is_some() {
            return Err(ApiError::already_exists(&gr, &name));
        }
        obj["apiVersion"] = t
            .api_version(
                str_of(&obj, "apiVersion")
                    .rsplit('/')
                    .next()
                    .filter(|v| t.version(v).is_some())
                    .unwrap_or(t.storage_version()),
            )
            .into();
        obj["kind"] = t.kind.clone().into();
        if t.status_subresource {
            obj.as_object_mut().expect("checked above").remove("status");
        }
        if t.group.is_empty() && t.plural == "secrets" && str_of(&obj, "type").is_empty() {
            obj["type"] = "Opaque".into();
        }
        if t.group.is_empty() && t.plural == "pods" {
            // A new pod is Pending until a kubelet says otherwise, as the real server sets.
            obj["status"] = json!({"phase": "Pending"});
        }
        self.admit(t, &mut obj, None, &name)?;
        let m = meta_mut(&mut obj);
        if t.namespaced {
            m.insert("namespace".into(), namespace.into());
        }
        m.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
        m.insert("creationTimestamp".into(), now().into());
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        if t.generation {
            m.insert("generation".into(), 1.into());
        } else {
            m.remove("generation");
        }
        if label {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
            let labels = meta_mut(&mut obj)
                .entry("labels")
                .or_insert_with(|| json!({}));
            labels["kubernetes.io/metadata.name"] = name.clone().into();
        }
        if t.group == "apiextensions.k8s.io" && t.plural == "customresourcedefinitions" {
            let m = meta_mut(&mut obj);
            let fins = m.entry("finalizers").or_insert_with(|| json!([]));
            if let Some(a) = fins.as_array_mut()
                && !a.iter().any(|f| f == CRD_FINALIZER)
            {
                a.push(CRD_FINALIZER.into());
            }
            self.establish(&mut obj);
        }
        if is_policy(t) {
            observe_generation(&mut obj);
        }
        if !manager.name.is_empty() {
            meta_mut(&mut obj).remove("managedFields");
            apply::record_update(None, &mut obj, manager, None, &now());
        }
        // Last, on the object as it would be stored, as the real server runs validating
        // admission after defaulting and validation.
        self.admit_policies(
            t,
            Operation::Create,
            &key,
            Some(&obj),
            None,
            Part::Main,
            manager.requester,
        )?;
        let created = self.put(events, &gr, key, obj, EventType::Added);
        if label {
            self.populate_namespace(events, &name);
        }
        Ok(created)
    }

    /// What a real cluster's controllers put into every new namespace: the `default`
    /// ServiceAccount and the `kube-root-ca.crt` ConfigMap (empty here: plain HTTP, no CA).
    fn populate_namespace(&mut self, events: &Channels, namespace: &str) {
        let seeds = [
            (
                "serviceaccounts",
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}),
            ),
            (
                "configmaps",
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt", "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}}, "data": {"ca.crt": ""}}),
            ),
        ];
        for (plural, obj) in seeds {
            if let Some(t) = self.registry.get(&GroupResource::new("", plural)) {
                // Cannot fail: the namespace was just created and is empty.
                let _ = self.create(&t, namespace, obj, FieldManager::default(), events);
            }
        }
    }

    fn crd_terminating(&self, t: &ResourceType) -> bool {
        let crd = self.object(
            &GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions"),
            &ObjectKey::new("", &format!("{}.{}", t.plural, t.group)),
        );
        crd.is_some_and(|c| !meta(&c)["deletionTimestamp"].is_null())
    }

    #[allow(clippy::too_many_arguments)]
    fn update(
        &mut self,
        t: &ResourceType,
        namespace: &str,
        name: &str,
        mut obj: Value,
        part: Part,
        require_rv: bool,
        manager: FieldManager<'_>,
        events: &Channels,
    ) -> ApiResult<Value> {
        let gr = t.group_resource();
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        let body_name = str_of(meta(&obj), "name");
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let body_ns = str_of(meta(&obj), "namespace");
        if t.namespaced && !body_ns.is_empty() && body_ns != namespace {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let key = ObjectKey::new(if t.namespaced { namespace } else { "" }, name);
        let current = self
            .object(&gr, &key)
            .ok_or_else(|| ApiError::not_found(&gr, name))?;
        // A PUT's uid is a precondition, checked before anything else, as the real
        // server's storage checks it (a patch carries none).
        let body_uid = str_of(meta(&obj), "uid");
        let stored_uid = str_of(meta(&current), "uid");
        if require_rv && !body_uid.is_empty() && body_uid != stored_uid {
            return Err(ApiError::conflict(
                &gr,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {body_uid}, UID in object meta: {stored_uid}"
                ),
            ));
        }
        let rv = str_of(meta(&obj), "resourceVersion").to_string();
        if rv.is_empty() {
            if require_rv && !t.unconditional_update {
                return Err(Self::invalid(
                    t,
                    name,
                    vec![Cause {
                        reason: "FieldValueInvalid",
                        field: "metadata.resourceVersion".into(),
                        message: "Invalid value: 0: must be specified for an update".into(),
                    }],
                ));
            }
        } else if rv != str_of(meta(&current), "resourceVersion") {
            return Err(ApiError::stale(&gr, name));
        }
        let cur_meta = meta(&current);
        if t.status_subresource {
            match part {
                Part::Main => match current.get("status") {
                    Some(status) => obj["status"] = status.clone(),
                    None => {
                        obj.as_object_mut().expect("checked above").remove("status");
                    }
                },
                Part::Status => {
                    let status = obj.get("status").cloned();
                    obj = (*current).clone();
                    match status {
                        Some(s) => obj["status"] = s,
                        None => {
                            obj.as_object_mut()
                                .expect("a stored object")
                                .remove("status");
                        }
                    }
                }
            }
        }
        obj["apiVersion"] = current["apiVersion"].clone();
        obj["kind"] = t.kind.clone().into();
        // Fields the server owns are kept whatever the client sent.
        {
            let m = meta_mut(&mut obj);
            for owned in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
            ] {
                match cur_meta.get(owned) {
                    Some(v) => m.insert(owned.into(), v.clone()),
                    None => m.remove(owned),
                };
            }
            m.insert(
                "resourceVersion".into(),
                cur_meta["resourceVersion"].clone(),
            );
            if t.group.is_empty() && t.plural == "namespaces" {
                obj["status"] = current["status"].clone();
            }
        }
        let deleting = !cur_meta["deletionTimestamp"].is_null();
        if deleting {
            let old: HashSet<String> = finalizers(&current).into_iter().collect();
            let new: Vec<String> = finalizers(&obj)
                .into_iter()
                .filter(|f| !old.contains(f))
                .collect();
            if !new.is_empty() {
                let listed: Vec<String> = new.iter().map(|f| format!("{f:?}")).collect();
                return Err(Self::invalid(
                    t,
                    name,
                    vec![Cause {
                        reason: "FieldValueForbidden",
                        field: "metadata.finalizers".into(),
                        message: format!(
                            "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                            listed.join(", ")
                        ),
                    }],
                ));
            }
        }
        self.admit(t, &mut obj, Some(&current), name)?;
        if t.generation && !same_spec(t, &obj, &current) {
            let g = cur_meta["generation"].as_i64().unwrap_or(0) + 1;
            meta_mut(&mut obj).insert("generation".into(), g.into());
        }
        let is_crd = t.group == "apiextensions.k8s.io" && t.plural == "customresourcedefinitions";
        if is_crd && part == Part::Main && !deleting {
            self.establish(&mut obj);
        }
        if is_policy(t) && part == Part::Main {
            observe_generation(&mut obj);
        }
        if !manager.name.is_empty() {
            // managedFields are the server's record: what this write changed becomes the
            // writer's.
            let subresource = (part == Part::Status).then_some("status");
            apply::record_update(Some(&current), &mut obj, manager, subresource, &now());
        }
        // Under the lock that checked the resourceVersion: no write slips between this
        // check and the commit. A no-op update is admitted too, as on the real server.
        self.admit_policies(
            t,
            Operation::Update,
            &key,
            Some(&obj),
            Some(&current),
            part,
            manager.requester,
        )?;
        // An update that changes nothing is not written: same resourceVersion, no event.
        if obj == *current {
            return Ok(obj);
        }
        let stored = self.put(events, &gr, key.clone(), obj, EventType::Modified);
        if deleting && finalizers(&stored).is_empty() {
            return Ok(self.remove(events, t, &key, stored));
        }
        Ok(stored)
    }

    /// Removes an object for good and runs what follows: garbage collection of its
    /// dependents, cleanup of a CRD's objects, completion of a terminating namespace.
    fn remove(
        &mut self,
        events: &Channels,
        t: &ResourceType,
        key: &ObjectKey,
        obj: Value,
    ) -> Value {
        let gr = t.group_resource();
        let uid = str_of(meta(&obj), "uid").to_string();
        let removed = self.put(events, &gr, key.clone(), obj, EventType::Deleted);
        if t.group == "apiextensions.k8s.io"
            && t.plural == "customresourcedefinitions"
            && let Ok(declared) = resources::from_crd(&removed)
        {
            // Only the CRD that was granted the resource takes it away.
            if self.registry.get(&declared.group_resource()).is_some() && crd_served(&removed) {
                Arc::make_mut(&mut self.registry).remove(&declared.group_resource());
                self.objects.remove(&declared.group_resource());
            }
            self.reconsider_names(events, &declared.group);
        }
        self.collect_dependents(events, &uid);
        if !key.namespace.is_empty() {
            self.finish_namespace(events, &key.namespace);
        }
        if t.custom {
            self.finish_crd(events, t);
        }
        removed
    }

    /// Background deletion: objects whose every owner is gone are deleted.
    /// Whether any stored object names `owner_uid` as an owner.
    fn is_owner(&self, owner_uid: &str) -> bool {
        self.owner_refs.contains_key(owner_uid)
    }

    fn collect_dependents(&mut self, events: &Channels, owner_uid: &str) {
        if owner_uid.is_empty() || !self.is_owner(owner_uid) {
            return;
        }
        let mut dependents = Vec::new();
        for (gr, objects) in &self.objects {
            for (k, v) in objects {
                if owned_by(v, owner_uid) {
                    dependents.push((gr.clone(), k.clone(), v.clone()));
                }
            }
        }
        if dependents.is_empty() {
            return;
        }
        let live: HashSet<String> = self
            .objects
            .values()
            .flat_map(|m| m.values())
            .map(|v| str_of(meta(v), "uid").to_string())
            .collect();
        for (gr, key, obj) in dependents {
            let owners = meta(&obj)["ownerReferences"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if owners
                .iter()
                .any(|o| live.contains(o["uid"].as_str().unwrap_or("")))
            {
                continue;
            }
            if let Some(t) = self.registry.get(&gr) {
                let _ = self.delete(
                    &t,
                    &key.namespace,
                    &key.name,
                    &DeleteOptions::default(),
                    None,
                    events,
                );
            }
        }
    }

    /// A terminating namespace goes once nothing is left in it.
    fn finish_namespace(&mut self, events: &Channels, namespace: &str) {
        let ns_gr = GroupResource::new("", "namespaces");
        let key = ObjectKey::new("", namespace);
        let Some(ns) = self.object(&ns_gr, &key) else {
            return;
        };
        if meta(&ns)["deletionTimestamp"].is_null() {
            return;
        }
        let empty = self
            .objects
            .values()
            .all(|m| m.keys().all(|k| k.namespace != namespace));
        if empty && let Some(t) = self.registry.get(&ns_gr) {
            self.remove(events, &t, &key, (*ns).clone());
        }
    }

    /// A terminating CRD loses its cleanup finalizer once its objects are gone.
    fn finish_crd(&mut self, events: &Channels, t: &ResourceType) {
        let crd_gr = GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions");
        let key = ObjectKey::new("", &format!("{}.{}", t.plural, t.group));
        let Some(crd) = self.object(&crd_gr, &key) else {
            return;
        };
        if meta(&crd)["deletionTimestamp"].is_null() {
            return;
        }
        if self
            .objects
            .get(&t.group_resource())
            .is_some_and(|m| !m.is_empty())
        {
            return;
        }
        let mut crd = (*crd).clone();
        if let Some(fins) = meta_mut(&mut crd)
            .get_mut("finalizers")
            .and_then(Value::as_array_mut)
        {
            fins.retain(|f| f != CRD_FINALIZER);
        }
        if let Some(crd_type) = self.registry.get(&crd_gr) {
            let stored = self.put(events, &crd_gr, key.clone(), crd, EventType::Modified);
            if finalizers(&stored).is_empty() {
                self.remove(events, &crd_type, &key, stored);
            }
        }
    }

    fn delete(
        &mut self,
        t: &ResourceType,
        namespace: &str,
        name: &str,
        opts: &DeleteOptions,
        requester: Option<&Requester>,
        events: &Channels,
    ) -> ApiResult<(Value, bool)> {
        let gr = t.group_resource();
        let key = ObjectKey::new(if t.namespaced { namespace } else { "" }, name);
        let current = self
            .object(&gr, &key)
            .ok_or_else(|| ApiError::not_found(&gr, name))?;
        let m = meta(&current);
        if let Some(uid) = &opts.uid
            && uid != str_of(m, "uid")
        {
            // Checked before storage is touched, and reported on the kind (not the
            // resource), as the real server's `BeforeDelete` does.
            let kind = GroupResource::new(&t.group, &t.kind);
            return Err(ApiError::conflict(
                &kind,
                name,
                &format!(
                    "the UID in the precondition ({uid}) does not match the UID in record ({}). The object might have been deleted and then recreated",
                    str_of(m, "uid")
                ),
            ));
        }
        if let Some(rv) = &opts.resource_version
            && rv != str_of(m, "resourceVersion")
        {
            return Err(ApiError::conflict(
                &gr,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    str_of(m, "resourceVersion")
                ),
            ));
        }
        // After the preconditions, before anything changes, as the real registry calls
        // its delete validation.
        self.admit_policies(
            t,
            Operation::Delete,
            &key,
            None,
            Some(&current),
            Part::Main,
            requester,
        )?;
        let is_namespace = t.group.is_empty() && t.plural == "namespaces";
        let deleting = !m["deletionTimestamp"].is_null();
        // The propagation policy becomes a finalizer the garbage collector acts on
        // (`orphan`, `foregroundDeletion`), as the real registry's deletion strategy sets
        // them: the policy of this request replaces the one of an earlier request.
        let old_finalizers = finalizers(&current);
        let new_finalizers = if is_namespace {
            old_finalizers.clone()
        } else {
            gc_finalizers(&old_finalizers, opts.propagation.as_deref())
        };
        let is_crd = t.group == "apiextensions.k8s.io" && t.plural == "customresourcedefinitions";
        if new_finalizers.is_empty() && !is_namespace {
            let removed = self.remove(events, t, &key, (*current).clone());
            return Ok((removed, true));
        }
        if deleting {
            if new_finalizers == old_finalizers {
                return Ok(((*current).clone(), false));
            }
            let mut obj = (*current).clone();
            meta_mut(&mut obj).insert("finalizers".into(), json!(new_finalizers));
            let stored = self.put(events, &gr, key, obj, EventType::Modified);
            return Ok((stored, false));
        }
        let mut obj = (*current).clone();
        mark_deleting(&mut obj);
        if new_finalizers != old_finalizers {
            meta_mut(&mut obj).insert("finalizers".into(), json!(new_finalizers));
        }
        if is_namespace {
            obj["status"] = json!({"phase": "Terminating"});
        }
        let stored = self.put(events, &gr, key.clone(), obj, EventType::Modified);
        if is_namespace {
            self.delete_namespace_content(events, namespace_of(&key));
            let gone = self.object(&gr, &key).is_none();
            return Ok((stored, gone));
        }
        if is_crd && !crd_served(&stored) {
            // Never served, so it holds no objects: the cleanup finalizer goes at once.
            self.drop_finalizer(events, &gr, &key, CRD_FINALIZER);
            let gone = self.object(&gr, &key).is_none();
            return Ok((stored, gone));
        }
        if is_crd && let Ok(declared) = resources::from_crd(&stored) {
            let Some(cr_type) = self.registry.get(&declared.group_resource()) else {
                return Ok((stored, false));
            };
            let keys: Vec<ObjectKey> = self
                .objects
                .get(&cr_type.group_resource())
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            for k in keys {
                let _ = self.delete(
                    &cr_type,
                    &k.namespace,
                    &k.name,
                    &DeleteOptions::default(),
                    None,
                    events,
                );
            }
            self.finish_crd(events, &cr_type);
            let gone = self.object(&gr, &key).is_none();
            return Ok((stored, gone));
        }
        Ok((stored, false))
    }

    fn delete_namespace_content(&mut self, events: &Channels, namespace: &str) {
        let mut victims = Vec::new();
        for (gr, objects) in &self.objects {
            for k in objects.keys().filter(|k| k.namespace == namespace) {
                victims.push((gr.clone(), k.clone()));
            }
        }
        for (gr, k) in victims {
            if let Some(t) = self.registry.get(&gr) {
                let _ = self.delete(
                    &t,
                    &k.namespace,
                    &k.name,
                    &DeleteOptions::default(),
                    None,
                    events,
                );
            }
        }
        self.finish_namespace(events, namespace);
    }

    /// One pass of the garbage collector over the objects waiting in Orphan or Foreground
    /// deletion, as kube-controller-manager's garbage collector acts on them: an `orphan`
    /// owner's dependents lose their ownerReference to it, then the finalizer goes; a
    /// `foregroundDeletion` owner's dependents are deleted (or, when another owner still
    /// holds them, lose the reference), and the finalizer goes once no dependent with
    /// `blockOwnerDeletion` is left. Returns whether anything changed.
    fn collect_garbage(&mut self, events: &Channels) -> bool {
        let waiting: Vec<(GroupResource, ObjectKey)> = self.propagating.iter().cloned().collect();
        let mut changed = false;
        for (gr, key) in waiting {
            let Some(owner) = self.object(&gr, &key) else {
                self.propagating.remove(&(gr, key));
                continue;
            };
            let fins = finalizers(&owner);
            let uid = str_of(meta(&owner), "uid").to_string();
            if fins.iter().any(|f| f == ORPHAN_FINALIZER) {
                self.orphan_dependents(events, &uid);
                self.drop_finalizer(events, &gr, &key, ORPHAN_FINALIZER);
                changed = true;
            } else if fins.iter().any(|f| f == FOREGROUND_FINALIZER) {
                changed |= self.delete_dependents(events, &uid);
                if !self.has_blocking_dependents(&uid) {
                    self.drop_finalizer(events, &gr, &key, FOREGROUND_FINALIZER);
                    changed = true;
                }
            }
        }
        changed
    }

    /// Removes finalizer `fin` from a deleting object; the object goes with its last one.
    fn drop_finalizer(
        &mut self,
        events: &Channels,
        gr: &GroupResource,
        key: &ObjectKey,
        fin: &str,
    ) {
        let Some(obj) = self.object(gr, key) else {
            return;
        };
        let mut obj = (*obj).clone();
        if let Some(fins) = meta_mut(&mut obj)
            .get_mut("finalizers")
            .and_then(Value::as_array_mut)
        {
            fins.retain(|f| f != fin);
        }
        let stored = self.put(events, gr, key.clone(), obj, EventType::Modified);
        if finalizers(&stored).is_empty()
            && let Some(t) = self.registry.get(gr)
        {
            self.remove(events, &t, key, stored);
        }
    }

    fn dependents_of(&self, owner_uid: &str) -> Vec<(GroupResource, ObjectKey, Arc<Value>)> {
        let mut out = Vec::new();
        if !self.is_owner(owner_uid) {
            return out;
        }
        for (gr, objects) in &self.objects {
            for (k, v) in objects {
                if owned_by(v, owner_uid) {
                    out.push((gr.clone(), k.clone(), v.clone()));
                }
            }
        }
        out
    }

    /// Whether a dependent that blocks the owner's foreground deletion still exists.
    fn has_blocking_dependents(&self, owner_uid: &str) -> bool {
        self.is_owner(owner_uid)
            && self.objects.values().flat_map(|m| m.values()).any(|v| {
                meta(v)["ownerReferences"].as_array().is_some_and(|owners| {
                    owners
                        .iter()
                        .any(|o| o["uid"] == owner_uid && o["blockOwnerDeletion"] == true)
                })
            })
    }

    /// Drops the ownerReferences to `owner_uids` from a dependent.
    fn drop_owner_references(
        &mut self,
        events: &Channels,
        gr: &GroupResource,
        key: &ObjectKey,
        obj: &Value,
        owner_uids: &HashSet<String>,
    ) {
        let kept: Vec<Value> = meta(obj)["ownerReferences"]
            .as_array()
            .map(|owners| {
                owners
                    .iter()
                    .filter(|o| !owner_uids.contains(o["uid"].as_str().unwrap_or("")))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let mut obj = obj.clone();
        let m = meta_mut(&mut obj);
        if kept.is_empty() {
            m.remove("ownerReferences");
        } else {
            m.insert("ownerReferences".into(), kept.into());
        }
        self.put(events, gr, key.clone(), obj, EventType::Modified);
    }

    fn orphan_dependents(&mut self, events: &Channels, owner_uid: &str) {
        let owner: HashSet<String> = [owner_uid.to_string()].into();
        for (gr, k, v) in self.dependents_of(owner_uid) {
            self.drop_owner_references(events, &gr, &k, &v, &owner);
        }
    }

    /// Whether the object with this uid exists and is not waiting in foreground deletion
    /// for its own dependents (a "solid" owner, in the garbage collector's words).
    fn solid_owner(&self, uid: &str) -> Option<bool> {
        let owner = self
            .objects
            .values()
            .flat_map(|m| m.values())
            .find(|v| str_of(meta(v), "uid") == uid)?;
        let waiting = !meta(owner)["deletionTimestamp"].is_null()
            && finalizers(owner).iter().any(|f| f == FOREGROUND_FINALIZER);
        Some(!waiting)
    }

    /// The dependents of an owner in foreground deletion: deleted, unless another owner
    /// still holds them (then only the references to gone or waiting owners are dropped).
    fn delete_dependents(&mut self, events: &Channels, owner_uid: &str) -> bool {
        let mut changed = false;
        for (gr, k, v) in self.dependents_of(owner_uid) {
            if !meta(&v)["deletionTimestamp"].is_null() {
                continue;
            }
            let owners: Vec<String> = meta(&v)["ownerReferences"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|o| o["uid"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let solid = owners.iter().any(|o| self.solid_owner(o) == Some(true));
            if solid {
                let released: HashSet<String> = owners
                    .into_iter()
                    .filter(|o| self.solid_owner(o) != Some(true))
                    .collect();
                self.drop_owner_references(events, &gr, &k, &v, &released);
                changed = true;
                continue;
            }
            let own_uid = str_of(meta(&v), "uid").to_string();
            let fins = finalizers(&v);
            let propagation = if !self.dependents_of(&own_uid).is_empty()
                || fins.iter().any(|f| f == FOREGROUND_FINALIZER)
            {
                Some("Foreground")
            } else if fins.iter().any(|f| f == ORPHAN_FINALIZER) {
                Some("Orphan")
            } else {
                Some("Background")
            };
            if let Some(t) = self.registry.get(&gr) {
                let opts = DeleteOptions {
                    uid: Some(own_uid),
                    propagation: propagation.map(str::to_string),
                    ..Default::default()
                };
                if self
                    .delete(&t, &k.namespace, &k.name, &opts, None, events)
                    .is_ok()
                {
                    changed = true;
                }
            }
        }
        changed
    }
}

/// The finalizers an object keeps when deleted with `propagation`, as the real registry
/// computes them: `orphan` and `foregroundDeletion` are set by the policy (an explicit
/// Background clears them); without a policy an existing one stays.
fn gc_finalizers(existing: &[String], propagation: Option<&str>) -> Vec<String> {
    let (orphan, foreground) = match propagation {
        Some("Orphan") => (true, false),
        Some("Foreground") => (false, true),
        Some(_) => (false, false),
        None => (
            existing.iter().any(|f| f == ORPHAN_FINALIZER),
            !existing.iter().any(|f| f == ORPHAN_FINALIZER)
                && existing.iter().any(|f| f == FOREGROUND_FINALIZER),
        ),
    };
    let mut out: Vec<String> = existing
        .iter()
        .filter(|f| *f != ORPHAN_FINALIZER && *f != FOREGROUND_FINALIZER)
        .cloned()
        .collect();
    if orphan {
        out.push(ORPHAN_FINALIZER.into());
    }
    if foreground {
        out.push(FOREGROUND_FINALIZER.into());
    }
    // An unchanged set keeps its order.
    let same = out.len() == existing.len() && out.iter().all(|f| existing.contains(f));
    if same { existing.to_vec() } else { out }
}

/// Whether a CRD got to serve its resource (its names were accepted once).
fn crd_served(crd: &Value) -> bool {
    crd["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True")
    })
}

fn namespace_of(key: &ObjectKey) -> &str {
    // A namespace's own key is (cluster scope, its name).
    &key.name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configmaps(store: &Store) -> Arc<ResourceType> {
        store.registry().lookup("", "v1", "configmaps").unwrap()
    }

    fn cm(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
    }

    #[test]
    fn resource_versions_increase_strictly_across_resources() {
        let store = Store::new(100);
        let t = configmaps(&store);
        let a = store.create(&t, "default", cm("a")).unwrap();
        let b = store.create(&t, "default", cm("b")).unwrap();
        let ra: u64 = a["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let rb: u64 = b["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(rb, ra + 1);
        assert_eq!(store.current_rv(), rb);
    }

    #[test]
    fn stale_update_conflicts_and_noop_update_keeps_the_version() {
        let store = Store::new(100);
        let t = configmaps(&store);
        let a = store.create(&t, "default", cm("a")).unwrap();
        let same = store
            .update(&t, "default", "a", a.clone(), Part::Main)
            .unwrap();
        assert_eq!(
            same["metadata"]["resourceVersion"],
            a["metadata"]["resourceVersion"]
        );
        let mut changed = a.clone();
        changed["data"]["k"] = "w".into();
        store
            .update(&t, "default", "a", changed.clone(), Part::Main)
            .unwrap();
        let err = store
            .update(&t, "default", "a", changed, Part::Main)
            .unwrap_err();
        assert_eq!(err.code, 409);
        assert_eq!(err.reason, "Conflict");
    }

    #[test]
    fn invalid_labels_are_refused_with_the_field_named() {
        let store = Store::new(100);
        let t = configmaps(&store);
        let mut bad = cm("a");
        bad["metadata"]["labels"] = json!({"good/key": "ok", "bad key": "v", "k": "-bad"});
        let err = store.create(&t, "default", bad).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(
            err.message
                .contains("metadata.labels: Invalid value: \"bad key\""),
            "{}",
            err.message
        );
        assert!(
            err.message
                .contains("Invalid value: \"-bad\": a valid label"),
            "{}",
            err.message
        );
        let mut fine = cm("b");
        fine["metadata"]["labels"] = json!({"ipledger.io/pool": "p-1", "empty": ""});
        store.create(&t, "default", fine).unwrap();
    }

    #[test]
    fn a_patch_that_replaces_the_whole_object_is_refused() {
        let store = Store::new(100);
        let t = configmaps(&store);
        store.create(&t, "default", cm("a")).unwrap();
        let err = store
            .modify(&t, "default", "a", Part::Main, &|_| {
                Ok(json!("not an object"))
            })
            .unwrap_err();
        assert_eq!(err.code, 422);
        assert!(store.get(&t, "default", "a").is_ok());
    }

    #[test]
    fn new_namespaces_get_their_default_service_account_and_root_ca() {
        let store = Store::new(100);
        let ns = store.registry().lookup("", "v1", "namespaces").unwrap();
        store
            .create(
                &ns,
                "",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "fresh"}}),
            )
            .unwrap();
        let sa = store
            .registry()
            .lookup("", "v1", "serviceaccounts")
            .unwrap();
        assert!(store.get(&sa, "fresh", "default").is_ok());
        assert!(
            store
                .get(&configmaps(&store), "fresh", "kube-root-ca.crt")
                .is_ok()
        );
    }

    fn owned(name: &str, owner: &Value, block: bool) -> Value {
        let mut dep = cm(name);
        dep["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"], "blockOwnerDeletion": block}]);
        dep
    }

    #[test]
    fn foreground_deletion_answers_at_once_and_waits_for_blocking_dependents() {
        let store = Store::new(100);
        let t = configmaps(&store);
        let owner = store.create(&t, "default", cm("owner")).unwrap();
        let mut dep = owned("dep", &owner, true);
        dep["metadata"]["finalizers"] = json!(["example.com/hold"]);
        store.create(&t, "default", dep).unwrap();
        let foreground = DeleteOptions {
            propagation: Some("Foreground".into()),
            ..Default::default()
        };
        let (marked, gone) = store.delete(&t, "default", "owner", &foreground).unwrap();
        assert!(!gone);
        assert_eq!(
            marked["metadata"]["finalizers"],
            json!(["foregroundDeletion"])
        );
        assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 0);
        // Nothing happens until the garbage collector runs.
        assert!(
            store.get(&t, "default", "dep").unwrap()["metadata"]["deletionTimestamp"].is_null()
        );
        store.collect_garbage();
        let dep = store.get(&t, "default", "dep").unwrap();
        assert!(!dep["metadata"]["deletionTimestamp"].is_null());
        let waiting = store.get(&t, "default", "owner").unwrap();
        assert!(!waiting["metadata"]["deletionTimestamp"].is_null());
        store
            .modify(&t, "default", "dep", Part::Main, &|d| {
                let mut d = d.clone();
                d["metadata"]["finalizers"] = json!([]);
                Ok(d)
            })
            .unwrap();
        assert_eq!(store.get(&t, "default", "dep").unwrap_err().code, 404);
        store.collect_garbage();
        assert_eq!(store.get(&t, "default", "owner").unwrap_err().code, 404);
    }

    #[test]
    fn foreground_deletion_does_not_wait_for_non_blocking_dependents() {
        let store = Store::new(100);
        let t = configmaps(&store);
        let owner = store.create(&t, "default", cm("owner")).unwrap();
        let mut dep = owned("dep", &owner, false);
        dep["metadata"]["finalizers"] = json!(["example.com/hold"]);
        store.create(&t, "default", dep).unwrap();
        let foreground = DeleteOptions {
            propagation: Some("Foreground".into()),
            ..Default::default()
        };
        store.delete(&t, "default", "owner", &foreground).unwrap();
        store.collect_garbage();
        assert_eq!(store.get(&t, "default", "owner").unwrap_err().code, 404);
        let dep = store.get(&t, "default", "dep").unwrap();
        assert!(!dep["metadata"]["deletionTimestamp"].is_null());
    }

    #[test]
    fn orphan_deletion_drops_the_owner_reference_then_the_owner() {
        let store = Store::new(100);
        let t = configmaps(&store);
        let owner = store.create(&t, "default", cm("owner")).unwrap();
        store
            .create(&t, "default", owned("dep", &owner, true))
            .unwrap();
        let orphan = DeleteOptions {
            propagation: Some("Orphan".into()),
            ..Default::default()
        };
        let (marked, gone) = store.delete(&t, "default", "owner", &orphan).unwrap();
        assert!(!gone);
        assert_eq!(marked["metadata"]["finalizers"], json!(["orphan"]));
        store.collect_garbage();
        assert_eq!(store.get(&t, "default", "owner").unwrap_err().code, 404);
        let dep = store.get(&t, "default", "dep").unwrap();
        assert!(dep["metadata"]["ownerReferences"].is_null());
        assert!(dep["metadata"]["deletionTimestamp"].is_null());
    }

    #[test]
    fn the_propagation_policy_of_a_later_delete_replaces_the_finalizer() {
        let kept = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            gc_finalizers(&kept(&["a"]), Some("Orphan")),
            kept(&["a", "orphan"])
        );
        assert_eq!(
            gc_finalizers(&kept(&["orphan", "a"]), Some("Foreground")),
            kept(&["a", "foregroundDeletion"])
        );
        assert_eq!(
            gc_finalizers(&kept(&["orphan"]), Some("Background")),
            kept(&[])
        );
        assert_eq!(gc_finalizers(&kept(&["orphan"]), None), kept(&["orphan"]));
    }

    #[test]
    fn a_crd_waits_for_its_kind_until_the_holder_goes() {
        let store = Store::new(100);
        let crds = store
            .registry()
            .lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .unwrap();
        let crd = |plural: &str| {
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": format!("{plural}.x.example.com")},
                "spec": {"group": "x.example.com", "scope": "Cluster", "names": {"plural": plural, "kind": "Gadget"},
                    "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object"}}}]}})
        };
        let status = |obj: &Value, ty: &str| {
            obj["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == ty)
                .unwrap()["status"]
                .clone()
        };
        store.create(&crds, "", crd("first")).unwrap();
        let second = store.create(&crds, "", crd("second")).unwrap();
        assert_eq!(status(&second, "NamesAccepted"), "False");
        assert_eq!(status(&second, "Established"), "False");
        assert!(
            store
                .registry()
                .lookup("x.example.com", "v1", "seconds")
                .is_none()
        );
        assert!(
            store
                .registry()
                .lookup("x.example.com", "v1", "second")
                .is_none()
        );
        store
            .delete(&crds, "", "first.x.example.com", &DeleteOptions::default())
            .unwrap();
        let second = store.get(&crds, "", "second.x.example.com").unwrap();
        assert_eq!(status(&second, "Established"), "True");
        assert!(
            store
                .registry()
                .lookup("x.example.com", "v1", "second")
                .is_some()
        );
    }

    #[test]
    fn history_window_bounds_watches() {
        let store = Store::new(2);
        let t = configmaps(&store);
        let start = store.current_rv();
        for n in ["a", "b", "c"] {
            store.create(&t, "default", cm(n)).unwrap();
        }
        assert_eq!(store.watch(&t, Some(start)).unwrap_err().code, 410);
        let recent = store.watch(&t, Some(start + 1)).unwrap();
        assert_eq!(recent.backlog.len(), 2);
    }

    #[test]
    fn continued_lists_read_the_first_page_snapshot() {
        let store = Store::new(100);
        // Leases: namespaces are created with a ConfigMap of their own.
        let t = store
            .registry()
            .lookup("coordination.k8s.io", "v1", "leases")
            .unwrap();
        for n in ["a", "b", "c"] {
            store.create(&t, "default", cm(n)).unwrap();
        }
        let all = |_: &Value| true;
        let first = store
            .list(&t, Some("default"), &all, false, Some(2), ListFrom::Latest)
            .unwrap();
        assert_eq!(first.items.len(), 2);
        assert_eq!(first.remaining, Some(1));
        store
            .delete(&t, "default", "c", &DeleteOptions::default())
            .unwrap();
        let second = store
            .list(
                &t,
                Some("default"),
                &all,
                false,
                Some(2),
                ListFrom::Continue(first.continue_token.as_deref().unwrap()),
            )
            .unwrap();
        assert_eq!(second.items.len(), 1);
        assert_eq!(second.items[0]["metadata"]["name"], "c");
        assert!(second.continue_token.is_none());
    }

    #[test]
    fn deleting_an_owner_collects_its_dependents() {
        let store = Store::new(100);
        let t = configmaps(&store);
        let owner = store.create(&t, "default", cm("owner")).unwrap();
        let mut dep = cm("dep");
        dep["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}]);
        store.create(&t, "default", dep).unwrap();
        store
            .delete(&t, "default", "owner", &DeleteOptions::default())
            .unwrap();
        assert_eq!(store.get(&t, "default", "dep").unwrap_err().code, 404);
    }
}
