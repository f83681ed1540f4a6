//! Authentication by ServiceAccount token and RBAC enforcement, through kube-rs and
//! kubectl. Each test makes its own namespace, ServiceAccount and (uniquely named)
//! cluster roles, asks the TokenRequest API for a token and acts with it.
//!
//! Runs against the emulator; set `IPLEDGER_TEST_KUBECONFIG` to run the same tests against
//! a real cluster. A real cluster's authorizer sees RBAC changes through its informers a
//! moment later, so a change's effect is awaited ([`test_support::wait_for`]) where the
//! emulator's is immediate. The audit and pod-bound-token tests need the emulator.

mod support;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use support::{Subnet, install_crds, subnet};
use test_support::kubectl::Kubectl;
use test_support::{
    Cluster, api_error, client_with_token, cluster, delete_namespace, fake_node, namespace,
    pod_bound_token, unique, wait_for,
};

/// A ServiceAccount with a token, and a client that sends it.
struct Account {
    name: String,
    namespace: String,
    user: String,
    client: Client,
}

fn object<T: DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

/// A token for `namespace/name` from the TokenRequest API.
async fn token(c: &Cluster, namespace: &str, name: &str) -> Result<String, kube::Error> {
    let accounts: Api<ServiceAccount> = Api::namespaced(c.client.clone(), namespace);
    let request: TokenRequest = object(json!({"spec": {"audiences": []}}));
    let answer = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await?;
    Ok(answer.status.unwrap().token)
}

/// A new ServiceAccount in `namespace`, with no permissions but the defaults.
async fn account(c: &Cluster, namespace: &str) -> Account {
    let name = unique("sa");
    let accounts: Api<ServiceAccount> = Api::namespaced(c.client.clone(), namespace);
    accounts
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": name}})),
        )
        .await
        .unwrap();
    let token = token(c, namespace, &name).await.unwrap();
    Account {
        user: format!("system:serviceaccount:{namespace}:{name}"),
        client: client_with_token(c, &token).await,
        name,
        namespace: namespace.to_string(),
    }
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn sa_subject(a: &Account) -> Value {
    json!({"kind": "ServiceAccount", "name": a.name, "namespace": a.namespace})
}

async fn role(c: &Cluster, namespace: &str, name: &str, rules: Value) {
    Api::<Role>::namespaced(c.client.clone(), namespace)
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": name}, "rules": rules})),
        )
        .await
        .unwrap();
}

async fn role_binding(
    c: &Cluster,
    namespace: &str,
    name: &str,
    role: (&str, &str),
    subject: Value,
) {
    Api::<RoleBinding>::namespaced(c.client.clone(), namespace)
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role.0, "name": role.1},
                "subjects": [subject]})),
        )
        .await
        .unwrap();
}

/// A uniquely named ClusterRole with `rules`, bound cluster-wide to `subject`; both are
/// deleted when the returned guard's `remove` runs.
async fn cluster_grant(c: &Cluster, rules: Value, subject: Value) -> ClusterGrant {
    let name = unique("rbac-test");
    Api::<ClusterRole>::all(c.client.clone())
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": name}, "rules": rules})),
        )
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(c.client.clone())
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                "subjects": [subject]})),
        )
        .await
        .unwrap();
    ClusterGrant {
        client: c.client.clone(),
        name,
    }
}

struct ClusterGrant {
    client: Client,
    name: String,
}

impl ClusterGrant {
    /// Deletes the binding and the role.
    async fn remove(self) {
        let dp = DeleteParams::default();
        let _ = Api::<ClusterRoleBinding>::all(self.client.clone())
            .delete(&self.name, &dp)
            .await;
        let _ = Api::<ClusterRole>::all(self.client)
            .delete(&self.name, &dp)
            .await;
    }
}

/// The 403 a request got, as (code, reason, message).
fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> (u16, String, String) {
    let e = api_error(result);
    (e.code, e.reason, e.message)
}

fn denial(message: String) -> (u16, String, String) {
    (403, "Forbidden".to_string(), message)
}

/// Waits until `request` succeeds (at once on the emulator, after the informers on a
/// real cluster); panics naming the last error otherwise.
macro_rules! eventually_ok {
    ($request:expr) => {{
        let got = wait_for(|| async { $request.await.ok() }).await;
        match got {
            Some(v) => v,
            None => panic!("never allowed: {:?}", $request.await),
        }
    }};
}

