//! The HTTP layer: routes Kubernetes REST paths to the store and renders the answers.

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::admission::Requester;
use super::apply::{self, FieldManager};
use super::audit::{AuditEvent, AuditLog};
use super::authn::{self, Tokens};
use super::discovery;
use super::error::{ApiError, ApiResult, Cause, GroupResource};
use super::events;
use super::faults::{self, Faults, LostResponse};
use super::patch::{self, PatchType};
use super::protobuf;
use super::rbac::{self, Attributes, Decision, Policy};
use super::resources::ResourceType;
use super::selectors::{FieldSelector, LabelSelector, supported_fields};
use super::store::{DeleteOptions, Event, EventType, ListFrom, Part, Store};
use super::table::{self, IncludeObject};
use super::user::{ANONYMOUS, MASTERS, UserInfo};
use super::validation::{self, Write};

/// The body type of every response.
pub type Body = BoxBody<Bytes, Infallible>;

/// Everything a request handler needs.
pub struct Server {
    /// The object store.
    pub store: Arc<Store>,
    /// Injected faults.
    pub faults: Faults,
    /// `host:port` the server listens on, for `/api`'s serverAddressByClientCIDRs.
    pub address: String,
    /// How often watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
    /// Largest request body accepted.
    pub max_body: usize,
    /// Known bearer tokens and the user each one authenticates: the configured ones and
    /// those issued since (shared with the [`crate::Emulator`] handle).
    pub tokens: Tokens,
    /// Whether a token not in `tokens` is accepted (as `system:anonymous`).
    pub accept_unknown_tokens: bool,
    /// Whether requests without credentials are authorized by RBAC like any other (the
    /// bootstrap roles give `system:unauthenticated` the version and health paths);
    /// otherwise they are trusted.
    pub forbid_anonymous: bool,
    /// Where answered resource requests are recorded.
    pub audit: AuditLog,
    /// How long a write waits before the store applies it (etcd's durable write).
    pub write_latency: Duration,
    /// How long a get or list waits before it is served.
    pub read_latency: Duration,
}

/// A write's answer was lost on purpose ([`LostResponse::Reset`]): the connection closes
/// without a response.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("the answer to a write that landed was dropped (injected fault)")]
pub struct AnswerLost;

/// Which part of the API a path names.
#[derive(Debug, PartialEq)]
struct ResourcePath {
    group: String,
    version: String,
    namespace: Option<String>,
    resource: String,
    name: Option<String>,
    subresource: Option<String>,
    watch_prefix: bool,
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = Response::new(full(body));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(err: &ApiError) -> Response<Body> {
    let mut resp = json_response(err.code, &err.status());
    // As the real server does for every Status that asks the client to come back later.
    let retry = err
        .details
        .as_ref()
        .and_then(|d| d["retryAfterSeconds"].as_u64())
        .filter(|s| *s > 0);
    if let Some(seconds) = retry {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    resp
}

fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode(k), decode(v));
    }
    out
}

/// Percent-decoding of query strings (`+` is a space).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(b) => {
                    out.push(b);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_resource_path(
    segments: &[&str],
    is_namespaced: &dyn Fn(&str, &str, &str) -> bool,
) -> Option<ResourcePath> {
    let (group, version, rest) = match segments {
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        _ => return None,
    };
    let (watch_prefix, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let owned = |s: &&str| s.to_string();
    let p = |namespace: Option<String>, resource: &str, name: Option<&&str>, sub: Option<&&str>| {
        ResourcePath {
            group: group.clone(),
            version: version.clone(),
            namespace,
            resource: resource.to_string(),
            name: name.map(owned),
            subresource: sub.map(owned),
            watch_prefix,
        }
    };
    match rest {
        ["namespaces", ns, resource, tail @ ..]
            if is_namespaced(&group, &version, resource) && tail.len() <= 2 =>
        {
            Some(p(Some(ns.to_string()), resource, tail.first(), tail.get(1)))
        }
        [resource, tail @ ..] if tail.len() <= 2 => {
            Some(p(None, resource, tail.first(), tail.get(1)))
        }
        _ => None,
    }
}

/// Media types the client accepts decide between a Table and the plain object.
/// What a client asked to receive, from the first media type of `Accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// The objects themselves.
    Object,
    /// `as=Table`: server-side printing.
    Table,
    /// `as=PartialObjectMetadata(List)`: metadata only (kube-rs metadata watchers).
    Metadata,
}

fn wanted_shape(req: &Request<Incoming>) -> Shape {
    let first = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .and_then(|a| a.split(',').next())
        .unwrap_or("");
    if first.contains("as=Table") {
        Shape::Table
    } else if first.contains("as=PartialObjectMetadata") {
        Shape::Metadata
    } else {
        Shape::Object
    }
}

