//! Validating admission policies (`admissionregistration.k8s.io/v1`): which policies and
//! bindings match a write, and what their CEL says of it. Pure: the store hands in the
//! stored policies, bindings and the request's attributes under its lock, and turns the
//! [`Decision`] into an answer.
//!
//! Follows the real server's `policy/validating` dispatcher and validator: policy
//! `matchConstraints` intersected with the binding's `matchResources`, `matchConditions`,
//! `variables`, `validations` with `message`/`messageExpression`/`reason`, `failurePolicy`
//! for errors, and the binding's `validationActions` (Deny, Warn, Audit).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube_cel::KubeCelExt;
use kube_cel::cel::objects::{Key, Map};
use kube_cel::cel::{Context, ExecutionError, Program, Value as Cel};
use serde_json::{Value, json};

use super::user::UserInfo;

/// The admission operation of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// POST, or server-side apply of an object that does not exist.
    Create,
    /// PUT and PATCH, of the main resource or a subresource.
    Update,
    /// DELETE.
    Delete,
}

impl Operation {
    /// The name rules and `request.operation` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
        }
    }

    fn options_kind(self) -> &'static str {
        match self {
            Self::Create => "CreateOptions",
            Self::Update => "UpdateOptions",
            Self::Delete => "DeleteOptions",
        }
    }
}

/// Who makes an API write, handed to the store so that admission runs under its lock;
/// collects the warnings the write earns. Internal writes (garbage collection, namespace
/// cleanup) carry none and are not admitted.
#[derive(Debug, Default)]
pub struct Requester {
    /// The authenticated user.
    pub user: UserInfo,
    /// `dryRun=All`.
    pub dry_run: bool,
    warnings: Mutex<Vec<String>>,
}

impl Requester {
    /// A requester.
    pub fn new(user: UserInfo, dry_run: bool) -> Self {
        Self {
            user,
            dry_run,
            warnings: Mutex::new(Vec::new()),
        }
    }

    /// Adds warnings for the response.
    pub fn warn(&self, warnings: impl IntoIterator<Item = String>) {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(warnings);
    }

    /// The warnings collected so far, emptied.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// What admission knows of one write, as the real server's `admission.Attributes`.
#[derive(Clone, Copy, Debug)]
pub struct Attributes<'a> {
    /// CREATE, UPDATE or DELETE.
    pub operation: Operation,
    /// The user making the request.
    pub user: &'a UserInfo,
    /// API group of the resource.
    pub group: &'a str,
    /// Version of the resource.
    pub version: &'a str,
    /// Plural resource name.
    pub resource: &'a str,
    /// Subresource (`status`), empty for the main resource.
    pub subresource: &'a str,
    /// Kind of the object.
    pub kind: &'a str,
    /// Object name.
    pub name: &'a str,
    /// Namespace, empty when cluster-scoped.
    pub namespace: &'a str,
    /// The object as it would be stored; None for DELETE.
    pub object: Option<&'a Value>,
    /// The stored object it replaces; None for CREATE.
    pub old_object: Option<&'a Value>,
    /// The request's namespace, for `namespaceSelector` and `namespaceObject`.
    pub namespace_object: Option<&'a Value>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

/// A refusal: the reason, code and message of the `Status` the real server answers with
/// (the message without the `<resource> "<name>" is forbidden: ` prefix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// `Invalid`, `Forbidden`, `Unauthorized` or `RequestEntityTooLarge`.
    pub reason: &'static str,
    /// 422, 403, 401 or 413.
    pub code: u16,
    /// `ValidatingAdmissionPolicy 'p' with binding 'b' denied request: ...`.
    pub message: String,
}

/// What the policies say of a write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// `Warning` headers for the response (binding action Warn).
    pub warnings: Vec<String>,
    /// Set when the write is refused.
    pub denial: Option<Denial>,
}

/// Whether admission policies apply to a resource at all: the real server exempts its
/// admission configuration, so that a bad policy cannot lock itself in.
fn exempt(group: &str, resource: &str) -> bool {
    group == "admissionregistration.k8s.io"
        && matches!(
            resource,
            "validatingadmissionpolicies"
                | "validatingadmissionpolicybindings"
                | "mutatingadmissionpolicies"
                | "mutatingadmissionpolicybindings"
                | "validatingwebhookconfigurations"
                | "mutatingwebhookconfigurations"
        )
}

/// One validation's outcome that refuses (under Deny) or warns (under Warn).
struct Failure {
    message: String,
    reason: Option<String>,
}

/// A refusal before validationActions apply (configuration errors).
struct Refusal {
    policy: String,
    binding: String,
    message: String,
    reason: Option<String>,
}

