//! RBAC authorization, decided as the real server's RBAC authorizer decides it: a pure
//! function of the stored Roles, ClusterRoles and their bindings, the user and the
//! request's attributes (verb, group, resource, subresource, namespace, name, or a
//! non-resource path). Members of `system:masters` are allowed everything, as the real
//! server's privileged-group authorizer allows them before RBAC is asked.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::selectors::{FieldSelector, supported_fields};
use super::user::{MASTERS, UserInfo, service_account_user};

/// What a request asks to do, as the real server's request info names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`;
    /// for a non-resource request the lowercase HTTP method.
    pub verb: String,
    /// A resource request, or the path of a non-resource one.
    pub target: Target,
}

/// The thing a request is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A resource of an API group (empty strings where the request names none).
    Resource {
        /// API group, empty for core.
        group: String,
        /// Plural resource name.
        resource: String,
        /// `status`, `token`, or empty.
        subresource: String,
        /// Namespace, empty at the cluster scope (a namespace's own name for
        /// `namespaces/NAME`, as on the real server).
        namespace: String,
        /// Object name, empty for collections (a list's `metadata.name` field selector
        /// names one).
        name: String,
    },
    /// Anything not under `/api/VERSION/...` or `/apis/GROUP/VERSION/...`: discovery,
    /// `/version`, health checks, `/openapi/...`.
    NonResource {
        /// The request path.
        path: String,
    },
}

impl Attributes {
    /// The attributes of a request, derived as the real server's request info derives
    /// them from the method, path and query alone (before routing): a GET of a collection
    /// is `list`, or `watch` with `?watch=true` or under `/watch/`; a DELETE of one is
    /// `deletecollection`; a list or (non-prefix) watch whose field selector requires one
    /// `metadata.name` names that object; `namespaces/NAME` is in namespace NAME.
    pub fn of_request(method: &str, path: &str, query: &HashMap<String, String>) -> Self {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let non_resource = || Self {
            verb: method.to_lowercase(),
            target: Target::NonResource {
                path: path.to_string(),
            },
        };
        let (group, rest) = match segments.as_slice() {
            ["api", _version, rest @ ..] if !rest.is_empty() => ("", rest),
            ["apis", group, _version, rest @ ..] if !rest.is_empty() => (*group, rest),
            _ => return non_resource(),
        };
        let (prefix_watch, rest) = match rest {
            ["watch", rest @ ..] if !rest.is_empty() => (true, rest),
            _ => (false, rest),
        };
        let mut verb = if prefix_watch {
            "watch"
        } else {
            match method {
                "POST" => "create",
                "GET" | "HEAD" => "get",
                "PUT" => "update",
                "PATCH" => "patch",
                "DELETE" => "delete",
                _ => "",
            }
        };
        let (namespace, parts) = match rest {
            ["namespaces", ns, tail @ ..]
                if !tail.is_empty() && !matches!(tail[0], "status" | "finalize") =>
            {
                (*ns, tail)
            }
            ["namespaces", ns, ..] => (*ns, rest),
            _ => ("", rest),
        };
        let part = |i: usize| parts.get(i).copied().unwrap_or_default().to_string();
        let (resource, mut name, subresource) = (part(0), part(1), part(2));
        if name.is_empty() && verb == "get" {
            let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
            verb = if watching { "watch" } else { "list" };
            if let Some(selector) = query.get("fieldSelector")
                && let Ok(fields) =
                    FieldSelector::parse(selector, supported_fields(group, &resource))
                && let Some(n) = fields.requires_exact("metadata.name")
                && is_path_segment_name(n)
            {
                name = n.to_string();
            }
        }
        if name.is_empty() && verb == "delete" {
            verb = "deletecollection";
        }
        Self {
            verb: verb.to_string(),
            target: Target::Resource {
                group: group.to_string(),
                resource,
                subresource,
                namespace: namespace.to_string(),
                name,
            },
        }
    }
}

/// Whether `name` can be a path segment, as the real server's request info requires of a
/// name it takes from a field selector (`path.IsValidPathSegmentName`).
pub fn is_path_segment_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%'])
}

/// An RBAC decision and the real authorizer's reason for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// When allowed, which binding allowed it (`RBAC: allowed by ...`); when denied, the
    /// bindings that could not be evaluated (`RBAC: clusterrole... not found`), or empty.
    pub reason: String,
}