/// An object reduced to its metadata.
fn partial(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

impl Server {
    /// Handles one request.
    ///
    /// An error means the answer is lost ([`LostResponse::Reset`]): hyper then closes the
    /// connection without sending anything.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, AnswerLost> {
        let received = Instant::now();
        let mut facts = Facts::default();
        // The storage latency comes before routing, so before the store applies a write: a
        // real server's write is visible (new resourceVersion, watch events) only once etcd
        // has committed it, just before the answer. Each request sleeps on its own, so
        // concurrent writes overlap as etcd pipelines them.
        let cost = storage_cost(req.method(), req.uri().path(), req.uri().query());
        let latency = match cost {
            StorageCost::Read => self.read_latency,
            StorageCost::Write => self.write_latency,
            StorageCost::Nothing => Duration::ZERO,
            StorageCost::DeleteBody => {
                facts.delete_waits = true;
                Duration::ZERO
            }
        };
        let delay = self.faults.delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        storage_wait(latency).await;
        let resp = match self.route(req, &mut facts).await {
            Ok(r) => r,
            Err(e) => error_response(&e),
        };
        // For a watch this is when its response head is ready: the stream is still open.
        if let Some(target) = facts.target.take() {
            self.audit.record(target.answered(
                std::mem::take(&mut facts.user),
                resp.status().as_u16(),
                received,
            ));
        }
        // Only a write that landed loses its answer: the point of the fault is a client
        // that does not know its write happened.
        let landed = resp.status().is_success();
        match facts
            .writes_to
            .filter(|_| landed)
            .and_then(|r| self.faults.take_lost_response(&r))
        {
            None => Ok(resp),
            Some(LostResponse::Status(code)) => Ok(error_response(&faults::lost_status(code))),
            Some(LostResponse::Reset) => Err(AnswerLost),
        }
    }

    /// Answers one request, noting in `facts` what [`Server::handle`] needs after the
    /// answer.
    async fn route(&self, req: Request<Incoming>, facts: &mut Facts) -> ApiResult<Response<Body>> {
        let path = req.uri().path().to_string();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        // Known before authentication, so that a refused token's requests are logged too.
        facts.target = self.target(&req, &segments);
        // As on the real server, authorization comes before routing: a user without
        // permission learns nothing of what exists.
        let user = self.authenticate(&req)?;
        facts.user.clone_from(&user.username);
        let query = parse_query(req.uri().query());
        let attributes = Attributes::of_request(req.method().as_str(), &path, &query);
        let decision = self.decide(&user, &attributes);
        if !decision.allowed {
            return Err(rbac::forbidden(
                &user.username,
                &attributes,
                &decision.reason,
            ));
        }
        let registry = self.store.registry();
        if req.method() == Method::GET {
            let doc = match segments.as_slice() {
                ["version"] => Some(discovery::version()),
                ["healthz"] | ["livez"] | ["readyz"] => {
                    let mut r = Response::new(full("ok"));
                    r.headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                    return Ok(r);
                }
                ["api"] => Some(discovery::core_versions(&self.address)),
                ["apis"] => Some(discovery::groups(&registry)),
                ["apis", g] => {
                    Some(discovery::group(&registry, g).ok_or_else(|| ApiError::no_route(&path))?)
                }
                ["api", v] => Some(
                    discovery::resources(&registry, "", v)
                        .ok_or_else(|| ApiError::no_route(&path))?,
                ),
                ["apis", g, v] => Some(
                    discovery::resources(&registry, g, v)
                        .ok_or_else(|| ApiError::no_route(&path))?,
                ),
                ["openapi", "v3"] => Some(discovery::openapi_v3_index(&registry)),
                ["openapi", "v3", "api", v] => {
                    Some(discovery::openapi_v3_group_version(&registry, "", v))
                }
                ["openapi", "v3", "apis", g, v] => {
                    Some(discovery::openapi_v3_group_version(&registry, g, v))
                }
                _ => None,
            };
            if let Some(doc) = doc {
                return Ok(json_response(200, &doc));
            }
        }
        let is_namespaced =
            |g: &str, v: &str, r: &str| registry.lookup(g, v, r).is_some_and(|t| t.namespaced);
        let rp = parse_resource_path(&segments, &is_namespaced)
            .ok_or_else(|| ApiError::no_route(&path))?;
        let t = registry
            .lookup(&rp.group, &rp.version, &rp.resource)
            .ok_or_else(|| ApiError::no_route(&path))?;
        // Across namespaces, namespaced resources can only be listed and watched.
        if t.namespaced
            && rp.namespace.is_none()
            && (rp.name.is_some() || req.method() != Method::GET)
        {
            return Err(ApiError::no_route(&path));
        }
        if let Some(sub) = &rp.subresource
            && !(sub == "status" && t.status_subresource)
            && !(sub == "token" && is_service_accounts(&t))
        {
            return Err(ApiError::no_route(&path));
        }
        if rp.subresource.as_deref() == Some("token") {
            if req.method() != Method::POST {
                return Err(ApiError::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                ));
            }
            let (body, content_type) = self.body(req).await?;
            let request = parse_review(&content_type, "TokenRequest", &body)?;
            let namespace = rp.namespace.as_deref().unwrap_or_default();
            let name = rp.name.as_deref().unwrap_or_default();
            let answer = authn::issue(
                &self.store,
                &self.tokens,
                namespace,
                name,
                &request,
                chrono::Utc::now(),
            )?;
            return Ok(json_response(201, &answer));
        }
        let manager_name = field_manager(&req, &query);
        let api_version = t.api_version(&rp.version);
        let dry_run = query.get("dryRun").is_some_and(|d| d == "All");
        // Validating admission policies see the user, inside the store's write.
        let requester = Requester::new(user.clone(), dry_run);
        let manager = FieldManager {
            name: &manager_name,
            api_version: &api_version,
            requester: Some(&requester),
        };
        let options = match *req.method() {
            Method::POST => Some("CreateOptions"),
            Method::PUT => Some("UpdateOptions"),
            Method::PATCH => Some("PatchOptions"),
            _ => None,
        };
        if let Some(kind) = options
            && !is_review(&t)
        {
            write_options(kind, &query)?;
        }
        // A dry run writes to a private copy of the store, dropped after the answer.
        let store = if dry_run && req.method() != Method::GET {
            self.store.dry_run_copy()
        } else {
            self.store.clone()
        };
        let namespace = rp.namespace.clone().unwrap_or_default();
        let shape = wanted_shape(&req);
        let method = req.method().clone();
        let part = if rp.subresource.is_some() {
            Part::Status
        } else {
            Part::Main
        };
        if !dry_run && !is_review(&t) && method != Method::GET {
            facts.writes_to = Some(t.plural.clone());
        }
        match (&method, &rp.name) {
            (&Method::GET, Some(name))
                if !rp.watch_prefix
                    && query.get("watch").is_none_or(|w| w == "false" || w == "0") =>
            {
                let obj = self.store.get(&self.stored(&t), &namespace, name)?;
                let obj = for_version(&t, &rp.version, &obj);
                match shape {
                    Shape::Table => Ok(json_response(
                        200,
                        &self.table(&t, &rp.version, &[obj.into_owned()], json!({}), &query)?,
                    )),
                    Shape::Metadata => Ok(json_response(200, &partial(&obj))),
                    Shape::Object => Ok(json_response(200, &obj)),
                }
            }
            (&Method::GET, name) => {
                let watching =
                    rp.watch_prefix || query.get("watch").is_some_and(|w| w == "true" || w == "1");
                let ns = rp.namespace.as_deref();
                let mut query = query;
                if let Some(name) = name {
                    let by_name = format!("metadata.name={name}");
                    let fs = query.remove("fieldSelector").filter(|f| !f.is_empty());
                    query.insert(
                        "fieldSelector".into(),
                        fs.map_or(by_name.clone(), |f| format!("{f},{by_name}")),
                    );
                }
                if watching {
                    self.watch(t, rp.version.clone(), ns.map(str::to_string), &query, shape)
                } else {
                    self.list(&t, &rp.version, ns, &query, shape).await
                }
            }
            (&Method::POST, None) if is_review(&t) => {
                let (body, content_type) = self.body(req).await?;
                let question = parse_review(&content_type, &t.kind, &body)?;
                let answer = if t.group == "authorization.k8s.io" {
                    let asked = asked_attributes(&question["spec"]);
                    self.decide(&user, &asked).to_review()
                } else {
                    json!({"userInfo": user.to_review()})
                };
                Ok(json_response(201, &review(&t, question, answer)))
            }
            (&Method::POST, None) => {
                let (body, content_type) = self.body(req).await?;
                let mut obj = parse_object(&t, &content_type, &body)?;
                let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
                facts.named(&name);
                self.injected_failure(&t, &name)?;
                validation::admit(&t, &rp.version, &namespace, &obj, Write::Create)?;
                let duplicates = validation::duplicate_fields(&body);
                let mut warnings =
                    field_validation(&t, &rp.version, &mut obj, &query, &duplicates)?;
                let created =
                    store.create_as(&self.stored(&t), &namespace, to_storage(&t, obj), manager)?;
                warnings.extend(requester.take_warnings());
                // The name `generateName` made.
                facts.named(created["metadata"]["name"].as_str().unwrap_or(""));
                let created = self.dry_answer(dry_run, &t, &namespace, created);
                Ok(with_warnings(
                    json_response(201, &for_version(&t, &rp.version, &created)),
                    &warnings,
                ))
            }
            (&Method::PUT, Some(name)) => {
                let (body, content_type) = self.body(req).await?;
                let mut obj = parse_object(&t, &content_type, &body)?;
                self.injected_failure(&t, name)?;
                validation::admit(&t, &rp.version, &namespace, &obj, Write::Update)?;
                let duplicates = validation::duplicate_fields(&body);
                let mut warnings =
                    field_validation(&t, &rp.version, &mut obj, &query, &duplicates)?;
                let updated = store.update_as(
                    &self.stored(&t),
                    &namespace,
                    name,
                    to_storage(&t, obj),
                    part,
                    manager,
                )?;
                warnings.extend(requester.take_warnings());
                let updated = self.dry_answer(dry_run, &t, &namespace, updated);
                Ok(with_warnings(
                    json_response(200, &for_version(&t, &rp.version, &updated)),
                    &warnings,
                ))
            }
            (&Method::PATCH, Some(name)) => {
                let content_type = req
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|c| c.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let patch_type = PatchType::from_content_type(&content_type)?;
                let (body, _) = self.body(req).await?;
                self.injected_failure(&t, name)?;
                if patch_type == PatchType::Apply {
                    return self.server_side_apply(
                        &store, &t, &rp, &namespace, name, part, &body, &query, &requester,
                    );
                }
                let warnings = Mutex::new(Vec::new());
                let version = rp.version.clone();
                let change = |current: &Value| {
                    let mut patched = patch::apply(
                        &for_version(&t, &version, current),
                        patch_type,
                        &body,
                        t.custom,
                    )?;
                    validation::admit(&t, &version, &namespace, &patched, Write::Patch)?;
                    *warnings.lock().unwrap_or_else(|e| e.into_inner()) =
                        field_validation(&t, &version, &mut patched, &query, &[])?;
                    Ok(to_storage(&t, patched))
                };
                let updated =
                    store.modify_as(&self.stored(&t), &namespace, name, part, &change, manager)?;
                let updated = self.dry_answer(dry_run, &t, &namespace, updated);
                let mut warnings = warnings.into_inner().unwrap_or_else(|e| e.into_inner());
                warnings.extend(requester.take_warnings());
                Ok(with_warnings(
                    json_response(200, &for_version(&t, &rp.version, &updated)),
                    &warnings,
                ))
            }
            (&Method::DELETE, Some(name)) => {
                let (body, _) = self.body(req).await?;
                self.delete_latency(facts, &body).await;
                self.injected_failure(&t, name)?;
                let opts = delete_options(&body, &query)?;
                // kube-rs and kubectl put `dryRun` in the DeleteOptions body.
                let (store, requester) = if dry_run_in_body(&body) {
                    facts.dry_run();
                    (
                        self.store.dry_run_copy(),
                        Requester::new(user.clone(), true),
                    )
                } else {
                    (store, requester)
                };
                let (obj, gone) =
                    store.delete_as(&self.stored(&t), &namespace, name, &opts, Some(&requester))?;
                let warnings = requester.take_warnings();
                // Like the real server: a pending deletion answers with the object; a
                // completed one with a Success Status, except for the few resources whose
                // storage returns the deleted object (pods, serviceaccounts).
                let returns_object =
                    t.group.is_empty() && matches!(t.plural.as_str(), "pods" | "serviceaccounts");
                if gone && !returns_object {
                    let status = json!({
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": {"name": name, "group": t.group, "kind": t.plural, "uid": obj["metadata"]["uid"]},
                    });
                    return Ok(with_warnings(json_response(200, &status), &warnings));
                }
                Ok(with_warnings(
                    json_response(200, &for_version(&t, &rp.version, &obj)),
                    &warnings,
                ))
            }
            (&Method::DELETE, None) => {
                let (body, _) = self.body(req).await?;
                self.delete_latency(facts, &body).await;
                let opts = delete_options(&body, &query)?;
                let (store, requester) = if dry_run_in_body(&body) {
                    facts.dry_run();
                    (
                        self.store.dry_run_copy(),
                        Requester::new(user.clone(), true),
                    )
                } else {
                    (store, requester)
                };
                let filter = selector_filter(&t, &query)?;
                let page = store.list(
                    &self.stored(&t),
                    rp.namespace.as_deref(),
                    &*filter,
                    true,
                    None,
                    ListFrom::Latest,
                )?;
                let mut deleted = Vec::new();
                for obj in page.items {
                    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("");
                    let name = obj["metadata"]["name"].as_str().unwrap_or("");
                    self.injected_failure(&t, name)?;
                    match store.delete_as(&self.stored(&t), ns, name, &opts, Some(&requester)) {
                        Ok((o, _)) => deleted.push(for_version(&t, &rp.version, &o).into_owned()),
                        Err(e) if e.code == 404 => {}
                        Err(e) => return Err(e),
                    }
                }
                let list = json!({
                    "kind": format!("{}List", t.kind),
                    "apiVersion": t.api_version(&rp.version),
                    "metadata": {"resourceVersion": self.store.current_rv().to_string()},
                    "items": deleted,
                });
                Ok(with_warnings(
                    json_response(200, &list),
                    &requester.take_warnings(),
                ))
            }
            _ => Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            )),
        }
    }

    /// PATCH with `application/apply-patch+yaml`: merges the applied configuration for its
    /// field manager, creating the object when it does not exist.
    #[allow(clippy::too_many_arguments)]
    fn server_side_apply(
        &self,
        store: &Store,
        t: &ResourceType,
        rp: &ResourcePath,
        namespace: &str,
        name: &str,
        part: Part,
        body: &[u8],
        query: &HashMap<String, String>,
        requester: &Requester,
    ) -> ApiResult<Response<Body>> {
        let manager = query.get("fieldManager").map(String::as_str).unwrap_or("");
        // Apply records managedFields itself; the store only admits.
        let admitted = FieldManager {
            requester: Some(requester),
            ..FieldManager::default()
        };
        if manager.is_empty() {
            return Err(ApiError::invalid(
                "PatchOptions.meta.k8s.io",
                "meta.k8s.io",
                "PatchOptions",
                "",
                vec![super::error::Cause {
                    reason: "FieldValueRequired",
                    field: "fieldManager".into(),
                    message: "Required value: is required for apply patch".into(),
                }],
            ));
        }
        let applied: Value = serde_yaml_ng::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        if !applied.is_object() {
            return Err(ApiError::bad_request(
                "the applied configuration must be an object",
            ));
        }
        if applied["kind"].as_str().is_none_or(str::is_empty) {
            // The field manager cannot type an object without kind.
            let api_version = applied["apiVersion"].as_str().unwrap_or("");
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            return Err(ApiError::bad_request(format!(
                "invalid object type: {group}/{version}, Kind="
            )));
        }
        let applied_name = applied["metadata"]["name"].as_str().unwrap_or("");
        if applied_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({applied_name}) does not match the name on the URL ({name})"
            )));
        }
        let subresource = rp.subresource.as_deref();
        let force = query.get("force").is_some_and(|f| f == "true");
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let warnings = Mutex::new(Vec::new());
        let change = |current: &Value| {
            let current = for_version(t, &rp.version, current);
            let mut merged = apply::apply(
                &current,
                &applied,
                manager,
                subresource,
                t.custom,
                force,
                &now,
            )
            .map_err(|c| apply_conflict(t, name, &c))?;
            validation::admit(t, &rp.version, namespace, &merged, Write::Patch)?;
            *warnings.lock().unwrap_or_else(|e| e.into_inner()) =
                field_validation(t, &rp.version, &mut merged, query, &[])?;
            Ok(to_storage(t, merged))
        };
        let dry_run = query.get("dryRun").is_some_and(|d| d == "All");
        match store.modify_as(&self.stored(t), namespace, name, part, &change, admitted) {
            Ok(updated) => {
                let updated = self.dry_answer(dry_run, t, namespace, updated);
                let mut warnings = warnings.into_inner().unwrap_or_else(|e| e.into_inner());
                warnings.extend(requester.take_warnings());
                Ok(with_warnings(
                    json_response(200, &for_version(t, &rp.version, &updated)),
                    &warnings,
                ))
            }
            // Apply creates what does not exist yet (not through /status).
            Err(e) if e.code == 404 && part == Part::Main => {
                let mut created =
                    apply::apply(&Value::Null, &applied, manager, None, t.custom, force, &now)
                        .map_err(|c| apply_conflict(t, name, &c))?;
                validation::admit(t, &rp.version, namespace, &created, Write::Create)?;
                let mut warnings = field_validation(t, &rp.version, &mut created, query, &[])?;
                let created = store.create_as(
                    &self.stored(t),
                    namespace,
                    to_storage(t, created),
                    admitted,
                )?;
                warnings.extend(requester.take_warnings());
                let created = self.dry_answer(dry_run, t, namespace, created);
                Ok(with_warnings(
                    json_response(201, &for_version(t, &rp.version, &created)),
                    &warnings,
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// The type the store keeps `t`'s objects under (core Events for the events.k8s.io
    /// view, `t` itself otherwise).
    fn stored(&self, t: &ResourceType) -> Arc<ResourceType> {
        let registry = self.store.registry();
        let found = if events::is_view(t) {
            registry.lookup("", "v1", "events")
        } else {
            registry.get(&t.group_resource())
        };
        // A CRD deleted meanwhile: its type as this request saw it.
        found.unwrap_or_else(|| Arc::new(t.clone()))
    }

    /// A dry run's answer carries the resourceVersion the object has (none when it does not
    /// exist), not the one the private copy gave it, as the real server answers.
    fn dry_answer(
        &self,
        dry_run: bool,
        t: &ResourceType,
        namespace: &str,
        mut obj: Value,
    ) -> Value {
        if !dry_run {
            return obj;
        }
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let ns = if t.namespaced { namespace } else { "" };
        let stored = self.store.get(&self.stored(t), ns, &name).ok();
        let rv = stored
            .as_ref()
            .map(|o| o["metadata"]["resourceVersion"].clone());
        if let Some(meta) = obj["metadata"].as_object_mut() {
            match rv {
                Some(rv) => meta.insert("resourceVersion".into(), rv),
                None => meta.remove("resourceVersion"),
            };
        }
        obj
    }

    /// The user a request's bearer token names; 401 for a malformed header or an unknown
    /// token (unless unknown tokens are accepted); a request without one is
    /// `system:anonymous`, as with the real server's anonymous authentication.
    fn authenticate(&self, req: &Request<Incoming>) -> ApiResult<UserInfo> {
        let Some(header) = req.headers().get(header::AUTHORIZATION) else {
            return Ok(UserInfo::anonymous());
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(ApiError::unauthorized)?;
        match authn::authenticate(&self.store, &self.tokens, token, chrono::Utc::now()) {
            Some(user) => Ok(user),
            None if self.accept_unknown_tokens => Ok(UserInfo::anonymous()),
            None => Err(ApiError::unauthorized()),
        }
    }

    /// Whether `user` may do what `attributes` say: RBAC over the stored Roles,
    /// ClusterRoles and bindings, read afresh for every request. `system:anonymous` is
    /// trusted unless `forbid_anonymous` (and always with `accept_unknown_tokens`).
    fn decide(&self, user: &UserInfo, attributes: &Attributes) -> Decision {
        let trusted = user.groups.iter().any(|g| g == MASTERS)
            || (user.username == ANONYMOUS
                && (self.accept_unknown_tokens || !self.forbid_anonymous));
        if trusted {
            // Without reading the policy: most requests are a superuser's.
            return Decision {
                allowed: true,
                reason: String::new(),
            };
        }
        let all = |plural: &str| {
            self.store
                .all_of(&GroupResource::new("rbac.authorization.k8s.io", plural))
        };
        let policy = Policy::new(
            &all("roles"),
            &all("clusterroles"),
            &all("rolebindings"),
            &all("clusterrolebindings"),
        );
        rbac::authorize(&policy, user, attributes)
    }

    /// What a resource request (get, list, watch or a write) names, for the audit log;
    /// `None` for discovery, health, reviews and paths that name no resource.
    fn target(&self, req: &Request<Incoming>, segments: &[&str]) -> Option<Target> {
        let method = req.method();
        if !matches!(
            *method,
            Method::GET | Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        ) {
            return None;
        }
        let registry = self.store.registry();
        let is_namespaced =
            |g: &str, v: &str, r: &str| registry.lookup(g, v, r).is_some_and(|t| t.namespaced);
        let rp = parse_resource_path(segments, &is_namespaced)?;
        if is_review_group(&rp.group) {
            return None;
        }
        let query = parse_query(req.uri().query());
        let reads = *method == Method::GET;
        let watching =
            rp.watch_prefix || query.get("watch").is_some_and(|w| w == "true" || w == "1");
        // As the real server's request info names it: a list or watch selecting one object
        // by `metadata.name` names that object (RBAC's resourceNames match it).
        let name = rp.name.clone().or_else(|| {
            let t = registry.lookup(&rp.group, &rp.version, &rp.resource)?;
            let selector = query.get("fieldSelector").filter(|_| reads)?;
            let fields = FieldSelector::parse(selector, supported_fields(&t.group, &t.plural));
            fields
                .ok()?
                .requires_exact("metadata.name")
                .filter(|n| rbac::is_path_segment_name(n))
                .map(str::to_string)
        });
        Some(Target {
            verb: verb(method, rp.name.is_some(), watching),
            // A GET's `dryRun` means nothing.
            dry_run: !reads && query.get("dryRun").is_some_and(|d| d == "All"),
            group: rp.group,
            resource: rp.resource,
            subresource: rp.subresource,
            namespace: rp.namespace,
            name,
        })
    }

    /// The storage latency of a DELETE, which [`Server::handle`] leaves until its body is
    /// read: kube-rs and kubectl ask for a dry run in the DeleteOptions body.
    async fn delete_latency(&self, facts: &Facts, body: &[u8]) {
        if !facts.delete_waits {
            return;
        }
        let latency = if dry_run_in_body(body) {
            self.read_latency
        } else {
            self.write_latency
        };
        storage_wait(latency).await;
    }

    fn injected_failure(&self, t: &ResourceType, name: &str) -> ApiResult<()> {
        match self
            .faults
            .take_write_failure(&t.plural, &t.group_resource().to_string(), name)
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The request body and its media type.
    async fn body(&self, req: Request<Incoming>) -> ApiResult<(Bytes, String)> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .unwrap_or("")
            .to_string();
        let limited = http_body_util::Limited::new(req.into_body(), self.max_body);
        let collected = limited.collect().await.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::too_large(self.max_body)
            } else {
                ApiError::bad_request(format!("reading the request body: {e}"))
            }
        })?;
        Ok((collected.to_bytes(), content_type))
    }

    fn table(
        &self,
        t: &ResourceType,
        version: &str,
        items: &[Value],
        list_meta: Value,
        query: &HashMap<String, String>,
    ) -> ApiResult<Value> {
        let include = IncludeObject::parse(query.get("includeObject").map(String::as_str))
            .map_err(ApiError::bad_request)?;
        Ok(table::table(
            t,
            version,
            items,
            list_meta,
            include,
            chrono::Utc::now(),
        ))
    }

    async fn list(
        &self,
        t: &ResourceType,
        version: &str,
        namespace: Option<&str>,
        query: &HashMap<String, String>,
        shape: Shape,
    ) -> ApiResult<Response<Body>> {
        let filter = selector_filter(t, query)?;
        let has_selector = ["labelSelector", "fieldSelector"]
            .iter()
            .any(|k| query.get(*k).is_some_and(|v| !v.is_empty()));
        let limit = match query.get("limit").filter(|l| !l.is_empty()) {
            Some(l) => Some(l.parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!("limit: Invalid value: \"{l}\": must be an integer"))
            })?)
            .filter(|l| *l > 0)
            .map(|l| l as usize),
            None => None,
        };
        // `resourceVersion=0` is served from the real server's watch cache, which answers
        // every item and no `continue`, whatever the limit.
        let from_cache = query.get("resourceVersion").is_some_and(|v| v == "0")
            && query.get("continue").is_none_or(|c| c.is_empty());
        let limit = if from_cache { None } else { limit };
        let from = list_from(query)?;
        // A version the store has not reached yet: the real server waits up to 3 s for
        // its cache to catch up before it answers 504.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        let page = loop {
            match self.store.list(
                &self.stored(t),
                namespace,
                &*filter,
                has_selector,
                limit,
                from,
            ) {
                Err(e) if e.code == 504 && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => break other?,
            }
        };
        let mut meta = json!({"resourceVersion": page.rv.to_string()});
        if let Some(c) = &page.continue_token {
            meta["continue"] = c.clone().into();
        }
        if let Some(r) = page.remaining {
            meta["remainingItemCount"] = r.into();
        }
        let items: Vec<Value> = page
            .items
            .iter()
            .map(|o| for_version(t, version, o).into_owned())
            .collect();
        match shape {
            Shape::Table => {
                return Ok(json_response(
                    200,
                    &self.table(t, version, &items, meta, query)?,
                ));
            }
            Shape::Metadata => {
                let items: Vec<Value> = items.iter().map(partial).collect();
                return Ok(json_response(
                    200,
                    &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items}),
                ));
            }
            Shape::Object => {}
        }
        Ok(json_response(
            200,
            &json!({"kind": format!("{}List", t.kind), "apiVersion": t.api_version(version), "metadata": meta, "items": items}),
        ))
    }

    fn watch(
        &self,
        t: Arc<ResourceType>,
        version: String,
        namespace: Option<String>,
        query: &HashMap<String, String>,
        shape: Shape,
    ) -> ApiResult<Response<Body>> {
        let filter = selector_filter(&t, query)?;
        let from = match query.get("resourceVersion").map(String::as_str) {
            None | Some("") | Some("0") => None,
            Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!(
                    "resourceVersion: Invalid value: \"{rv}\": must be a non-negative integer"
                ))
            })?),
        };
        let initial_events = query.get("sendInitialEvents").is_some_and(|v| v == "true");
        let bookmarks = query
            .get("allowWatchBookmarks")
            .is_some_and(|v| v == "true");
        let timeout = query
            .get("timeoutSeconds")
            .and_then(|s| s.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(1800));
        let include = IncludeObject::parse(query.get("includeObject").map(String::as_str))
            .map_err(ApiError::bad_request)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
        let stored = self.stored(&t);
        let start = self
            .store
            .watch(&stored, if initial_events { None } else { from });
        let mut drops = self.faults.watch_drops();
        drops.mark_unchanged();
        let interval = self.bookmark_interval;
        let store = self.store.clone();
        let gr = stored.group_resource();
        let render = {
            let t = t.clone();
            let version = version.clone();
            move |kind: &str, obj: &Value| -> Bytes {
                let object = match kind {
                    "BOOKMARK" | "ERROR" => Cow::Borrowed(obj),
                    _ => {
                        let obj = for_version(&t, &version, obj);
                        if shape == Shape::Metadata {
                            Cow::Owned(partial(&obj))
                        } else if shape == Shape::Table {
                            Cow::Owned(table::table(
                                &t,
                                &version,
                                std::slice::from_ref(obj.as_ref()),
                                json!({}),
                                include,
                                chrono::Utc::now(),
                            ))
                        } else {
                            obj
                        }
                    }
                };
                // Serialized straight from the stored object: one watcher, no copy.
                let mut line = serde_json::to_vec(&WatchLine {
                    kind,
                    object: &object,
                })
                .unwrap_or_default();
                line.push(b'\n');
                Bytes::from(line)
            }
        };
        // An event's line as it stands in the store (not a selector's synthesized
        // DELETED, not a Table with its own timestamps) is rendered once for all the
        // watchers that ask for it the same way.
        let render_event = {
            // The group too: core/v1 and events.k8s.io/v1 Events are one stored resource.
            let version = t.api_version(&version);
            let render = render.clone();
            move |e: &Event, kind: &'static str, obj: &Cow<'_, Value>| -> Bytes {
                match obj {
                    Cow::Borrowed(_) if shape != Shape::Table => e
                        .rendered
                        .get_or(format!("{kind} {shape:?} {version}"), || render(kind, obj)),
                    _ => render(kind, obj),
                }
            }
        };
        let bookmark = move |rv: u64, initial_end: bool| {
            let mut meta = json!({"resourceVersion": rv.to_string()});
            if initial_end {
                meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            json!({"kind": t.kind, "apiVersion": t.api_version(&version), "metadata": meta})
        };
        tokio::spawn(async move {
            let mut start = match start {
                Ok(s) => s,
                Err(e) => {
                    // Like the real server: a 200 stream carrying one ERROR event (410 Expired).
                    let _ = tx.send(render("ERROR", &e.status())).await;
                    return;
                }
            };
            let matches = |o: &Value| {
                namespace
                    .as_deref()
                    .is_none_or(|ns| o["metadata"]["namespace"] == ns)
                    && filter(o)
            };
            let mut last_rv = start.rv;
            for e in &start.backlog {
                if let Some((kind, obj)) = visible(e, &matches)
                    && tx.send(render_event(e, kind, &obj)).await.is_err()
                {
                    return;
                }
                last_rv = last_rv.max(e.rv);
            }
            if initial_events
                && bookmarks
                && tx
                    .send(render("BOOKMARK", &bookmark(last_rv, true)))
                    .await
                    .is_err()
            {
                return;
            }
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            let mut ticker = tokio::time::interval(interval);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = &mut deadline => return,
                    _ = drops.changed() => return,
                    _ = tx.closed() => return,
                    _ = ticker.tick(), if bookmarks => {
                        // A bookmark carries the store's progress, as the real watch cache's
                        // does (etcd's progress notifications): a quiet resource's watcher
                        // then re-watches from a version still in the history. Only when
                        // none of this resource's changes up to it waits in the queue
                        // (they are queued under the store's lock, so an empty queue after
                        // reading the version means none is pending).
                        let now = store.resource_version();
                        if start.receiver.is_empty() {
                            last_rv = last_rv.max(now);
                        }
                        if tx.send(render("BOOKMARK", &bookmark(last_rv, false))).await.is_err() {
                            return;
                        }
                    }
                    received = start.receiver.recv() => match received {
                        Ok(e) => {
                            if e.rv <= last_rv {
                                continue;
                            }
                            last_rv = e.rv;
                            if e.gr != gr {
                                // The resource itself went away with its CRD: end the watch,
                                // as the real server does.
                                let crd_removed = e.kind == EventType::Deleted
                                    && e.gr.group == "apiextensions.k8s.io"
                                    && e.key.name == format!("{}.{}", gr.resource, gr.group);
                                if crd_removed {
                                    return;
                                }
                                continue;
                            }
                            if let Some((kind, obj)) = visible(&e, &matches)
                                && tx.send(render_event(&e, kind, &obj)).await.is_err()
                            {
                                return;
                            }
                        }
                        // A watcher too slow to keep up is closed, as the real server does;
                        // the client re-watches from the last version it saw.
                        Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return,
                    }
                }
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
        });
        let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(resp)
    }
}