/// Decides a write against the stored policies and bindings (any order: they are taken
/// by name, as deterministic stand-in for the real server's informer order).
pub fn decide<'v>(
    policies: impl IntoIterator<Item = &'v Value>,
    bindings: impl IntoIterator<Item = &'v Value>,
    attrs: &Attributes<'_>,
) -> Decision {
    let mut decision = Decision::default();
    if exempt(attrs.group, attrs.resource) {
        return decision;
    }
    let mut by_policy: HashMap<&str, Vec<&Value>> = HashMap::new();
    for b in bindings {
        by_policy
            .entry(b["spec"]["policyName"].as_str().unwrap_or(""))
            .or_default()
            .push(b);
    }
    let mut policies: Vec<&Value> = policies.into_iter().collect();
    policies.sort_by_key(|p| name_of(p).to_string());
    let mut refused: Vec<Refusal> = Vec::new();
    for policy in policies {
        // A policy without bindings does nothing; a binding without its policy neither.
        let Some(bindings) = by_policy.get_mut(name_of(policy)) else {
            continue;
        };
        bindings.sort_by_key(|b| name_of(b).to_string());
        let spec = &policy["spec"];
        let fail = spec["failurePolicy"].as_str() != Some("Ignore");
        match matches(&spec["matchConstraints"], attrs) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                if fail {
                    refused.push(Refusal {
                        policy: name_of(policy).into(),
                        binding: String::new(),
                        message: format!("failed to configure policy: {e}"),
                        reason: None,
                    });
                }
                continue;
            }
        }
        for binding in bindings.iter() {
            let bspec = &binding["spec"];
            let matched = match bspec.get("matchResources") {
                Some(m) if m.is_object() => matches(m, attrs),
                _ => Ok(true),
            };
            let configured = match matched {
                Ok(false) => continue,
                Ok(true) if !spec["paramKind"].is_object() => Ok(()),
                Ok(true) => Err("kube-emulator does not support paramKind and paramRef".into()),
                Err(e) => Err(e),
            };
            if let Err(e) = configured {
                if fail {
                    refused.push(Refusal {
                        policy: name_of(policy).into(),
                        binding: name_of(binding).into(),
                        message: format!("failed to configure binding: {e}"),
                        reason: None,
                    });
                }
                continue;
            }
            let actions: Vec<&str> = bspec["validationActions"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for failure in validate(spec, attrs, fail) {
                for action in &actions {
                    match *action {
                        "Deny" => refused.push(Refusal {
                            policy: name_of(policy).into(),
                            binding: name_of(binding).into(),
                            message: failure.message.clone(),
                            reason: failure.reason.clone(),
                        }),
                        "Warn" => decision.warnings.push(format!(
                            "Validation failed for ValidatingAdmissionPolicy '{}' with binding '{}': {}",
                            name_of(policy),
                            name_of(binding),
                            failure.message
                        )),
                        // Audit annotations go to the audit log, which the emulator's
                        // does not carry.
                        _ => {}
                    }
                }
            }
        }
    }
    if let Some(first) = refused.into_iter().next() {
        let message = if first.binding.is_empty() {
            format!(
                "ValidatingAdmissionPolicy '{}' denied request: {}",
                first.policy, first.message
            )
        } else {
            format!(
                "ValidatingAdmissionPolicy '{}' with binding '{}' denied request: {}",
                first.policy, first.binding, first.message
            )
        };
        let (reason, code) = match first.reason.as_deref() {
            Some("Forbidden") => ("Forbidden", 403),
            Some("Unauthorized") => ("Unauthorized", 401),
            Some("RequestEntityTooLarge") => ("RequestEntityTooLarge", 413),
            // Invalid is the default; the API allows no other reason.
            _ => ("Invalid", 422),
        };
        decision.denial = Some(Denial {
            reason,
            code,
            message,
        });
    }
    decision
}

fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("")
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Whether `MatchResources` (a policy's matchConstraints or a binding's matchResources)
/// select the request. `matchPolicy: Equivalent` is treated as Exact: the emulator serves
/// each resource in one group only.
fn matches(m: &Value, attrs: &Attributes<'_>) -> Result<bool, String> {
    let ns_labels = if attrs.group.is_empty() && attrs.resource == "namespaces" {
        // A namespace is matched on its own labels.
        Some(labels_of(attrs.object.or(attrs.old_object)))
    } else if attrs.namespace.is_empty() {
        // Cluster-scoped: the namespace selector does not apply.
        None
    } else {
        Some(labels_of(attrs.namespace_object))
    };
    if let (Some(sel), Some(labels)) = (m.get("namespaceSelector"), &ns_labels)
        && !selector_matches(sel, labels)?
    {
        return Ok(false);
    }
    if let Some(sel) = m.get("objectSelector")
        && !is_everything(sel)
    {
        let on = |o: Option<&Value>| match o {
            Some(o) => selector_matches(sel, &labels_of(Some(o))),
            None => Ok(false),
        };
        if !(on(attrs.object)? || on(attrs.old_object)?) {
            return Ok(false);
        }
    }
    let excluded = m["excludeResourceRules"].as_array();
    for rule in excluded.into_iter().flatten() {
        if rule_matches(rule, attrs) {
            return Ok(false);
        }
    }
    match m["resourceRules"].as_array() {
        Some(rules) if !rules.is_empty() => Ok(rules.iter().any(|r| rule_matches(r, attrs))),
        _ => Ok(true),
    }
}