impl Decision {
    /// The `status` of a SelfSubjectAccessReview answered by this decision.
    pub fn to_review(&self) -> Value {
        let mut status = json!({"allowed": self.allowed});
        if !self.reason.is_empty() {
            status["reason"] = self.reason.clone().into();
        }
        status
    }
}

/// One rule of a Role or ClusterRole.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyRule {
    /// Verbs, `*` for all.
    pub verbs: Vec<String>,
    /// API groups, `*` for all, `""` for core.
    pub api_groups: Vec<String>,
    /// Resources: `pods`, `pods/status`, `*`, `*/status`.
    pub resources: Vec<String>,
    /// Object names the rule is limited to; empty for all.
    pub resource_names: Vec<String>,
    /// Paths of non-resource requests: exact, or a prefix ending in `*`.
    #[serde(rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
}

/// Whom a binding grants to.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Subject {
    /// `ServiceAccount`, `User` or `Group`.
    pub kind: String,
    /// The name.
    pub name: String,
    /// A ServiceAccount's namespace; a RoleBinding's own when empty.
    pub namespace: String,
}

/// The role a binding grants.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct RoleRef {
    /// `Role` or `ClusterRole`.
    pub kind: String,
    /// The role's name.
    pub name: String,
}

/// A Role (namespaced) or ClusterRole (`namespace` empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Role {
    /// Name.
    pub name: String,
    /// Namespace; empty for a ClusterRole.
    pub namespace: String,
    /// What it allows.
    pub rules: Vec<PolicyRule>,
}

/// A RoleBinding (namespaced) or ClusterRoleBinding (`namespace` empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Binding {
    /// Name.
    pub name: String,
    /// Namespace; empty for a ClusterRoleBinding.
    pub namespace: String,
    /// The role granted.
    pub role_ref: RoleRef,
    /// To whom.
    pub subjects: Vec<Subject>,
}

/// Every RBAC object the decision reads.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Roles by namespace and name.
    pub roles: BTreeMap<(String, String), Role>,
    /// ClusterRoles by name.
    pub cluster_roles: BTreeMap<String, Role>,
    /// RoleBindings, in namespace and name order.
    pub role_bindings: Vec<Binding>,
    /// ClusterRoleBindings, in name order.
    pub cluster_role_bindings: Vec<Binding>,
}

fn field<T: for<'de> Deserialize<'de> + Default>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap_or_default()
}