/// Which state a list reads, from `continue`, `resourceVersion` and `resourceVersionMatch`.
/// `resourceVersionMatch` is checked as the real server checks its `ListOptions` (422).
fn list_from(query: &HashMap<String, String>) -> ApiResult<ListFrom<'_>> {
    let get = |k: &str| query.get(k).map(String::as_str).filter(|v| !v.is_empty());
    if let Some(m) = get("resourceVersionMatch") {
        let forbidden = |why: &str| Cause {
            reason: "FieldValueForbidden",
            field: "resourceVersionMatch".into(),
            message: format!("Forbidden: {why}"),
        };
        let mut causes = Vec::new();
        if get("resourceVersion").is_none() {
            causes.push(forbidden(
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        if get("continue").is_some() {
            causes.push(forbidden(
                "resourceVersionMatch is forbidden when continue is provided",
            ));
        }
        if m != "Exact" && m != "NotOlderThan" {
            causes.push(Cause {
                reason: "FieldValueNotSupported",
                field: "resourceVersionMatch".into(),
                message: format!(
                    "Unsupported value: \"{m}\": supported values: \"Exact\", \"NotOlderThan\", \"\""
                ),
            });
        }
        if m == "Exact" && get("resourceVersion") == Some("0") {
            causes.push(forbidden(
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            ));
        }
        options_invalid("ListOptions", causes)?;
    }
    let rv = match get("resourceVersion") {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion: Invalid value: \"{v}\": must be a non-negative integer"
            ))
        })?),
    };
    if let Some(token) = get("continue") {
        if rv.is_some_and(|v| v != 0) {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        return Ok(ListFrom::Continue(token));
    }
    Ok(match (get("resourceVersionMatch"), rv) {
        (Some("Exact"), Some(v)) => ListFrom::Exact(v),
        (_, Some(v)) if v > 0 => ListFrom::NotOlderThan(v),
        _ => ListFrom::Latest,
    })
}