/// Waits until `request` fails with 403.
macro_rules! eventually_forbidden {
    ($request:expr) => {{
        wait_for(|| async {
            match $request.await {
                Err(kube::Error::Api(e)) if e.code == 403 => Some(e.message.clone()),
                _ => None,
            }
        })
        .await
        .expect("the permission is taken away")
    }};
}

/// `POST` a SelfSubjectAccessReview as `client`; returns its status.
async fn can_i(client: &Client, attributes: Value) -> Value {
    let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": attributes});
    let req = http::Request::post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&review).unwrap())
        .unwrap();
    let answer: Value = client.request(req).await.unwrap();
    answer["status"].clone()
}

#[tokio::test]
async fn a_token_for_a_missing_service_account_is_not_found() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let e = api_error(token(&c, &ns, "nobody").await);
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (404, "NotFound", "serviceaccounts \"nobody\" not found")
    );
    if let Some(emulator) = &c.emulator {
        let err = emulator.service_account_token(&ns, "nobody").unwrap_err();
        assert_eq!(
            err.to_string(),
            "404 NotFound: serviceaccounts \"nobody\" not found"
        );
        // The helper's token works like the API's.
        let helper = emulator.service_account_token(&ns, "default").unwrap();
        let client = client_with_token(&c, &helper).await;
        let e = api_error(
            Api::<ConfigMap>::namespaced(client, &ns)
                .list(&ListParams::default())
                .await,
        );
        assert!(
            e.message
                .contains(&format!("User \"system:serviceaccount:{ns}:default\"")),
            "{}",
            e.message
        );
    }
    delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn a_service_account_without_bindings_is_forbidden_with_the_real_messages() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let a = account(&c, &ns).await;
    let user = &a.user;
    let configmaps: Api<ConfigMap> = Api::namespaced(a.client.clone(), &ns);
    assert_eq!(
        forbidden(configmaps.list(&ListParams::default()).await),
        denial(format!(
            "configmaps is forbidden: User \"{user}\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"{ns}\""
        ))
    );
    assert_eq!(
        forbidden(configmaps.get("cfg").await),
        denial(format!(
            "configmaps \"cfg\" is forbidden: User \"{user}\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"{ns}\""
        ))
    );
    let cm: ConfigMap = object(json!({"metadata": {"name": "cfg"}}));
    assert_eq!(
        forbidden(configmaps.create(&PostParams::default(), &cm).await),
        denial(format!(
            "configmaps is forbidden: User \"{user}\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"{ns}\""
        ))
    );
    // A dry run is authorized as the write it would be.
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    assert_eq!(forbidden(configmaps.create(&dry, &cm).await).0, 403);
    // A non-core group is named with the resource.
    let leases: Api<Lease> = Api::namespaced(a.client.clone(), &ns);
    assert_eq!(
        forbidden(leases.delete("l", &DeleteParams::default()).await),
        denial(format!(
            "leases.coordination.k8s.io \"l\" is forbidden: User \"{user}\" cannot delete resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"{ns}\""
        ))
    );
    let all: Api<ConfigMap> = Api::all(a.client.clone());
    assert_eq!(
        forbidden(all.list(&ListParams::default()).await),
        denial(format!(
            "configmaps is forbidden: User \"{user}\" cannot list resource \"configmaps\" in API group \"\" at the cluster scope"
        ))
    );
    // Discovery and the version stay open to every authenticated user.
    a.client.apiserver_version().await.unwrap();
    a.client.list_api_groups().await.unwrap();
    a.client.list_core_api_resources("v1").await.unwrap();
    delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn a_cluster_role_binding_grants_in_every_namespace_until_it_is_deleted() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let a = account(&c, &ns).await;
    let grant = cluster_grant(
        &c,
        json!([rule(&[""], &["configmaps"], &["get", "list"])]),
        sa_subject(&a),
    )
    .await;
    let here: Api<ConfigMap> = Api::namespaced(a.client.clone(), &ns);
    let there: Api<ConfigMap> = Api::namespaced(a.client.clone(), "kube-public");
    eventually_ok!(here.list(&ListParams::default()));
    there.list(&ListParams::default()).await.unwrap();
    Api::<ConfigMap>::all(a.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    // Only the verbs granted: a watch is authorized when it starts.
    let watch = here.watch(&kube::api::WatchParams::default(), "0").await;
    assert_eq!(
        forbidden(watch.map(|_| ())),
        denial(format!(
            "configmaps is forbidden: User \"{}\" cannot watch resource \"configmaps\" in API group \"\" in the namespace \"{ns}\"",
            a.user
        ))
    );
    let cm: ConfigMap = object(json!({"metadata": {"name": "cfg"}}));
    assert_eq!(
        forbidden(here.create(&PostParams::default(), &cm).await).0,
        403
    );
    let name = grant.name.clone();
    Api::<ClusterRoleBinding>::all(c.client.clone())
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let message = eventually_forbidden!(here.list(&ListParams::default()));
    assert!(message.starts_with("configmaps is forbidden"), "{message}");
    grant.remove().await;
    delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn a_cluster_role_binding_must_name_its_service_accounts_namespace() {
    let c = cluster().await;
    let name = unique("rbac-test");
    let binding: ClusterRoleBinding = object(json!({"metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "agent"}]}));
    let e = api_error(
        Api::<ClusterRoleBinding>::all(c.client.clone())
            .create(&PostParams::default(), &binding)
            .await,
    );
    assert_eq!(
        (e.code, e.message),
        (
            422,
            format!(
                "ClusterRoleBinding.rbac.authorization.k8s.io \"{name}\" is invalid: subjects[0].namespace: Required value"
            )
        )
    );
}

#[tokio::test]
async fn a_role_binding_grants_only_in_its_namespace() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let other = namespace(&c.client).await;
    let a = account(&c, &ns).await;
    role(
        &c,
        &ns,
        "leases",
        json!([rule(&["coordination.k8s.io"], &["leases"], &["*"])]),
    )
    .await;
    role_binding(&c, &ns, "leases", ("Role", "leases"), sa_subject(&a)).await;
    let lease: Lease = object(json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "me"}}));
    let here: Api<Lease> = Api::namespaced(a.client.clone(), &ns);
    eventually_ok!(here.list(&ListParams::default()));
    here.create(&PostParams::default(), &lease).await.unwrap();
    here.delete("l", &DeleteParams::default()).await.unwrap();
    let there: Api<Lease> = Api::namespaced(a.client.clone(), &other);
    assert_eq!(
        forbidden(there.create(&PostParams::default(), &lease).await),
        denial(format!(
            "leases.coordination.k8s.io is forbidden: User \"{}\" cannot create resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"{other}\"",
            a.user
        ))
    );
    let everywhere: Api<Lease> = Api::all(a.client.clone());
    assert_eq!(
        forbidden(everywhere.list(&ListParams::default()).await).0,
        403
    );
    delete_namespace(&c.client, &ns).await;
    delete_namespace(&c.client, &other).await;
}