fn meta(obj: &Value, key: &str) -> String {
    obj["metadata"][key]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

impl Role {
    /// A stored Role or ClusterRole.
    pub fn from_object(obj: &Value) -> Self {
        Self {
            name: meta(obj, "name"),
            namespace: meta(obj, "namespace"),
            rules: field(&obj["rules"]),
        }
    }
}

impl Binding {
    /// A stored RoleBinding or ClusterRoleBinding.
    pub fn from_object(obj: &Value) -> Self {
        Self {
            name: meta(obj, "name"),
            namespace: meta(obj, "namespace"),
            role_ref: field(&obj["roleRef"]),
            subjects: field(&obj["subjects"]),
        }
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The bootstrap ClusterRoles every real cluster has that concern any user, with the
/// ClusterRoleBindings that grant them: discovery, the public version and health paths,
/// and the self-reviews. They take part in every decision without being stored.
fn bootstrap() -> (Vec<Role>, Vec<Binding>) {
    let get = |urls: &[&str]| PolicyRule {
        verbs: strings(&["get"]),
        non_resource_urls: strings(urls),
        ..Default::default()
    };
    let create = |group: &str, resources: &[&str]| PolicyRule {
        verbs: strings(&["create"]),
        api_groups: strings(&[group]),
        resources: strings(resources),
        ..Default::default()
    };
    let roles = vec![
        Role {
            name: "system:discovery".into(),
            rules: vec![get(&[
                "/api",
                "/api/*",
                "/apis",
                "/apis/*",
                "/healthz",
                "/livez",
                "/openapi",
                "/openapi/*",
                "/readyz",
                "/version",
                "/version/",
            ])],
            ..Default::default()
        },
        Role {
            name: "system:public-info-viewer".into(),
            rules: vec![get(&[
                "/healthz",
                "/livez",
                "/readyz",
                "/version",
                "/version/",
            ])],
            ..Default::default()
        },
        Role {
            name: "system:basic-user".into(),
            rules: vec![
                create(
                    "authorization.k8s.io",
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                create("authentication.k8s.io", &["selfsubjectreviews"]),
            ],
            ..Default::default()
        },
    ];
    let group = |name: &str| Subject {
        kind: "Group".into(),
        name: name.into(),
        ..Default::default()
    };
    let binding = |name: &str, subjects: Vec<Subject>| Binding {
        name: name.into(),
        namespace: String::new(),
        role_ref: RoleRef {
            kind: "ClusterRole".into(),
            name: name.into(),
        },
        subjects,
    };
    let bindings = vec![
        binding("system:basic-user", vec![group("system:authenticated")]),
        binding("system:discovery", vec![group("system:authenticated")]),
        binding(
            "system:public-info-viewer",
            vec![
                group("system:authenticated"),
                group("system:unauthenticated"),
            ],
        ),
    ];
    (roles, bindings)
}

impl Policy {
    /// The policy of the stored objects plus the bootstrap roles and bindings.
    pub fn new(
        roles: &[impl Borrow<Value>],
        cluster_roles: &[impl Borrow<Value>],
        role_bindings: &[impl Borrow<Value>],
        cluster_role_bindings: &[impl Borrow<Value>],
    ) -> Self {
        let (boot_roles, boot_bindings) = bootstrap();
        let mut policy = Self::default();
        for r in boot_roles {
            policy.cluster_roles.insert(r.name.clone(), r);
        }
        policy.cluster_role_bindings = boot_bindings;
        for r in roles.iter().map(|o| Role::from_object(o.borrow())) {
            policy
                .roles
                .insert((r.namespace.clone(), r.name.clone()), r);
        }
        for r in cluster_roles.iter().map(|o| Role::from_object(o.borrow())) {
            policy.cluster_roles.insert(r.name.clone(), r);
        }
        policy.role_bindings = role_bindings
            .iter()
            .map(|o| Binding::from_object(o.borrow()))
            .collect();
        let stored = cluster_role_bindings
            .iter()
            .map(|o| Binding::from_object(o.borrow()));
        // A stored binding of a bootstrap name stands in for the built-in one.
        for b in stored {
            policy.cluster_role_bindings.retain(|x| x.name != b.name);
            policy.cluster_role_bindings.push(b);
        }
        policy
            .cluster_role_bindings
            .sort_by(|a, b| a.name.cmp(&b.name));
        policy
            .role_bindings
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        policy
    }

    /// The rules `role_ref` names, seen from a binding in `namespace` (empty for a
    /// ClusterRoleBinding); Err is the real lister's message for a missing role.
    fn rules(&self, role_ref: &RoleRef, namespace: &str) -> Result<&[PolicyRule], String> {
        match role_ref.kind.as_str() {
            "Role" => self
                .roles
                .get(&(namespace.to_string(), role_ref.name.clone()))
                .map(|r| r.rules.as_slice())
                .ok_or_else(|| {
                    format!(
                        "role.rbac.authorization.k8s.io \"{}\" not found",
                        role_ref.name
                    )
                }),
            "ClusterRole" => self
                .cluster_roles
                .get(&role_ref.name)
                .map(|r| r.rules.as_slice())
                .ok_or_else(|| {
                    format!(
                        "clusterrole.rbac.authorization.k8s.io \"{}\" not found",
                        role_ref.name
                    )
                }),
            other => Err(format!("unsupported role reference kind: \"{other}\"")),
        }
    }
}

/// Whether `subject` of a binding in `namespace` (empty for a ClusterRoleBinding) is
/// `user`.
fn applies_to(user: &UserInfo, subject: &Subject, namespace: &str) -> bool {
    match subject.kind.as_str() {
        "User" => user.username == subject.name,
        "Group" => user.groups.contains(&subject.name),
        "ServiceAccount" => {
            // The real authorizer lets a RoleBinding's subject leave out its own namespace.
            let ns = if subject.namespace.is_empty() {
                namespace
            } else {
                &subject.namespace
            };
            !ns.is_empty() && user.username == service_account_user(ns, &subject.name)
        }
        _ => false,
    }
}

/// How the real authorizer names a subject in its reasons.
fn describe_subject(subject: &Subject, namespace: &str) -> String {
    match subject.kind.as_str() {
        "ServiceAccount" => {
            let ns = if subject.namespace.is_empty() {
                namespace
            } else {
                &subject.namespace
            };
            format!("ServiceAccount \"{}/{ns}\"", subject.name)
        }
        kind => format!("{kind} \"{}\"", subject.name),
    }
}

fn matches(allowed: &[String], wanted: &str) -> bool {
    allowed.iter().any(|a| a == "*" || a == wanted)
}

/// Whether `rule` allows the request. Resources match exactly (`pods/status`), by `*`, or
/// by `*/SUBRESOURCE`; `pods/*` is not a wildcard, as on the real server.
pub fn rule_allows(rule: &PolicyRule, attrs: &Attributes) -> bool {
    if !matches(&rule.verbs, &attrs.verb) {
        return false;
    }
    match &attrs.target {
        Target::Resource {
            group,
            resource,
            subresource,
            name,
            ..
        } => {
            let combined = if subresource.is_empty() {
                resource.clone()
            } else {
                format!("{resource}/{subresource}")
            };
            let resource_matches = rule.resources.iter().any(|r| {
                r == "*"
                    || *r == combined
                    || (!subresource.is_empty() && r.strip_prefix("*/") == Some(subresource))
            });
            matches(&rule.api_groups, group)
                && resource_matches
                && (rule.resource_names.is_empty() || rule.resource_names.contains(name))
        }
        Target::NonResource { path } => rule.non_resource_urls.iter().any(|u| {
            u == "*"
                || u == path
                || u.strip_suffix('*')
                    .is_some_and(|prefix| path.starts_with(prefix))
        }),
    }
}

/// Decides a request of `user`: ClusterRoleBindings first, then the RoleBindings of the
/// request's namespace, the first rule that allows it wins.
pub fn authorize(policy: &Policy, user: &UserInfo, attrs: &Attributes) -> Decision {
    if user.groups.iter().any(|g| g == MASTERS) {
        return Decision {
            allowed: true,
            reason: String::new(),
        };
    }
    let namespace = match &attrs.target {
        Target::Resource { namespace, .. } => namespace.as_str(),
        Target::NonResource { .. } => "",
    };
    let mut errors = Vec::new();
    let bindings = policy.cluster_role_bindings.iter().chain(
        policy
            .role_bindings
            .iter()
            .filter(|b| !namespace.is_empty() && b.namespace == namespace),
    );
    for binding in bindings {
        let Some(subject) = binding
            .subjects
            .iter()
            .find(|s| applies_to(user, s, &binding.namespace))
        else {
            continue;
        };
        // A RoleBinding only grants namespaced requests, a ClusterRole's rules included.
        let rules = match policy.rules(&binding.role_ref, &binding.namespace) {
            Ok(rules) => rules,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if rules.iter().any(|r| rule_allows(r, attrs)) {
            let (what, name) = if binding.namespace.is_empty() {
                ("ClusterRoleBinding", binding.name.clone())
            } else {
                (
                    "RoleBinding",
                    format!("{}/{}", binding.name, binding.namespace),
                )
            };
            return Decision {
                allowed: true,
                reason: format!(
                    "RBAC: allowed by {what} \"{name}\" of {} \"{}\" to {}",
                    binding.role_ref.kind,
                    binding.role_ref.name,
                    describe_subject(subject, &binding.namespace)
                ),
            };
        }
    }
    let reason = match errors.as_slice() {
        [] => String::new(),
        [one] => format!("RBAC: {one}"),
        many => format!("RBAC: [{}]", many.join(", ")),
    };
    Decision {
        allowed: false,
        reason,
    }
}

/// The 403 the real server answers a denied request with: `<what> is forbidden: User
/// "<user>" cannot <verb> resource "<resource>" in API group "<group>" <scope>`, or
/// `forbidden: User "<user>" cannot <verb> path "<path>"`; then `: <reason>` if any.
pub fn forbidden(user: &str, attrs: &Attributes, reason: &str) -> ApiError {
    let verb = &attrs.verb;
    let (mut message, details) = match &attrs.target {
        Target::NonResource { path } => (
            format!("forbidden: User \"{user}\" cannot {verb} path \"{path}\""),
            json!({}),
        ),
        Target::Resource {
            group,
            resource,
            subresource,
            namespace,
            name,
        } => {
            let qualified = if group.is_empty() {
                resource.clone()
            } else {
                format!("{resource}.{group}")
            };
            let what = if name.is_empty() {
                qualified
            } else {
                format!("{qualified} \"{name}\"")
            };
            let combined = if subresource.is_empty() {
                resource.clone()
            } else {
                format!("{resource}/{subresource}")
            };
            let scope = if namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace \"{namespace}\"")
            };
            // The real Status leaves empty detail fields out.
            let mut details = json!({"kind": resource});
            if !name.is_empty() {
                details["name"] = name.clone().into();
            }
            if !group.is_empty() {
                details["group"] = group.clone().into();
            }
            (
                format!(
                    "{what} is forbidden: User \"{user}\" cannot {verb} resource \"{combined}\" in API group \"{group}\" {scope}"
                ),
                details,
            )
        }
    };
    if !reason.is_empty() {
        message.push_str(": ");
        message.push_str(reason);
    }
    ApiError {
        details: Some(details),
        ..ApiError::forbidden(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(ns: &str, name: &str) -> UserInfo {
        UserInfo::service_account(ns, name, "uid-1")
    }

    fn res(verb: &str, group: &str, resource: &str, ns: &str, name: &str) -> Attributes {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        Attributes {
            verb: verb.into(),
            target: Target::Resource {
                group: group.into(),
                resource: resource.into(),
                subresource: subresource.into(),
                namespace: ns.into(),
                name: name.into(),
            },
        }
    }

    fn path(verb: &str, p: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            target: Target::NonResource { path: p.into() },
        }
    }

    fn role(kind: &str, ns: &str, name: &str, rules: Value) -> Value {
        json!({"kind": kind, "metadata": {"name": name, "namespace": ns}, "rules": rules})
    }

    fn binding(kind: &str, ns: &str, name: &str, role_ref: (&str, &str), subjects: Value) -> Value {
        json!({"kind": kind, "metadata": {"name": name, "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_ref.0, "name": role_ref.1},
            "subjects": subjects})
    }

    fn sa_subject(ns: &str, name: &str) -> Value {
        json!([{"kind": "ServiceAccount", "name": name, "namespace": ns}])
    }

    /// A policy of one ClusterRole `r` with `rules`, bound cluster-wide to SA a/agent.
    fn cluster_wide(rules: Value) -> Policy {
        Policy::new(
            &[] as &[Value],
            &[role("ClusterRole", "", "r", rules)],
            &[] as &[Value],
            &[binding(
                "ClusterRoleBinding",
                "",
                "b",
                ("ClusterRole", "r"),
                sa_subject("a", "agent"),
            )],
        )
    }

    fn allowed(policy: &Policy, user: &UserInfo, attrs: &Attributes) -> bool {
        authorize(policy, user, attrs).allowed
    }

    fn of(method: &str, uri: &str) -> Attributes {
        let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
        let query = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Attributes::of_request(method, path, &query)
    }

    #[test]
    fn requests_are_named_as_the_real_request_info_names_them() {
        assert_eq!(
            of("GET", "/api/v1/namespaces/a/pods"),
            res("list", "", "pods", "a", "")
        );
        assert_eq!(
            of("GET", "/api/v1/pods?watch=true"),
            res("watch", "", "pods", "", "")
        );
        assert_eq!(
            of("GET", "/api/v1/watch/namespaces/a/pods/p"),
            res("watch", "", "pods", "a", "p")
        );
        assert_eq!(
            of(
                "GET",
                "/api/v1/namespaces/a/configmaps?fieldSelector=metadata.name%3Dcfg"
                    .replace("%3D", "=")
                    .as_str()
            ),
            res("list", "", "configmaps", "a", "cfg")
        );
        assert_eq!(
            of(
                "GET",
                "/api/v1/namespaces/a/configmaps?watch=1&fieldSelector=metadata.name=cfg"
            ),
            res("watch", "", "configmaps", "a", "cfg")
        );
        // Under /watch/ the field selector names nothing, as on the real server.
        assert_eq!(
            of(
                "GET",
                "/api/v1/watch/namespaces/a/configmaps?fieldSelector=metadata.name=cfg"
            ),
            res("watch", "", "configmaps", "a", "")
        );
        assert_eq!(
            of("PUT", "/apis/ipledger.io/v1/ippools/p/status"),
            res("update", "ipledger.io", "ippools/status", "", "p")
        );
        assert_eq!(
            of("DELETE", "/apis/ipledger.io/v1/ippools"),
            res("deletecollection", "ipledger.io", "ippools", "", "")
        );
        assert_eq!(
            of("POST", "/api/v1/namespaces/a/serviceaccounts/sa/token"),
            res("create", "", "serviceaccounts/token", "a", "sa")
        );
        // A namespace is in itself.
        assert_eq!(
            of("GET", "/api/v1/namespaces/a"),
            res("get", "", "namespaces", "a", "a")
        );
        assert_eq!(
            of("PUT", "/api/v1/namespaces/a/status"),
            res("update", "", "namespaces/status", "a", "a")
        );
        assert_eq!(
            of("POST", "/api/v1/namespaces"),
            res("create", "", "namespaces", "", "")
        );
        for p in [
            "/api",
            "/api/v1",
            "/apis/apps",
            "/apis/apps/v1",
            "/openapi/v3",
            "/version",
        ] {
            assert_eq!(of("GET", p), path("get", p), "{p}");
        }
    }

    #[test]
    fn nothing_bound_denies_all_but_discovery_and_self_reviews() {
        let p = Policy::new(
            &[] as &[Value],
            &[] as &[Value],
            &[] as &[Value],
            &[] as &[Value],
        );
        let u = sa("a", "agent");
        assert!(!allowed(&p, &u, &res("list", "", "pods", "a", "")));
        assert!(!allowed(&p, &u, &path("get", "/metrics")));
        for p_ in [
            "/api",
            "/api/v1",
            "/apis/apps/v1",
            "/openapi/v3",
            "/version",
            "/healthz",
        ] {
            assert!(allowed(&p, &u, &path("get", p_)), "{p_}");
        }
        assert!(!allowed(&p, &u, &path("post", "/api")));
        let review = res(
            "create",
            "authorization.k8s.io",
            "selfsubjectaccessreviews",
            "",
            "",
        );
        let d = authorize(&p, &u, &review);
        assert_eq!(
            d.reason,
            "RBAC: allowed by ClusterRoleBinding \"system:basic-user\" of ClusterRole \"system:basic-user\" to Group \"system:authenticated\""
        );
        // The unauthenticated only see the public information.
        let anonymous = UserInfo::anonymous();
        assert!(allowed(&p, &anonymous, &path("get", "/version")));
        assert!(!allowed(&p, &anonymous, &path("get", "/api")));
        assert!(!allowed(&p, &anonymous, &review));
    }

    #[test]
    fn masters_are_allowed_everything() {
        let p = cluster_wide(json!([]));
        let admin = UserInfo::configured("admin");
        assert!(allowed(&p, &admin, &res("delete", "x.io", "ys", "", "y")));
        assert!(allowed(&p, &admin, &path("post", "/anything")));
    }

    #[test]
    fn a_cluster_role_binding_grants_everywhere_and_names_itself() {
        let p = cluster_wide(
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]),
        );
        let u = sa("a", "agent");
        let d = authorize(&p, &u, &res("list", "", "pods", "other", ""));
        assert_eq!(
            d,
            Decision {
                allowed: true,
                reason: "RBAC: allowed by ClusterRoleBinding \"b\" of ClusterRole \"r\" to ServiceAccount \"agent/a\"".into()
            }
        );
        assert!(allowed(&p, &u, &res("get", "", "pods", "", "")));
        assert!(!allowed(&p, &u, &res("watch", "", "pods", "a", "")));
        assert!(!allowed(&p, &u, &res("list", "apps", "pods", "a", "")));
        assert!(!allowed(
            &p,
            &sa("b", "agent"),
            &res("list", "", "pods", "a", "")
        ));
        assert!(!allowed(
            &p,
            &sa("a", "other"),
            &res("list", "", "pods", "a", "")
        ));
    }

    #[test]
    fn a_role_binding_grants_only_in_its_namespace() {
        let rules = json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["*"]}]);
        let p = Policy::new(
            &[role("Role", "a", "leases", rules.clone())],
            &[role("ClusterRole", "", "cr", rules)],
            &[
                binding(
                    "RoleBinding",
                    "a",
                    "rb",
                    ("Role", "leases"),
                    sa_subject("a", "agent"),
                ),
                binding(
                    "RoleBinding",
                    "b",
                    "rb",
                    ("ClusterRole", "cr"),
                    json!([{"kind": "ServiceAccount", "name": "agent", "namespace": "a"}]),
                ),
            ],
            &[] as &[Value],
        );
        let u = sa("a", "agent");
        let lease = |ns: &str| res("update", "coordination.k8s.io", "leases", ns, "l");
        assert_eq!(
            authorize(&p, &u, &lease("a")).reason,
            "RBAC: allowed by RoleBinding \"rb/a\" of Role \"leases\" to ServiceAccount \"agent/a\""
        );
        assert!(allowed(&p, &u, &lease("b")), "a ClusterRole bound in b");
        assert!(!allowed(&p, &u, &lease("c")));
        assert!(!allowed(&p, &u, &lease("")), "not at the cluster scope");
    }

    #[test]
    fn a_role_binding_subject_without_namespace_is_the_bindings_own() {
        let p = Policy::new(
            &[role(
                "Role",
                "a",
                "r",
                json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]),
            )],
            &[] as &[Value],
            &[binding(
                "RoleBinding",
                "a",
                "rb",
                ("Role", "r"),
                json!([{"kind": "ServiceAccount", "name": "agent"}]),
            )],
            &[] as &[Value],
        );
        let d = authorize(&p, &sa("a", "agent"), &res("get", "", "pods", "a", "p"));
        assert_eq!(
            d.reason,
            "RBAC: allowed by RoleBinding \"rb/a\" of Role \"r\" to ServiceAccount \"agent/a\""
        );
    }

    #[test]
    fn a_role_of_another_namespace_is_not_found() {
        let p = Policy::new(
            &[role(
                "Role",
                "b",
                "r",
                json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
            )],
            &[] as &[Value],
            &[binding(
                "RoleBinding",
                "a",
                "rb",
                ("Role", "r"),
                sa_subject("a", "agent"),
            )],
            &[] as &[Value],
        );
        let d = authorize(&p, &sa("a", "agent"), &res("get", "", "pods", "a", "p"));
        assert_eq!(
            d,
            Decision {
                allowed: false,
                reason: "RBAC: role.rbac.authorization.k8s.io \"r\" not found".into()
            }
        );
    }

    #[test]
    fn resource_names_limit_named_requests_only() {
        let p = cluster_wide(
            json!([{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cfg"], "verbs": ["*"]}]),
        );
        let u = sa("a", "agent");
        for verb in ["get", "update", "patch", "delete", "list", "watch"] {
            assert!(
                allowed(&p, &u, &res(verb, "", "configmaps", "a", "cfg")),
                "{verb}"
            );
            assert!(
                !allowed(&p, &u, &res(verb, "", "configmaps", "a", "other")),
                "{verb}"
            );
        }
        // A create and a deletecollection name no object.
        for verb in ["create", "deletecollection", "list"] {
            assert!(
                !allowed(&p, &u, &res(verb, "", "configmaps", "a", "")),
                "{verb}"
            );
        }
    }

    #[test]
    fn subresources_are_separate_and_match_star_slash() {
        let p = cluster_wide(json!([
            {"apiGroups": ["ipledger.io"], "resources": ["ippools/status"], "verbs": ["update"]},
            {"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["pods/*"], "verbs": ["get"]},
        ]));
        let u = sa("a", "agent");
        assert!(allowed(
            &p,
            &u,
            &res("update", "ipledger.io", "ippools/status", "", "p")
        ));
        assert!(!allowed(
            &p,
            &u,
            &res("update", "ipledger.io", "ippools", "", "p")
        ));
        assert!(allowed(
            &p,
            &u,
            &res("get", "apps", "deployments/scale", "a", "d")
        ));
        assert!(!allowed(
            &p,
            &u,
            &res("get", "apps", "deployments", "a", "d")
        ));
        // `pods/*` is no wildcard.
        assert!(!allowed(&p, &u, &res("get", "", "pods/status", "a", "p")));
        assert!(!allowed(&p, &u, &res("get", "", "pods", "a", "p")));
    }

    #[test]
    fn stars_match_every_verb_group_and_resource() {
        let p = cluster_wide(json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]));
        let u = sa("a", "agent");
        assert!(allowed(
            &p,
            &u,
            &res("deletecollection", "x.io", "ys", "", "")
        ));
        assert!(allowed(&p, &u, &res("update", "", "pods/status", "a", "p")));
        // Resource rules never allow a path.
        assert!(!allowed(&p, &u, &path("get", "/metrics")));
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_prefix() {
        let p =
            cluster_wide(json!([{"nonResourceURLs": ["/metrics", "/debug/*"], "verbs": ["get"]}]));
        let u = sa("a", "agent");
        assert!(allowed(&p, &u, &path("get", "/metrics")));
        assert!(allowed(&p, &u, &path("get", "/debug/pprof")));
        assert!(!allowed(&p, &u, &path("get", "/metrics/x")));
        assert!(!allowed(&p, &u, &path("post", "/metrics")));
    }

    #[test]
    fn groups_and_users_are_subjects() {
        let rules = json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]);
        let p = Policy::new(
            &[] as &[Value],
            &[role("ClusterRole", "", "r", rules)],
            &[] as &[Value],
            &[
                binding(
                    "ClusterRoleBinding",
                    "",
                    "g",
                    ("ClusterRole", "r"),
                    json!([{"kind": "Group", "name": "system:serviceaccounts:a"}]),
                ),
                binding(
                    "ClusterRoleBinding",
                    "",
                    "u",
                    ("ClusterRole", "r"),
                    json!([{"kind": "User", "name": "system:serviceaccount:b:x"}]),
                ),
            ],
        );
        let list = res("list", "", "pods", "z", "");
        assert!(allowed(&p, &sa("a", "anyone"), &list));
        assert!(allowed(&p, &sa("b", "x"), &list));
        assert!(!allowed(&p, &sa("b", "y"), &list));
    }

    #[test]
    fn a_missing_cluster_role_is_the_reason_of_a_denial() {
        let p = Policy::new(
            &[] as &[Value],
            &[] as &[Value],
            &[] as &[Value],
            &[binding(
                "ClusterRoleBinding",
                "",
                "b",
                ("ClusterRole", "gone"),
                sa_subject("a", "agent"),
            )],
        );
        let u = sa("a", "agent");
        let attrs = res("list", "", "pods", "a", "");
        let d = authorize(&p, &u, &attrs);
        assert_eq!(
            d.reason,
            "RBAC: clusterrole.rbac.authorization.k8s.io \"gone\" not found"
        );
        assert_eq!(
            forbidden(&u.username, &attrs, &d.reason).message,
            "pods is forbidden: User \"system:serviceaccount:a:agent\" cannot list resource \"pods\" in API group \"\" in the namespace \"a\": RBAC: clusterrole.rbac.authorization.k8s.io \"gone\" not found"
        );
    }

    #[test]
    fn forbidden_messages_are_the_real_servers() {
        let user = "system:serviceaccount:ipledger:agent";
        let e = forbidden(user, &res("list", "", "pods", "default", ""), "");
        assert_eq!(
            e.message,
            "pods is forbidden: User \"system:serviceaccount:ipledger:agent\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        assert_eq!(e.details, Some(json!({"kind": "pods"})));
        let e = forbidden(user, &res("delete", "ipledger.io", "ippools", "", "p"), "");
        assert_eq!(
            e.message,
            "ippools.ipledger.io \"p\" is forbidden: User \"system:serviceaccount:ipledger:agent\" cannot delete resource \"ippools\" in API group \"ipledger.io\" at the cluster scope"
        );
        assert_eq!(
            e.details,
            Some(json!({"kind": "ippools", "group": "ipledger.io", "name": "p"}))
        );
        let e = forbidden(
            user,
            &res("update", "ipledger.io", "ippools/status", "", "p"),
            "",
        );
        assert!(
            e.message
                .contains("cannot update resource \"ippools/status\"")
        );
        assert!(
            e.message
                .starts_with("ippools.ipledger.io \"p\" is forbidden")
        );
        let e = forbidden(user, &path("get", "/metrics"), "");
        assert_eq!(
            e.message,
            "forbidden: User \"system:serviceaccount:ipledger:agent\" cannot get path \"/metrics\""
        );
        assert_eq!(e.code, 403);
        assert_eq!(e.reason, "Forbidden");
    }
}