fn labels_of(obj: Option<&Value>) -> HashMap<String, String> {
    obj.and_then(|o| o["metadata"]["labels"].as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn is_everything(sel: &Value) -> bool {
    sel.is_null()
        || (sel["matchLabels"].as_object().is_none_or(|m| m.is_empty())
            && sel["matchExpressions"]
                .as_array()
                .is_none_or(|a| a.is_empty()))
}

/// A `metav1.LabelSelector` (matchLabels and matchExpressions) against labels.
fn selector_matches(sel: &Value, labels: &HashMap<String, String>) -> Result<bool, String> {
    if let Some(ml) = sel["matchLabels"].as_object() {
        for (k, v) in ml {
            if labels.get(k).map(String::as_str) != v.as_str() {
                return Ok(false);
            }
        }
    }
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or("");
        let values = strings(&e["values"]);
        let value = labels.get(key);
        let ok = match e["operator"].as_str().unwrap_or("") {
            "In" => value.is_some_and(|v| values.contains(&v.as_str())),
            "NotIn" => value.is_none_or(|v| !values.contains(&v.as_str())),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => {
                return Err(format!(
                    "\"{other}\" is not a valid label selector operator"
                ));
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// One `NamedRuleWithOperations`, as the real server's `rules.Matcher` reads it.
fn rule_matches(rule: &Value, attrs: &Attributes<'_>) -> bool {
    let any_of = |field: &str, value: &str| {
        strings(&rule[field])
            .iter()
            .any(|v| *v == "*" || *v == value)
    };
    let resource_ok = strings(&rule["resources"]).iter().any(|r| {
        if *r == "*/*" {
            return true;
        }
        let (res, sub) = r.split_once('/').unwrap_or((r, ""));
        let res_ok = res == "*" || res == attrs.resource;
        let sub_ok = if r.contains('/') {
            sub == "*" || sub == attrs.subresource
        } else {
            attrs.subresource.is_empty()
        };
        res_ok && sub_ok
    });
    let is_namespace = attrs.group.is_empty() && attrs.resource == "namespaces";
    let scope_ok = match rule["scope"].as_str().unwrap_or("*") {
        "Cluster" => is_namespace || attrs.namespace.is_empty(),
        "Namespaced" => !is_namespace && !attrs.namespace.is_empty(),
        _ => true,
    };
    let names = strings(&rule["resourceNames"]);
    any_of("operations", attrs.operation.as_str())
        && any_of("apiGroups", attrs.group)
        && any_of("apiVersions", attrs.version)
        && resource_ok
        && scope_ok
        && (names.is_empty() || names.contains(&attrs.name))
}

/// JSON as a CEL value. Field names are not escaped: built-in objects have no schema
/// here, and their map keys (labels, data) are used as they are.
fn to_cel(v: &Value) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Cel::Int(i),
            (None, Some(u)) => Cel::UInt(u),
            _ => Cel::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(a) => Cel::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(o) => {
            let map: HashMap<Key, Cel> = o
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect();
            Cel::Map(Map { map: Arc::new(map) })
        }
    }
}

/// The `request` variable: an `admission.k8s.io/v1` AdmissionRequest, with its
/// `omitempty` fields left out as the real one leaves them.
fn request(attrs: &Attributes<'_>) -> Value {
    let mut user = json!({"username": attrs.user.username});
    if !attrs.user.uid.is_empty() {
        user["uid"] = attrs.user.uid.clone().into();
    }
    if !attrs.user.groups.is_empty() {
        user["groups"] = json!(attrs.user.groups);
    }
    if !attrs.user.extra.is_empty() {
        user["extra"] = json!(attrs.user.extra);
    }
    let kind = json!({"group": attrs.group, "version": attrs.version, "kind": attrs.kind});
    let resource =
        json!({"group": attrs.group, "version": attrs.version, "resource": attrs.resource});
    let mut req = json!({
        "uid": uuid::Uuid::new_v4().to_string(),
        "kind": kind,
        "resource": resource,
        "requestKind": kind,
        "requestResource": resource,
        "operation": attrs.operation.as_str(),
        "userInfo": user,
        "dryRun": attrs.dry_run,
        "options": {"kind": attrs.operation.options_kind(), "apiVersion": "meta.k8s.io/v1"},
    });
    if !attrs.name.is_empty() {
        req["name"] = attrs.name.into();
    }
    if !attrs.namespace.is_empty() {
        req["namespace"] = attrs.namespace.into();
    }
    if !attrs.subresource.is_empty() {
        req["subResource"] = attrs.subresource.into();
        req["requestSubResource"] = attrs.subresource.into();
    }
    req
}

/// `namespaceObject`: the namespace without its managedFields, as the real server trims
/// it; null for cluster-scoped requests and for namespaces themselves.
fn namespace_object(attrs: &Attributes<'_>) -> Cel {
    let is_namespace = attrs.group.is_empty() && attrs.resource == "namespaces";
    match attrs.namespace_object {
        Some(ns) if !is_namespace && !attrs.namespace.is_empty() => {
            let mut ns = ns.clone();
            if let Some(m) = ns["metadata"].as_object_mut() {
                m.remove("managedFields");
            }
            to_cel(&ns)
        }
        _ => Cel::Null,
    }
}

/// What one CEL expression gave.
enum Outcome {
    Value(Cel),
    Error(String),
}

fn evaluate(expression: &str, ctx: &Context<'_>) -> Outcome {
    match Program::compile(expression) {
        Err(e) => Outcome::Error(format!("compilation error: {e}")),
        Ok(p) => match p.execute(ctx) {
            Ok(v) => Outcome::Value(v),
            Err(e) => {
                // cel-go's words for the commonest error; others keep the cel crate's.
                let why = match e {
                    ExecutionError::NoSuchKey(key) => format!("no such key: {key}"),
                    e => e.to_string(),
                };
                Outcome::Error(format!(
                    "expression '{expression}' resulted in error: {why}"
                ))
            }
        },
    }
}

/// The policy's validations against the request, once its matchConditions hold: what
/// fails (false, or an error under failurePolicy Fail).
fn validate(spec: &Value, attrs: &Attributes<'_>, fail: bool) -> Vec<Failure> {
    let mut ctx = Context::default();
    ctx.register_all();
    ctx.add_variable_from_value("object", attrs.object.map_or(Cel::Null, to_cel));
    ctx.add_variable_from_value("oldObject", attrs.old_object.map_or(Cel::Null, to_cel));
    ctx.add_variable_from_value("request", to_cel(&request(attrs)));
    ctx.add_variable_from_value("namespaceObject", namespace_object(attrs));
    ctx.add_variable_from_value("params", Cel::Null);
    let error = |message: String| -> Vec<Failure> {
        if fail {
            vec![Failure {
                message,
                reason: None,
            }]
        } else {
            Vec::new()
        }
    };

    // matchConditions: any false skips the policy, whatever the errors of others.
    let mut errors = Vec::new();
    for c in spec["matchConditions"].as_array().into_iter().flatten() {
        let expression = c["expression"].as_str().unwrap_or("");
        match evaluate(expression, &ctx) {
            Outcome::Value(Cel::Bool(true)) => {}
            Outcome::Value(Cel::Bool(false)) => return Vec::new(),
            Outcome::Value(_) => errors.push(format!(
                "matchCondition '{}' evaluated to a non-boolean",
                c["name"].as_str().unwrap_or("")
            )),
            Outcome::Error(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        // An aggregate of one error prints as that error, of more as a list.
        let message = if errors.len() == 1 {
            errors.remove(0)
        } else {
            format!("[{}]", errors.join(", "))
        };
        return error(message);
    }

    // Variables in order, each seeing the ones before it. The real server evaluates them
    // lazily: a failed one fails only the expressions that use it.
    let mut variables: HashMap<Key, Cel> = HashMap::new();
    let mut failed: Vec<(String, String)> = Vec::new();
    for v in spec["variables"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or("").to_string();
        ctx.add_variable_from_value(
            "variables",
            Cel::Map(Map {
                map: Arc::new(variables.clone()),
            }),
        );
        match evaluate(v["expression"].as_str().unwrap_or(""), &ctx) {
            Outcome::Value(value) => {
                variables.insert(Key::String(Arc::new(name)), value);
            }
            Outcome::Error(e) => {
                let why = e
                    .split_once(" resulted in error: ")
                    .map_or(e.as_str(), |(_, why)| why)
                    .to_string();
                failed.push((name, why));
            }
        }
    }
    ctx.add_variable_from_value(
        "variables",
        Cel::Map(Map {
            map: Arc::new(variables),
        }),
    );
    let variable_error = |expression: &str| {
        failed.iter().find_map(|(name, why)| {
            expression.contains(&format!("variables.{name}")).then(|| {
                format!(
                    "expression '{expression}' resulted in error: composited variable \"{name}\" fails to evaluate: {why}"
                )
            })
        })
    };

    let mut failures = Vec::new();
    for v in spec["validations"].as_array().into_iter().flatten() {
        let expression = v["expression"].as_str().unwrap_or("");
        match evaluate(expression, &ctx) {
            Outcome::Value(Cel::Bool(true)) => {}
            Outcome::Error(e) => {
                let message = variable_error(expression).unwrap_or(e);
                failures.extend(error(message));
            }
            // Anything but true refuses, as in the real validator.
            Outcome::Value(_) => {
                let from_expression =
                    v["messageExpression"]
                        .as_str()
                        .and_then(|me| match evaluate(me, &ctx) {
                            Outcome::Value(Cel::String(s)) => {
                                let s = s.trim();
                                (!s.is_empty() && !s.contains('\n') && s.len() <= 5000)
                                    .then(|| s.to_string())
                            }
                            _ => None,
                        });
                let message = from_expression
                    .or_else(|| {
                        v["message"]
                            .as_str()
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(str::to_string)
                    })
                    .unwrap_or_else(|| format!("failed expression: {}", expression.trim()));
                failures.push(Failure {
                    message,
                    reason: Some(v["reason"].as_str().unwrap_or("Invalid").to_string()),
                });
            }
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(spec: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": spec})
    }

    fn binding(actions: &[&str]) -> Value {
        json!({"metadata": {"name": "b"}, "spec": {"policyName": "p", "validationActions": actions}})
    }

    fn configmaps() -> Value {
        json!({"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"], "operations": ["*"]}]})
    }

    fn user() -> UserInfo {
        UserInfo {
            username: "system:serviceaccount:ns:agent".into(),
            uid: "u-1".into(),
            groups: vec![
                "system:serviceaccounts".into(),
                "system:authenticated".into(),
            ],
            extra: [(
                "authentication.kubernetes.io/node-name".to_string(),
                vec!["node-a".to_string()],
            )]
            .into(),
        }
    }

    fn attrs<'a>(
        user: &'a UserInfo,
        object: Option<&'a Value>,
        old: Option<&'a Value>,
    ) -> Attributes<'a> {
        Attributes {
            operation: match (object, old) {
                (Some(_), None) => Operation::Create,
                (Some(_), Some(_)) => Operation::Update,
                _ => Operation::Delete,
            },
            user,
            group: "",
            version: "v1",
            resource: "configmaps",
            subresource: "",
            kind: "ConfigMap",
            name: "cm",
            namespace: "ns",
            object,
            old_object: old,
            namespace_object: None,
            dry_run: false,
        }
    }

    fn cm(labels: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "ns", "labels": labels}, "data": {"node": "node-a"}})
    }

    fn decide_one(spec: Value, actions: &[&str], a: &Attributes<'_>) -> Decision {
        decide([&policy(spec)], [&binding(actions)], a)
    }

    #[test]
    fn a_false_validation_denies_with_the_expression_as_message_and_invalid() {
        let u = user();
        let obj = cm(json!({}));
        let spec = json!({"matchConstraints": configmaps(), "validations": [{"expression": "has(object.metadata.labels.team)"}]});
        let d = decide_one(spec, &["Deny"], &attrs(&u, Some(&obj), None));
        assert_eq!(
            d.denial,
            Some(Denial {
                reason: "Invalid",
                code: 422,
                message: "ValidatingAdmissionPolicy 'p' with binding 'b' denied request: failed expression: has(object.metadata.labels.team)".into(),
            })
        );
        let labelled = cm(json!({"team": "x"}));
        let spec = json!({"matchConstraints": configmaps(), "validations": [{"expression": "has(object.metadata.labels.team)"}]});
        assert_eq!(
            decide_one(spec, &["Deny"], &attrs(&u, Some(&labelled), None)),
            Decision::default()
        );
    }

    #[test]
    fn message_expression_beats_message_and_reason_sets_the_code() {
        let u = user();
        let obj = cm(json!({}));
        let spec = json!({"matchConstraints": configmaps(), "validations": [{
            "expression": "false", "message": "static", "reason": "Forbidden",
            "messageExpression": "'cm ' + object.metadata.name + ' refused'"}]});
        let d = decide_one(spec, &["Deny"], &attrs(&u, Some(&obj), None))
            .denial
            .unwrap();
        assert_eq!((d.reason, d.code), ("Forbidden", 403));
        assert!(
            d.message.ends_with("denied request: cm cm refused"),
            "{}",
            d.message
        );
        // A messageExpression that errors or gives a non-string falls back to message.
        let spec = json!({"matchConstraints": configmaps(), "validations": [{
            "expression": "false", "message": " static ", "reason": "Unauthorized", "messageExpression": "1"}]});
        let d = decide_one(spec, &["Deny"], &attrs(&u, Some(&obj), None))
            .denial
            .unwrap();
        assert_eq!((d.reason, d.code), ("Unauthorized", 401));
        assert!(
            d.message.ends_with("denied request: static"),
            "{}",
            d.message
        );
    }

    #[test]
    fn extra_of_the_user_reaches_cel_and_compares_with_the_object() {
        let u = user();
        let spec = json!({"matchConstraints": configmaps(), "validations": [{
            "expression": "request.userInfo.extra['authentication.kubernetes.io/node-name'][0] == object.data.node"}]});
        let mine = cm(json!({}));
        assert!(
            decide_one(spec.clone(), &["Deny"], &attrs(&u, Some(&mine), None))
                .denial
                .is_none()
        );
        let mut other = cm(json!({}));
        other["data"]["node"] = "node-b".into();
        assert!(
            decide_one(spec, &["Deny"], &attrs(&u, Some(&other), None))
                .denial
                .is_some()
        );
    }

    #[test]
    fn request_carries_operation_user_and_names() {
        let u = user();
        let obj = cm(json!({}));
        let spec = json!({"matchConstraints": configmaps(), "validations": [{"expression":
            "request.operation == 'CREATE' && request.name == 'cm' && request.namespace == 'ns' && request.userInfo.username == 'system:serviceaccount:ns:agent' && request.userInfo.uid == 'u-1' && 'system:authenticated' in request.userInfo.groups && request.kind.kind == 'ConfigMap' && request.resource.resource == 'configmaps' && request.dryRun == false && oldObject == null"}]});
        assert_eq!(
            decide_one(spec, &["Deny"], &attrs(&u, Some(&obj), None)),
            Decision::default()
        );
    }

    #[test]
    fn variables_see_the_ones_before_them() {
        let u = user();
        let obj = cm(json!({"team": "blue"}));
        let spec = json!({"matchConstraints": configmaps(),
            "variables": [{"name": "team", "expression": "object.metadata.labels.team"},
                          {"name": "isBlue", "expression": "variables.team == 'blue'"}],
            "validations": [{"expression": "!variables.isBlue", "messageExpression": "'team ' + variables.team"}]});
        let d = decide_one(spec, &["Deny"], &attrs(&u, Some(&obj), None))
            .denial
            .unwrap();
        assert!(
            d.message.ends_with("denied request: team blue"),
            "{}",
            d.message
        );
    }

    #[test]
    fn a_failing_variable_fails_the_expressions_using_it() {
        let u = user();
        let obj = cm(json!({}));
        let spec = json!({"matchConstraints": configmaps(),
            "variables": [{"name": "team", "expression": "object.metadata.labels.team"}],
            "validations": [{"expression": "variables.team == 'x'"}]});
        let d = decide_one(spec, &["Deny"], &attrs(&u, Some(&obj), None))
            .denial
            .unwrap();
        assert!(
            d.message
                .contains("resulted in error: composited variable \"team\" fails to evaluate"),
            "{}",
            d.message
        );
        assert_eq!(d.code, 422);
    }

    #[test]
    fn match_conditions_skip_the_policy_when_one_is_false() {
        let u = user();
        let obj = cm(json!({}));
        let spec = |who: &str| {
            json!({"matchConstraints": configmaps(),
            "matchConditions": [{"name": "not-admin", "expression": format!("request.userInfo.username != '{who}'")},
                                {"name": "broken", "expression": "object.nope.deeper"}],
            "validations": [{"expression": "false"}]})
        };
        // False beats the other condition's error.
        let skipped = decide_one(
            spec("system:serviceaccount:ns:agent"),
            &["Deny"],
            &attrs(&u, Some(&obj), None),
        );
        assert_eq!(skipped, Decision::default());
        // All true or erroring: the error follows failurePolicy (Fail).
        let d = decide_one(spec("admin"), &["Deny"], &attrs(&u, Some(&obj), None))
            .denial
            .unwrap();
        assert!(
            d.message
                .contains("expression 'object.nope.deeper' resulted in error"),
            "{}",
            d.message
        );
    }

    #[test]
    fn errors_follow_the_failure_policy() {
        let u = user();
        let obj = cm(json!({}));
        let spec = |fp: &str| {
            json!({"matchConstraints": configmaps(), "failurePolicy": fp,
            "validations": [{"expression": "object.data.missing == 'x'", "reason": "Forbidden"}]})
        };
        let d = decide_one(spec("Fail"), &["Deny"], &attrs(&u, Some(&obj), None))
            .denial
            .unwrap();
        // An error has no reason of its own: Invalid, whatever the validation's reason.
        assert_eq!((d.reason, d.code), ("Invalid", 422));
        assert_eq!(
            d.message,
            "ValidatingAdmissionPolicy 'p' with binding 'b' denied request: expression 'object.data.missing == 'x'' resulted in error: no such key: missing"
        );
        assert_eq!(
            decide_one(spec("Ignore"), &["Deny"], &attrs(&u, Some(&obj), None)),
            Decision::default()
        );
        let spec =
            json!({"matchConstraints": configmaps(), "validations": [{"expression": "object.("}]});
        let d = decide_one(spec, &["Deny"], &attrs(&u, Some(&obj), None))
            .denial
            .unwrap();
        assert!(
            d.message.contains("denied request: compilation error: "),
            "{}",
            d.message
        );
    }

    #[test]
    fn warn_warns_audit_is_silent_and_deny_warn_does_both() {
        let u = user();
        let obj = cm(json!({}));
        let spec = json!({"matchConstraints": configmaps(), "validations": [{"expression": "false", "message": "no"}]});
        let d = decide_one(spec.clone(), &["Warn"], &attrs(&u, Some(&obj), None));
        assert_eq!(d.denial, None);
        assert_eq!(
            d.warnings,
            ["Validation failed for ValidatingAdmissionPolicy 'p' with binding 'b': no"]
        );
        assert_eq!(
            decide_one(spec.clone(), &["Audit"], &attrs(&u, Some(&obj), None)),
            Decision::default()
        );
        let d = decide_one(spec, &["Deny", "Warn"], &attrs(&u, Some(&obj), None));
        assert!(d.denial.is_some());
        assert_eq!(d.warnings.len(), 1);
    }

    #[test]
    fn update_and_delete_see_old_object() {
        let u = user();
        let old = cm(json!({"owner": "a"}));
        let new = cm(json!({"owner": "b"}));
        let spec = json!({"matchConstraints": configmaps(), "validations": [{"expression":
            "request.operation == 'DELETE' ? object == null && oldObject.metadata.labels.owner == 'a' : object.metadata.labels.owner == oldObject.metadata.labels.owner"}]});
        assert!(
            decide_one(spec.clone(), &["Deny"], &attrs(&u, Some(&new), Some(&old)))
                .denial
                .is_some()
        );
        assert!(
            decide_one(spec.clone(), &["Deny"], &attrs(&u, Some(&old), Some(&old)))
                .denial
                .is_none()
        );
        assert!(
            decide_one(spec, &["Deny"], &attrs(&u, None, Some(&old)))
                .denial
                .is_none()
        );
    }

    #[test]
    fn resource_rules_match_operations_groups_and_subresources() {
        let u = user();
        let obj = cm(json!({}));
        let mut a = attrs(&u, Some(&obj), None);
        let rule = |resources: Value, ops: Value| json!({"resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"], "resources": resources, "operations": ops}]});
        assert!(matches(&rule(json!(["*"]), json!(["CREATE"])), &a).unwrap());
        assert!(!matches(&rule(json!(["*"]), json!(["UPDATE", "DELETE"])), &a).unwrap());
        assert!(!matches(&rule(json!(["pods"]), json!(["*"])), &a).unwrap());
        a.subresource = "status";
        assert!(!matches(&rule(json!(["*"]), json!(["*"])), &a).unwrap());
        assert!(!matches(&rule(json!(["configmaps"]), json!(["*"])), &a).unwrap());
        assert!(matches(&rule(json!(["configmaps/status"]), json!(["*"])), &a).unwrap());
        assert!(matches(&rule(json!(["*/status"]), json!(["*"])), &a).unwrap());
        assert!(matches(&rule(json!(["*/*"]), json!(["*"])), &a).unwrap());
        assert!(!matches(&rule(json!(["*/scale"]), json!(["*"])), &a).unwrap());
        a.subresource = "";
        let named = json!({"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"], "operations": ["*"], "resourceNames": ["other"]}]});
        assert!(!matches(&named, &a).unwrap());
        let excluded = json!({"resourceRules": configmaps()["resourceRules"], "excludeResourceRules": [{"apiGroups": [""], "apiVersions": ["*"], "resources": ["configmaps"], "operations": ["CREATE"], "resourceNames": ["cm"]}]});
        assert!(!matches(&excluded, &a).unwrap());
        let cluster = json!({"resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"], "operations": ["*"], "scope": "Cluster"}]});
        assert!(!matches(&cluster, &a).unwrap());
    }

    #[test]
    fn selectors_match_namespace_and_object_or_old_object_labels() {
        let u = user();
        let ns = json!({"metadata": {"name": "ns", "labels": {"env": "test"}}});
        let obj = cm(json!({"app": "web"}));
        let old = cm(json!({"app": "db"}));
        let mut a = attrs(&u, Some(&obj), Some(&old));
        a.namespace_object = Some(&ns);
        let sel = |ns_sel: Value, obj_sel: Value| json!({"namespaceSelector": ns_sel, "objectSelector": obj_sel});
        assert!(matches(&sel(json!({"matchLabels": {"env": "test"}}), json!({})), &a).unwrap());
        assert!(!matches(&sel(json!({"matchLabels": {"env": "prod"}}), json!({})), &a).unwrap());
        assert!(matches(&sel(json!({}), json!({"matchLabels": {"app": "db"}})), &a).unwrap());
        assert!(!matches(&sel(json!({}), json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web", "db"]}]})), &a).unwrap());
        assert!(
            matches(
                &sel(
                    json!({"matchExpressions": [{"key": "env", "operator": "Exists"}]}),
                    json!({})
                ),
                &a
            )
            .unwrap()
        );
        assert!(
            matches(
                &sel(
                    json!({"matchExpressions": [{"key": "x", "operator": "Bogus"}]}),
                    json!({})
                ),
                &a
            )
            .is_err()
        );
    }

    #[test]
    fn binding_match_resources_narrow_the_policy() {
        let u = user();
        let obj = cm(json!({"app": "web"}));
        let a = attrs(&u, Some(&obj), None);
        let spec =
            json!({"matchConstraints": configmaps(), "validations": [{"expression": "false"}]});
        let mut b = binding(&["Deny"]);
        b["spec"]["matchResources"] = json!({"objectSelector": {"matchLabels": {"app": "db"}}});
        assert_eq!(
            decide([&policy(spec.clone())], [&b], &a),
            Decision::default()
        );
        b["spec"]["matchResources"] = json!({"objectSelector": {"matchLabels": {"app": "web"}}});
        assert!(decide([&policy(spec.clone())], [&b], &a).denial.is_some());
        // A binding of another policy, or none at all, does nothing.
        b["spec"]["policyName"] = "q".into();
        assert_eq!(decide([&policy(spec)], [&b], &a), Decision::default());
    }

    #[test]
    fn param_kind_is_a_configuration_error_under_fail_only() {
        let u = user();
        let obj = cm(json!({}));
        let spec = |fp: &str| {
            json!({"matchConstraints": configmaps(), "failurePolicy": fp,
            "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"}, "validations": [{"expression": "true"}]})
        };
        let d = decide_one(spec("Fail"), &["Warn"], &attrs(&u, Some(&obj), None))
            .denial
            .unwrap();
        assert!(
            d.message
                .contains("denied request: failed to configure binding: "),
            "{}",
            d.message
        );
        assert_eq!(
            decide_one(spec("Ignore"), &["Deny"], &attrs(&u, Some(&obj), None)),
            Decision::default()
        );
    }

    #[test]
    fn admission_configuration_is_exempt() {
        let u = user();
        let obj = json!({"metadata": {"name": "p"}});
        let mut a = attrs(&u, Some(&obj), None);
        a.group = "admissionregistration.k8s.io";
        a.resource = "validatingadmissionpolicies";
        a.namespace = "";
        let spec = json!({"matchConstraints": {"resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"], "operations": ["*"]}]}, "validations": [{"expression": "false"}]});
        assert_eq!(decide_one(spec, &["Deny"], &a), Decision::default());
    }

    #[test]
    fn kubernetes_cel_functions_are_there() {
        let u = user();
        let mut obj = cm(json!({}));
        obj["data"]["cidr"] = "10.0.0.0/24".into();
        let spec = json!({"matchConstraints": configmaps(), "validations": [{"expression":
            "cidr(object.data.cidr).containsIP(ip('10.0.0.7')) && object.data.node.startsWith('node-') && [1, 2].isSorted()"}]});
        assert_eq!(
            decide_one(spec, &["Deny"], &attrs(&u, Some(&obj), None)),
            Decision::default()
        );
    }
}