/// 409 for apply conflicts, with one cause per field, as the real server reports them.
fn apply_conflict(t: &ResourceType, name: &str, conflicts: &[apply::Conflict]) -> ApiError {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| json!({"reason": "FieldManagerConflict", "message": apply::conflict_with(c), "field": c.field}))
        .collect();
    ApiError {
        code: 409,
        reason: "Conflict",
        message: apply::conflict_message(conflicts),
        details: Some(json!({"name": name, "group": t.group, "kind": t.plural, "causes": causes})),
    }
}

/// An object as the store keeps it: events.k8s.io Events become core Events.
fn to_storage(t: &ResourceType, obj: Value) -> Value {
    if events::is_view(t) {
        events::to_core(&obj)
    } else {
        obj
    }
}

/// The field manager of a write: `fieldManager`, else the User-Agent up to its first `/`,
/// as the real server derives it.
fn field_manager(req: &Request<Incoming>, query: &HashMap<String, String>) -> String {
    if let Some(m) = query.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.clone();
    }
    let agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|a| a.to_str().ok())
        .unwrap_or("");
    let prefix: String = agent
        .split('/')
        .next()
        .unwrap_or("")
        .chars()
        .take(128)
        .collect();
    if prefix.is_empty() {
        "unknown".to_string()
    } else {
        prefix
    }
}