#[tokio::test]
async fn resource_names_restrict_named_requests() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let a = account(&c, &ns).await;
    let admin: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    for name in ["cfg", "other"] {
        admin
            .create(
                &PostParams::default(),
                &object(json!({"metadata": {"name": name}})),
            )
            .await
            .unwrap();
    }
    role(
        &c,
        &ns,
        "one",
        json!([{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cfg"], "verbs": ["get", "list", "watch", "patch", "create", "delete"]}]),
    )
    .await;
    role_binding(&c, &ns, "one", ("Role", "one"), sa_subject(&a)).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(a.client.clone(), &ns);
    eventually_ok!(configmaps.get("cfg"));
    let patch = Patch::Merge(json!({"data": {"k": "v"}}));
    configmaps
        .patch("cfg", &PatchParams::default(), &patch)
        .await
        .unwrap();
    assert_eq!(
        forbidden(configmaps.get("other").await),
        denial(format!(
            "configmaps \"other\" is forbidden: User \"{}\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"{ns}\"",
            a.user
        ))
    );
    // A list is allowed only when its field selector names the object.
    assert_eq!(
        forbidden(configmaps.list(&ListParams::default()).await).0,
        403
    );
    let by_name = configmaps
        .list(&ListParams::default().fields("metadata.name=cfg"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let e = api_error(
        configmaps
            .list(&ListParams::default().fields("metadata.name=other"))
            .await,
    );
    assert_eq!(e.code, 403);
    // A create names no object, whatever its body says.
    let again: ConfigMap = object(json!({"metadata": {"name": "cfg"}}));
    assert_eq!(
        forbidden(configmaps.create(&PostParams::default(), &again).await),
        denial(format!(
            "configmaps is forbidden: User \"{}\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"{ns}\"",
            a.user
        ))
    );
    configmaps
        .delete("cfg", &DeleteParams::default())
        .await
        .unwrap();
    delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn the_status_subresource_is_granted_apart_from_its_resource() {
    let c = cluster().await;
    install_crds(&c.client).await;
    let ns = namespace(&c.client).await;
    let a = account(&c, &ns).await;
    let name = unique("subnet");
    Api::<Subnet>::all(c.client.clone())
        .create(&PostParams::default(), &subnet(&name, "10.77.0.0/16"))
        .await
        .unwrap();
    let grant = cluster_grant(
        &c,
        json!([
            rule(&[support::GROUP], &["subnets/status"], &["patch"]),
            rule(&[support::GROUP], &["subnets"], &["get"])
        ]),
        sa_subject(&a),
    )
    .await;
    let subnets: Api<Subnet> = Api::all(a.client.clone());
    eventually_ok!(subnets.get(&name));
    let status = Patch::Merge(json!({"status": {"allocated": "1"}}));
    subnets
        .patch_status(&name, &PatchParams::default(), &status)
        .await
        .unwrap();
    let main = Patch::Merge(json!({"spec": {"disabled": true}}));
    assert_eq!(
        forbidden(subnets.patch(&name, &PatchParams::default(), &main).await),
        denial(format!(
            "subnets.emulator.example.com \"{name}\" is forbidden: User \"{}\" cannot patch resource \"subnets\" in API group \"emulator.example.com\" at the cluster scope",
            a.user
        ))
    );
    assert_eq!(
        forbidden(subnets.delete(&name, &DeleteParams::default()).await),
        denial(format!(
            "subnets.emulator.example.com \"{name}\" is forbidden: User \"{}\" cannot delete resource \"subnets\" in API group \"emulator.example.com\" at the cluster scope",
            a.user
        ))
    );
    grant.remove().await;
    let _ = Api::<Subnet>::all(c.client.clone())
        .delete(&name, &DeleteParams::default())
        .await;
    delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn wildcards_grant_every_group_resource_and_verb() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let a = account(&c, &ns).await;
    // A ClusterRole bound in one namespace grants there only.
    let role_name = unique("rbac-test");
    Api::<ClusterRole>::all(c.client.clone())
        .create(
            &PostParams::default(),
            &object(
                json!({"metadata": {"name": role_name}, "rules": [rule(&["*"], &["*"], &["*"])]}),
            ),
        )
        .await
        .unwrap();
    role_binding(&c, &ns, "all", ("ClusterRole", &role_name), sa_subject(&a)).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(a.client.clone(), &ns);
    let cm: ConfigMap = object(json!({"metadata": {"name": "cfg"}}));
    eventually_ok!(configmaps.list(&ListParams::default()));
    configmaps
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    configmaps
        .delete("cfg", &DeleteParams::default())
        .await
        .unwrap();
    let lease: Lease = object(json!({"metadata": {"name": "l"}, "spec": {}}));
    Api::<Lease>::namespaced(a.client.clone(), &ns)
        .create(&PostParams::default(), &lease)
        .await
        .unwrap();
    let elsewhere: Api<ConfigMap> = Api::namespaced(a.client.clone(), "default");
    assert_eq!(
        forbidden(elsewhere.list(&ListParams::default()).await).0,
        403
    );
    let _ = Api::<ClusterRole>::all(c.client.clone())
        .delete(&role_name, &DeleteParams::default())
        .await;
    delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn group_subjects_grant_to_their_members() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let a = account(&c, &ns).await;
    let b = account(&c, &ns).await;
    role(
        &c,
        &ns,
        "read",
        json!([rule(&[""], &["configmaps"], &["list"])]),
    )
    .await;
    let group = format!("system:serviceaccounts:{ns}");
    role_binding(
        &c,
        &ns,
        "read",
        ("Role", "read"),
        json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": group}),
    )
    .await;
    for account in [&a, &b] {
        let configmaps: Api<ConfigMap> = Api::namespaced(account.client.clone(), &ns);
        eventually_ok!(configmaps.list(&ListParams::default()));
    }
    // An account of another namespace is no member.
    let other_ns = namespace(&c.client).await;
    let stranger = account(&c, &other_ns).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(stranger.client.clone(), &ns);
    assert_eq!(
        forbidden(configmaps.list(&ListParams::default()).await).0,
        403
    );
    delete_namespace(&c.client, &ns).await;
    delete_namespace(&c.client, &other_ns).await;
}

#[tokio::test]
async fn self_subject_access_reviews_agree_with_enforcement() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let a = account(&c, &ns).await;
    role(
        &c,
        &ns,
        "read",
        json!([rule(&[""], &["configmaps"], &["list"])]),
    )
    .await;
    role_binding(&c, &ns, "read", ("Role", "read"), sa_subject(&a)).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(a.client.clone(), &ns);
    eventually_ok!(configmaps.list(&ListParams::default()));
    let allowed = can_i(
        &a.client,
        json!({"resourceAttributes": {"namespace": ns, "verb": "list", "resource": "configmaps"}}),
    )
    .await;
    assert_eq!(allowed["allowed"], true);
    assert_eq!(
        allowed["reason"],
        format!(
            "RBAC: allowed by RoleBinding \"read/{ns}\" of Role \"read\" to ServiceAccount \"{}/{ns}\"",
            a.name
        )
    );
    let denied = can_i(
        &a.client,
        json!({"resourceAttributes": {"namespace": ns, "verb": "delete", "resource": "configmaps", "name": "x"}}),
    )
    .await;
    assert_eq!(denied["allowed"], false);
    assert_eq!(
        forbidden(configmaps.delete("x", &DeleteParams::default()).await).0,
        403
    );
    let discovery = can_i(
        &a.client,
        json!({"nonResourceAttributes": {"verb": "get", "path": "/apis"}}),
    )
    .await;
    assert_eq!(discovery["allowed"], true);
    // SelfSubjectReview names the account.
    let req = http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
        .header("content-type", "application/json")
        .body(
            serde_json::to_vec(
                &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
            )
            .unwrap(),
        )
        .unwrap();
    let review: Value = a.client.request(req).await.unwrap();
    let info = &review["status"]["userInfo"];
    assert_eq!(info["username"], a.user);
    let groups: Vec<&str> = info["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for g in [
        "system:serviceaccounts",
        &format!("system:serviceaccounts:{ns}"),
        "system:authenticated",
    ] {
        assert!(groups.contains(&g), "{groups:?} lacks {g}");
    }
    delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn a_pod_bound_token_names_its_pod_and_node() {
    let c = cluster().await;
    let Some(node) = fake_node(&c).await else {
        return;
    };
    let ns = namespace(&c.client).await;
    let a = account(&c, &ns).await;
    let (token, pod) = pod_bound_token(&c.client, &ns, &a.name, "p", &node).await;
    let client = client_with_token(&c, &token).await;
    let req = http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
        .header("content-type", "application/json")
        .body(br#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#.to_vec())
        .unwrap();
    let review: Value = client.request(req).await.unwrap();
    let extra = &review["status"]["userInfo"]["extra"];
    assert_eq!(extra["authentication.kubernetes.io/pod-name"], json!(["p"]));
    assert_eq!(
        extra["authentication.kubernetes.io/pod-uid"],
        json!([pod.metadata.uid.unwrap()])
    );
    assert_eq!(
        extra["authentication.kubernetes.io/node-name"],
        json!([node])
    );
    // The token ends with its pod.
    Api::<Pod>::namespaced(c.client.clone(), &ns)
        .delete("p", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let gone = wait_for(|| async {
        match client.apiserver_version().await {
            Err(kube::Error::Api(e)) if e.code == 401 => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(gone.is_some(), "a token of a deleted pod is refused");
    let _ = Api::<Node>::all(c.client.clone())
        .delete(&node, &DeleteParams::default())
        .await;
    delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn the_audit_log_names_the_service_account() {
    let c = cluster().await;
    let Some(emulator) = &c.emulator else {
        test_support::skip(
            "the audit log is the emulator's (IPLEDGER_TEST_KUBECONFIG names a real cluster)",
        );
        return;
    };
    let ns = namespace(&c.client).await;
    let a = account(&c, &ns).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(a.client.clone(), &ns);
    let _ = configmaps.get("cfg").await;
    let events = emulator.audit();
    let last = events
        .iter()
        .rev()
        .find(|e| e.resource == "configmaps")
        .unwrap();
    assert_eq!(
        (
            last.user.as_str(),
            last.verb,
            last.name.as_deref(),
            last.code
        ),
        (a.user.as_str(), "get", Some("cfg"), 403)
    );
    // The token request itself is a resource request of the admin.
    assert!(
        events.iter().any(|e| e.user == "admin"
            && e.verb == "create"
            && e.subresource.as_deref() == Some("token")
            && e.name.as_deref() == Some(a.name.as_str())),
        "{events:?}"
    );
    delete_namespace(&c.client, &ns).await;
}

/// kubectl makes the account, its role and binding and its token (all sent as protobuf);
/// the token then acts through kube-rs, and SelfSubjectAccessReviews and the requests
/// themselves agree. kubectl sends no credentials to a plain-HTTP server (client-go only
/// adds them for https), so `kubectl auth can-i --token` and a forbidden `kubectl get`
/// run only against a TLS cluster (`IPLEDGER_TEST_KUBECONFIG`).
#[tokio::test]
async fn kubectl_made_accounts_and_can_i_agree_with_enforcement() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    let ns = unique("t");
    k.ok(&["create", "namespace", &ns]).await;
    k.ok(&["create", "serviceaccount", "agent", "-n", &ns])
        .await;
    let token = k.ok(&["create", "token", "agent", "-n", &ns]).await;
    let token = token.trim().to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    k.ok(&[
        "create",
        "role",
        "reader",
        "-n",
        &ns,
        "--verb=get,list",
        "--resource=configmaps",
    ])
    .await;
    k.ok(&[
        "create",
        "rolebinding",
        "reader",
        "-n",
        &ns,
        "--role=reader",
        &format!("--serviceaccount={ns}:agent"),
    ])
    .await;
    let kubeconfig = kube::config::Kubeconfig::read_from(k.kubeconfig()).unwrap();
    let https = kubeconfig.clusters[0]
        .cluster
        .as_ref()
        .and_then(|c| c.server.as_deref())
        .is_some_and(|s| s.starts_with("https://"));
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.clone().into()),
        ..Default::default()
    };
    let client = Client::try_from(config).unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    eventually_ok!(configmaps.list(&ListParams::default()));
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    let user = format!("system:serviceaccount:{ns}:agent");
    assert_eq!(
        forbidden(secrets.list(&ListParams::default()).await),
        denial(format!(
            "secrets is forbidden: User \"{user}\" cannot list resource \"secrets\" in API group \"\" in the namespace \"{ns}\""
        ))
    );
    for (verb, resource, expected) in [
        ("list", "configmaps", true),
        ("get", "configmaps", true),
        ("delete", "configmaps", false),
        ("list", "secrets", false),
    ] {
        let status = can_i(
            &client,
            json!({"resourceAttributes": {"namespace": ns, "verb": verb, "resource": resource}}),
        )
        .await;
        assert_eq!(status["allowed"], expected, "{verb} {resource}: {status}");
        if https {
            let out = k
                .run(&[
                    "auth", "can-i", verb, resource, "-n", &ns, "--token", &token,
                ])
                .await;
            let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert_eq!(
                answer,
                if expected { "yes" } else { "no" },
                "{verb} {resource}"
            );
        }
    }
    if https {
        let out = k
            .run(&["get", "secrets", "-n", &ns, "--token", &token])
            .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "Error from server (Forbidden): secrets is forbidden: User \"{user}\""
            )),
            "{stderr}"
        );
    } else {
        eprintln!(
            "note: kubectl sends no token over plain HTTP; `kubectl auth can-i --token` is checked against TLS clusters only"
        );
    }
    let _ = k.run(&["delete", "namespace", &ns, "--wait=false"]).await;
}