/// Reviews are answered, never stored.
fn is_review(t: &ResourceType) -> bool {
    is_review_group(&t.group)
}

fn is_review_group(group: &str) -> bool {
    matches!(group, "authorization.k8s.io" | "authentication.k8s.io")
}

/// The verb RBAC and the audit log name a request by.
fn verb(method: &Method, named: bool, watching: bool) -> &'static str {
    match (method.clone(), named) {
        (Method::GET, _) if watching => "watch",
        (Method::GET, true) => "get",
        (Method::GET, false) => "list",
        (Method::POST, _) => "create",
        (Method::PUT, _) => "update",
        (Method::PATCH, _) => "patch",
        (Method::DELETE, true) => "delete",
        (Method::DELETE, false) => "deletecollection",
        _ => "unknown",
    }
}

/// What a request waits for from storage (etcd) on a real server, and so how long
/// [`Server::handle`] delays it ([`crate::Config::write_latency`], `read_latency`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StorageCost {
    /// Nothing: discovery, version and health; watches, whose events the real server
    /// serves from its watch cache; reviews, which the authenticator and authorizer answer.
    Nothing,
    /// A get or a list; or a dry-run write, which reads the object it would change and
    /// persists nothing, so it never waits for etcd's durable write.
    Read,
    /// A write etcd makes durable before it answers.
    Write,
    /// A DELETE without `dryRun` in its query: its DeleteOptions body may still ask for a
    /// dry run, so its cost is known once the body is read.
    DeleteBody,
}

/// Waits `latency` as precisely as the OS sleeps (tens of microseconds): tokio's timer
/// rounds a sleep up to its next millisecond tick, which would make a 3 ms write cost
/// nearly 4 and a 0.5 ms read 1, and so overstate the cost of every request. A thread of
/// the blocking pool sleeps instead; concurrent requests each take their own.
async fn storage_wait(latency: Duration) {
    if latency.is_zero() {
        return;
    }
    let _ = tokio::task::spawn_blocking(move || std::thread::sleep(latency)).await;
}

/// The storage cost of a request, from its method, path and query alone (before routing,
/// without the registry).
fn storage_cost(method: &Method, path: &str, query: Option<&str>) -> StorageCost {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let resource_path = match (segments.next(), segments.next()) {
        (Some("api"), Some(_)) => segments.next(),
        (Some("apis"), Some(group)) if !is_review_group(group) => {
            segments.next().and_then(|_| segments.next())
        }
        _ => None,
    };
    // `/api/v1` and `/apis/group/version` are discovery: a resource path has more.
    let Some(first) = resource_path else {
        return StorageCost::Nothing;
    };
    let query = parse_query(query);
    match *method {
        Method::GET => {
            let watching =
                first == "watch" || query.get("watch").is_some_and(|w| w == "true" || w == "1");
            if watching {
                StorageCost::Nothing
            } else {
                StorageCost::Read
            }
        }
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
            if query.get("dryRun").is_some_and(|d| d == "All") =>
        {
            StorageCost::Read
        }
        Method::DELETE => StorageCost::DeleteBody,
        // A TokenRequest reads its ServiceAccount and writes nothing.
        Method::POST
            if path.starts_with("/api/v1/namespaces/")
                && path.contains("/serviceaccounts/")
                && path.ends_with("/token") =>
        {
            StorageCost::Read
        }
        Method::POST | Method::PUT | Method::PATCH => StorageCost::Write,
        _ => StorageCost::Nothing,
    }
}

/// What routing learned of a request that [`Server::handle`] needs once it is answered.
#[derive(Default)]
struct Facts {
    /// The user the request authenticated as; empty until it has.
    user: String,
    /// The resource (plural) a write lands in if it succeeds: not a dry run, not a review.
    writes_to: Option<String>,
    /// What a resource request names, for the audit log.
    target: Option<Target>,
    /// A DELETE whose storage latency waits for its body ([`StorageCost::DeleteBody`]).
    delete_waits: bool,
}

impl Facts {
    /// The request turned out to be a dry run (`dryRun` in a DeleteOptions body).
    fn dry_run(&mut self) {
        self.writes_to = None;
        if let Some(target) = &mut self.target {
            target.dry_run = true;
        }
    }

    /// The name a create gives its object, which its path does not carry.
    fn named(&mut self, name: &str) {
        if let Some(target) = &mut self.target
            && !name.is_empty()
        {
            target.name = Some(name.to_string());
        }
    }
}

/// A resource request as far as routing got: an [`AuditEvent`] without its user, status
/// and times.
struct Target {
    verb: &'static str,
    group: String,
    resource: String,
    subresource: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    dry_run: bool,
}

impl Target {
    fn answered(self, user: String, code: u16, received: Instant) -> AuditEvent {
        AuditEvent {
            user,
            verb: self.verb,
            group: self.group,
            resource: self.resource,
            subresource: self.subresource,
            namespace: self.namespace,
            name: self.name,
            code,
            dry_run: self.dry_run,
            received,
            answered: Instant::now(),
        }
    }
}

/// A self-review (or TokenRequest) question: JSON, or the protobuf kubectl's typed
/// clients send.
fn parse_review(content_type: &str, kind: &str, body: &[u8]) -> ApiResult<Value> {
    if content_type.contains("protobuf") {
        return protobuf::decode(kind, body).map_err(|e| {
            ApiError::unsupported_media_type(format!(
                "kube-emulator cannot read this {content_type} body: {e}; send application/json"
            ))
        });
    }
    if body.is_empty() {
        return Ok(json!({}));
    }
    parse_json(body)
}

/// The attributes a SelfSubjectAccessReview's spec asks about.
fn asked_attributes(spec: &Value) -> Attributes {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let r = &spec["resourceAttributes"];
    if r.is_object() {
        return Attributes {
            verb: text(&r["verb"]),
            target: rbac::Target::Resource {
                group: text(&r["group"]),
                resource: text(&r["resource"]),
                subresource: text(&r["subresource"]),
                namespace: text(&r["namespace"]),
                name: text(&r["name"]),
            },
        };
    }
    let n = &spec["nonResourceAttributes"];
    Attributes {
        verb: text(&n["verb"]),
        target: rbac::Target::NonResource {
            path: text(&n["path"]),
        },
    }
}

/// Whether `t` is the core ServiceAccounts, whose `token` subresource issues tokens.
fn is_service_accounts(t: &ResourceType) -> bool {
    t.group.is_empty() && t.plural == "serviceaccounts"
}

/// A self-review's answer: the question with its `status`.
fn review(t: &ResourceType, mut obj: Value, status: Value) -> Value {
    obj["apiVersion"] = t.api_version(t.storage_version()).into();
    obj["kind"] = t.kind.clone().into();
    if obj["metadata"].is_null() {
        obj["metadata"] = json!({"creationTimestamp": null});
    }
    obj["status"] = status;
    obj
}

/// The event a watcher with a selector sees: an object entering the selection is ADDED,
/// one leaving it is DELETED — carrying the last state that matched, at the change's
/// resourceVersion, as the real server's watch cache sends it.
fn visible<'a>(
    e: &'a Event,
    matches: &dyn Fn(&Value) -> bool,
) -> Option<(&'static str, Cow<'a, Value>)> {
    let now = matches(&e.object);
    let current = || Cow::Borrowed(&*e.object);
    match e.kind {
        EventType::Added | EventType::Deleted => now.then(|| (e.kind.as_str(), current())),
        EventType::Modified => {
            let before = e.prev.as_deref().filter(|p| matches(p));
            match (before, now) {
                (Some(_), true) => Some(("MODIFIED", current())),
                (None, true) => Some(("ADDED", current())),
                (Some(prev), false) => {
                    let mut last = prev.clone();
                    last["metadata"]["resourceVersion"] = e.rv.to_string().into();
                    Some(("DELETED", Cow::Owned(last)))
                }
                (None, false) => None,
            }
        }
    }
}

/// The object as the requested version presents it. Versions of a CRD share one schema
/// shape here (conversion strategy `None`), so only `apiVersion` changes.
/// One line of a watch stream.
#[derive(serde::Serialize)]
struct WatchLine<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    object: &'a Value,
}

/// `obj` as version `version` of its resource presents it; borrowed when nothing changes
/// (the usual case), so reads and watch events do not copy stored objects.
fn for_version<'a>(t: &ResourceType, version: &str, obj: &'a Value) -> Cow<'a, Value> {
    if events::is_view(t) {
        return Cow::Owned(events::to_events_v1(obj));
    }
    if t.versions.len() > 1 {
        let mut out = obj.clone();
        out["apiVersion"] = t.api_version(version).into();
        return Cow::Owned(out);
    }
    Cow::Borrowed(obj)
}

type Filter = Box<dyn Fn(&Value) -> bool + Send + Sync>;

fn selector_filter(t: &ResourceType, query: &HashMap<String, String>) -> ApiResult<Filter> {
    let labels = LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(
        query.get("fieldSelector").map(String::as_str).unwrap_or(""),
        supported_fields(&t.group, &t.plural),
    )
    .map_err(ApiError::bad_request)?;
    if events::is_view(t) {
        // Stored as core Events; selected by the fields of the view.
        return Ok(Box::new(move |o| {
            let o = events::to_events_v1(o);
            labels.matches(&o) && fields.matches(&o)
        }));
    }
    Ok(Box::new(move |o| labels.matches(o) && fields.matches(o)))
}

/// A request body as an object: JSON, or protobuf for the few core types kubectl's and
/// helm's typed clients send that way.
fn parse_object(t: &ResourceType, content_type: &str, body: &[u8]) -> ApiResult<Value> {
    if content_type.contains("protobuf") && protobuf::decodes(&t.kind) {
        return protobuf::decode(&t.kind, body).map_err(|e| {
            ApiError::unsupported_media_type(format!(
                "kube-emulator cannot read this {content_type} body: {e}; send application/json"
            ))
        });
    }
    if content_type.contains("protobuf") || content_type.contains("cbor") {
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json (kube-emulator does not speak {content_type} for {})",
            t.group_resource()
        )));
    }
    let obj = parse_json(body)?;
    check_kind(t, body, &obj)?;
    Ok(obj)
}

/// What the real server's decoding says of a body whose kind is not the resource's: a
/// custom resource needs its kind (400 when missing, 422 when another); a built-in's
/// missing kind is defaulted, another kind cannot be converted (400).
fn check_kind(t: &ResourceType, body: &[u8], obj: &Value) -> ApiResult<()> {
    let kind = obj["kind"].as_str().unwrap_or("");
    if kind == t.kind || (kind.is_empty() && !t.custom) {
        return Ok(());
    }
    if kind.is_empty() {
        let summary = if body.len() > 30 {
            format!("{} ...", String::from_utf8_lossy(&body[..30]))
        } else {
            String::from_utf8_lossy(body).into_owned()
        };
        return Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): Object 'Kind' is missing in '{}' ({summary})",
            t.kind,
            String::from_utf8_lossy(body)
        )));
    }
    if t.custom {
        let name = obj["metadata"]["name"].as_str().unwrap_or("");
        return Err(ApiError::invalid(
            &t.qualified_kind(),
            &t.group,
            &t.kind,
            name,
            vec![Cause {
                reason: "FieldValueInvalid",
                field: "kind".into(),
                message: format!("Invalid value: \"{kind}\": must be {}", t.kind),
            }],
        ));
    }
    let api_version = obj["apiVersion"].as_str().unwrap_or("");
    let version = api_version.rsplit('/').next().unwrap_or("");
    // The words after the colon are the scheme's conversion error, as the emulator reads
    // it; the internal package is `core` for the core group, else the group's first label.
    let internal = if t.group.is_empty() || t.group == "events.k8s.io" {
        "core"
    } else {
        t.group.split('.').next().unwrap_or("")
    };
    Err(ApiError::bad_request(format!(
        "{kind} in version \"{version}\" cannot be handled as a {}: converting ({version}.{kind}) to ({internal}.{}): unknown conversion",
        t.kind, t.kind
    )))
}

fn parse_json(body: &[u8]) -> ApiResult<Value> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request was in an unknown format: {e}"
        ))
    })?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    Ok(value)
}

/// `fieldValidation`: unknown fields of a custom resource and fields a body names twice
/// are an error (`Strict`), a warning (`Warn`, the default) or let pass (`Ignore`). The
/// value itself was checked with the other write options.
fn field_validation(
    t: &ResourceType,
    version: &str,
    obj: &mut Value,
    query: &HashMap<String, String>,
    duplicates: &[String],
) -> ApiResult<Vec<String>> {
    let mode = query
        .get("fieldValidation")
        .map(String::as_str)
        .unwrap_or("Warn");
    if mode == "Ignore" {
        return Ok(Vec::new());
    }
    let mut problems: Vec<String> = duplicates
        .iter()
        .map(|f| format!("duplicate field \"{f}\""))
        .collect();
    if let Some(schema) = t.version(version).and_then(|v| v.schema.clone()) {
        // Only the list of unknown fields is wanted here; the object itself is pruned and
        // defaulted once, on admission.
        let mut probe = obj.clone();
        problems.extend(
            schema
                .prune(&mut probe)
                .iter()
                .map(|f| format!("unknown field \"{f}\"")),
        );
    }
    if mode == "Strict" && !problems.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
            problems.join(", "),
            kind = t.kind
        )));
    }
    Ok(problems)
}

/// `[]string{"a", "b"}`, as Go prints a list of strings in a field error.
fn go_strings(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

fn dry_run_cause(values: &[String]) -> Option<Cause> {
    values.iter().any(|v| v != "All").then(|| Cause {
        reason: "FieldValueNotSupported",
        field: "dryRun".into(),
        message: format!(
            "Unsupported value: {}: supported values: \"All\"",
            go_strings(values)
        ),
    })
}

fn options_invalid(kind: &str, causes: Vec<Cause>) -> ApiResult<()> {
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(
        &format!("{kind}.meta.k8s.io"),
        "meta.k8s.io",
        kind,
        "",
        causes,
    ))
}

/// `dryRun` and `fieldValidation` of a create, update or patch, checked as the real
/// server checks its `CreateOptions`/`UpdateOptions`/`PatchOptions`: 422 on the options.
fn write_options(kind: &str, query: &HashMap<String, String>) -> ApiResult<()> {
    let mut causes = Vec::new();
    if let Some(d) = query.get("dryRun").filter(|d| !d.is_empty()) {
        causes.extend(dry_run_cause(std::slice::from_ref(d)));
    }
    if let Some(f) = query.get("fieldValidation")
        && !matches!(f.as_str(), "" | "Ignore" | "Strict" | "Warn")
    {
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: "fieldValidation".into(),
            message: format!(
                "Unsupported value: \"{f}\": supported values: \"\", \"Ignore\", \"Strict\", \"Warn\""
            ),
        });
    }
    options_invalid(kind, causes)
}

fn with_warnings(mut resp: Response<Body>, warnings: &[String]) -> Response<Body> {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

/// Whether a DeleteOptions body (JSON or protobuf) asks for `dryRun: ["All"]`.
fn dry_run_in_body(body: &[u8]) -> bool {
    let v = if body.starts_with(b"k8s\0") {
        protobuf::decode("DeleteOptions", body).unwrap_or_default()
    } else {
        serde_json::from_slice::<Value>(body).unwrap_or_default()
    };
    v["dryRun"]
        .as_array()
        .is_some_and(|d| d.iter().any(|x| x == "All"))
}

fn delete_options(body: &[u8], query: &HashMap<String, String>) -> ApiResult<DeleteOptions> {
    let mut opts = DeleteOptions::default();
    let mut dry_run = Vec::new();
    if body.starts_with(b"k8s\0") {
        let v = protobuf::decode("DeleteOptions", body).map_err(|e| {
            ApiError::unsupported_media_type(format!(
                "kube-emulator cannot read this protobuf DeleteOptions: {e}"
            ))
        })?;
        opts.uid = v["preconditions"]["uid"].as_str().map(str::to_string);
        opts.resource_version = v["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string);
        opts.propagation = v["propagationPolicy"].as_str().map(str::to_string);
        if opts.propagation.is_none() && v["orphanDependents"] == true {
            opts.propagation = Some("Orphan".into());
        }
        dry_run.extend(strings(&v["dryRun"]));
    } else if !body.iter().all(u8::is_ascii_whitespace) {
        let v: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body of the request was in an unknown format: {e}"
            ))
        })?;
        opts.uid = v["preconditions"]["uid"].as_str().map(str::to_string);
        opts.resource_version = v["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string);
        opts.propagation = v["propagationPolicy"].as_str().map(str::to_string);
        if opts.propagation.is_none() && v["orphanDependents"] == true {
            opts.propagation = Some("Orphan".into());
        }
        dry_run.extend(strings(&v["dryRun"]));
    }
    if let Some(p) = query.get("propagationPolicy").filter(|p| !p.is_empty()) {
        opts.propagation = Some(p.clone());
    }
    if let Some(d) = query.get("dryRun").filter(|d| !d.is_empty()) {
        dry_run.push(d.clone());
    }
    // Checked as the real server checks DeleteOptions: 422 on the options.
    let mut causes = Vec::new();
    if let Some(other) = opts
        .propagation
        .as_deref()
        .filter(|p| !matches!(*p, "Background" | "Foreground" | "Orphan"))
    {
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: "propagationPolicy".into(),
            message: format!(
                "Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
            ),
        });
    }
    causes.extend(dry_run_cause(&dry_run));
    options_invalid("DeleteOptions", causes)?;
    Ok(opts)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_namespaced_and_cluster_resources() {
        let namespaced = |_: &str, _: &str, r: &str| r == "configmaps";
        let segs = ["api", "v1", "namespaces", "default", "configmaps", "a"];
        let p = parse_resource_path(&segs, &namespaced).unwrap();
        assert_eq!(p.namespace.as_deref(), Some("default"));
        assert_eq!(p.name.as_deref(), Some("a"));
        let segs = ["api", "v1", "namespaces", "default", "status"];
        let p = parse_resource_path(&segs, &namespaced).unwrap();
        assert_eq!(
            (
                p.resource.as_str(),
                p.name.as_deref(),
                p.subresource.as_deref()
            ),
            ("namespaces", Some("default"), Some("status"))
        );
        let segs = ["apis", "ipledger.io", "v1alpha1", "watch", "ippools"];
        let p = parse_resource_path(&segs, &namespaced).unwrap();
        assert!(p.watch_prefix);
        assert!(
            parse_resource_path(&["apis", "x", "v1", "a", "b", "c", "d"], &namespaced).is_none()
        );
    }

    #[test]
    fn requests_cost_what_storage_costs_a_real_server() {
        use StorageCost::*;
        let cost = |m: Method, uri: &str| {
            let (path, query) = uri
                .split_once('?')
                .map_or((uri, None), |(p, q)| (p, Some(q)));
            storage_cost(&m, path, query)
        };
        let cms = "/api/v1/namespaces/default/configmaps";
        assert_eq!(cost(Method::POST, cms), Write);
        assert_eq!(cost(Method::PUT, &format!("{cms}/a")), Write);
        assert_eq!(
            cost(
                Method::PUT,
                "/apis/emulator.example.com/v1/subnets/a/status"
            ),
            Write
        );
        assert_eq!(cost(Method::PATCH, &format!("{cms}/a")), Write);
        assert_eq!(
            cost(
                Method::POST,
                "/api/v1/namespaces/a/serviceaccounts/sa/token"
            ),
            Read
        );
        assert_eq!(cost(Method::DELETE, &format!("{cms}/a")), DeleteBody);
        assert_eq!(cost(Method::POST, &format!("{cms}?dryRun=All")), Read);
        assert_eq!(cost(Method::DELETE, &format!("{cms}/a?dryRun=All")), Read);
        assert_eq!(cost(Method::GET, &format!("{cms}/a")), Read);
        assert_eq!(cost(Method::GET, cms), Read);
        assert_eq!(cost(Method::GET, &format!("{cms}?watch=false")), Read);
        assert_eq!(cost(Method::GET, &format!("{cms}?watch=true")), Nothing);
        assert_eq!(cost(Method::GET, &format!("{cms}?watch=1")), Nothing);
        assert_eq!(
            cost(Method::GET, "/api/v1/watch/namespaces/default/configmaps"),
            Nothing
        );
        for discovery in [
            "/version",
            "/healthz",
            "/readyz",
            "/api",
            "/api/v1",
            "/apis",
            "/apis/coordination.k8s.io",
            "/apis/coordination.k8s.io/v1",
            "/openapi/v3/apis/coordination.k8s.io/v1",
        ] {
            assert_eq!(cost(Method::GET, discovery), Nothing, "{discovery}");
        }
        assert_eq!(
            cost(
                Method::POST,
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
            ),
            Nothing
        );
    }

    #[test]
    fn query_strings_are_percent_decoded() {
        let q = parse_query(Some("labelSelector=app%20in%20(a%2Cb)&limit=5&x"));
        assert_eq!(q["labelSelector"], "app in (a,b)");
        assert_eq!(q["limit"], "5");
        assert_eq!(q["x"], "");
    }

    #[test]
    fn delete_options_read_preconditions_and_propagation() {
        let o = delete_options(
            br#"{"preconditions":{"uid":"u","resourceVersion":"3"},"propagationPolicy":"Orphan"}"#,
            &HashMap::new(),
        )
        .unwrap();
        assert_eq!(o.uid.as_deref(), Some("u"));
        assert_eq!(o.resource_version.as_deref(), Some("3"));
        assert_eq!(o.propagation.as_deref(), Some("Orphan"));
        assert_eq!(
            delete_options(br#"{"propagationPolicy":"Later"}"#, &HashMap::new())
                .unwrap_err()
                .code,
            422
        );
    }
}
