//! Validating admission policies, through kube-rs and kubectl: each test binds a uniquely
//! named policy to its own namespace (the binding's namespaceSelector) and writes
//! ConfigMaps there.
//!
//! Runs against the emulator; set `IPLEDGER_TEST_KUBECONFIG` to run the same tests against
//! a real cluster. A real server sees a new or deleted policy through its informers a
//! moment later, so a policy's effect is awaited ([`test_support::wait_for`]) where the
//! emulator's is immediate. The pod-bound-token test needs the emulator (a fake Node).

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::{ConfigMap, Node, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use test_support::kubectl::Kubectl;
use test_support::{
    Cluster, api_error, client_with_token, cluster, delete_namespace, fake_node, namespace,
    pod_bound_token, unique, wait_for,
};

fn object<T: DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn configmap(name: &str, labels: Value, data: Value) -> ConfigMap {
    object(json!({"metadata": {"name": name, "labels": labels}, "data": data}))
}

/// A policy on ConfigMaps (all operations) and its binding to namespace `ns`, both named
/// uniquely; removed by [`Enforced::remove`].
struct Enforced {
    client: Client,
    policy: String,
    binding: String,
}

impl Enforced {
    /// `prefix` of a denial's message: `configmaps "name" is forbidden: ...`.
    fn denied(&self, name: &str, message: &str) -> String {
        format!(
            "configmaps \"{name}\" is forbidden: ValidatingAdmissionPolicy '{}' with binding '{}' denied request: {message}",
            self.policy, self.binding
        )
    }

    async fn remove(self) {
        let dp = DeleteParams::default();
        let _ = Api::<ValidatingAdmissionPolicyBinding>::all(self.client.clone())
            .delete(&self.binding, &dp)
            .await;
        let _ = Api::<ValidatingAdmissionPolicy>::all(self.client)
            .delete(&self.policy, &dp)
            .await;
    }
}

/// Creates a policy with `spec` (its matchConstraints set to ConfigMaps) bound with
/// `actions` to namespace `ns`.
async fn enforce(c: &Cluster, ns: &str, mut spec: Value, actions: &[&str]) -> Enforced {
    spec["matchConstraints"] = json!({"resourceRules": [{
        "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"],
        "operations": ["CREATE", "UPDATE", "DELETE"]}]});
    let policy = unique("vap");
    let binding = unique("vapb");
    Api::<ValidatingAdmissionPolicy>::all(c.client.clone())
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": policy}, "spec": spec})),
        )
        .await
        .unwrap();
    Api::<ValidatingAdmissionPolicyBinding>::all(c.client.clone())
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": binding}, "spec": {
                "policyName": policy, "validationActions": actions,
                "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}}})),
        )
        .await
        .unwrap();
    Enforced {
        client: c.client.clone(),
        policy,
        binding,
    }
}

/// Waits until creating `cm` in `api` is refused by `p` (the policy is active: at once on
/// the emulator), and returns the refusal.
async fn refused(api: &Api<ConfigMap>, cm: &ConfigMap, p: &Enforced) -> kube::core::Status {
    let got = wait_for(|| async {
        match api.create(&PostParams::default(), cm).await {
            Err(kube::Error::Api(s)) if s.message.contains(&p.policy) => Some(*s),
            Ok(_) => {
                let name = cm.metadata.name.as_deref().unwrap();
                let _ = api.delete(name, &DeleteParams::default()).await;
                None
            }
            Err(_) => None,
        }
    })
    .await;
    got.expect("the policy takes effect")
}

/// The user the test's client acts as.
async fn whoami(client: &Client) -> String {
    let req = http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
        .header("content-type", "application/json")
        .body(br#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#.to_vec())
        .unwrap();
    let review: Value = client.request(req).await.unwrap();
    review["status"]["userInfo"]["username"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A ServiceAccount allowed to write ConfigMaps in `ns`; its name.
async fn configmap_writer(c: &Cluster, ns: &str) -> String {
    let name = unique("sa");
    Api::<ServiceAccount>::namespaced(c.client.clone(), ns)
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": name}})),
        )
        .await
        .unwrap();
    Api::<Role>::namespaced(c.client.clone(), ns)
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": name}, "rules": [
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "update", "patch", "delete"]}]})),
        )
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(c.client.clone(), ns)
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]})),
        )
        .await
        .unwrap();
    name
}

#[tokio::test]
async fn a_create_without_the_label_is_refused_with_the_real_status_dry_run_too() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let p = enforce(
        &c,
        &ns,
        json!({"validations": [{"expression": "has(object.metadata.labels) && 'team' in object.metadata.labels"}]}),
        &["Deny"],
    )
    .await;
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    let e = refused(&api, &configmap("bare", json!({}), json!({})), &p).await;
    let message = p.denied(
        "bare",
        "failed expression: has(object.metadata.labels) && 'team' in object.metadata.labels",
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(e.message, message);
    let details = e.details.unwrap();
    assert_eq!(
        (details.name.as_str(), details.kind.as_str()),
        ("bare", "configmaps")
    );
    let causes: Vec<_> = details.causes.iter().map(|c| c.message.as_str()).collect();
    assert!(
        causes.contains(&message.split_once("is forbidden: ").unwrap().1),
        "{causes:?}"
    );

    let dry = api_error(
        api.create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &configmap("bare", json!({}), json!({})),
        )
        .await,
    );
    assert_eq!((dry.code, dry.message), (422, message));
    api.create(
        &PostParams::default(),
        &configmap("labelled", json!({"team": "a"}), json!({})),
    )
    .await
    .unwrap();
    p.remove().await;
    delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn message_expression_reason_and_variables_shape_the_refusal() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let p = enforce(
        &c,
        &ns,
        json!({
            "variables": [{"name": "team", "expression": "object.data.team"},
                          {"name": "allowed", "expression": "variables.team in ['a', 'b']"}],
            "validations": [{"expression": "variables.allowed", "reason": "Forbidden",
                             "message": "unused when messageExpression works",
                             "messageExpression": "'team ' + variables.team + ' may not write ' + object.metadata.name"}]}),
        &["Deny"],
    )
    .await;
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    let e = refused(&api, &configmap("c", json!({}), json!({"team": "z"})), &p).await;
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert_eq!(e.message, p.denied("c", "team z may not write c"));
    api.create(
        &PostParams::default(),
        &configmap("c", json!({}), json!({"team": "b"})),
    )
    .await
    .unwrap();
    p.remove().await;
    delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn match_conditions_exempt_the_admin_and_catch_a_service_account() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let admin = whoami(&c.client).await;
    let p = enforce(
        &c,
        &ns,
        json!({
            "matchConditions": [{"name": "not-admin", "expression": format!("request.userInfo.username != '{admin}'")}],
            "validations": [{"expression": "false", "message": "only the admin writes here"}]}),
        &["Deny"],
    )
    .await;
    let sa = configmap_writer(&c, &ns).await;
    let accounts: Api<ServiceAccount> = Api::namespaced(c.client.clone(), &ns);
    let answer = accounts
        .create_token_request(
            &sa,
            &PostParams::default(),
            &object(json!({"spec": {"audiences": []}})),
        )
        .await
        .unwrap();
    let agent = client_with_token(&c, &answer.status.unwrap().token).await;
    let as_agent: Api<ConfigMap> = Api::namespaced(agent, &ns);
    let e = refused(&as_agent, &configmap("by-sa", json!({}), json!({})), &p).await;
    assert_eq!(
        (e.code, e.message),
        (422, p.denied("by-sa", "only the admin writes here"))
    );
    Api::<ConfigMap>::namespaced(c.client.clone(), &ns)
        .create(
            &PostParams::default(),
            &configmap("by-admin", json!({}), json!({})),
        )
        .await
        .unwrap();
    p.remove().await;
    delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn a_pod_bound_token_writes_only_its_own_nodes_records() {
    let c = cluster().await;
    let Some(node) = fake_node(&c).await else {
        return;
    };
    let ns = namespace(&c.client).await;
    let sa = configmap_writer(&c, &ns).await;
    let (token, _) = pod_bound_token(&c.client, &ns, &sa, "agent", &node).await;
    let agent = client_with_token(&c, &token).await;
    // The chart's policy, on ConfigMaps: a node agent writes only its node's records,
    // and cannot move one to another node.
    let key = "authentication.kubernetes.io/node-name";
    let p = enforce(
        &c,
        &ns,
        json!({
            "matchConditions": [{"name": "node-agent", "expression": format!("has(request.userInfo.extra) && '{key}' in request.userInfo.extra")}],
            "variables": [{"name": "node", "expression": format!("request.userInfo.extra['{key}'][0]")}],
            "validations": [
                {"expression": "request.operation == 'DELETE' || object.data.node == variables.node",
                 "messageExpression": "'node ' + variables.node + ' may not write records of node ' + object.data.node", "reason": "Forbidden"},
                {"expression": "request.operation == 'CREATE' || oldObject.data.node == variables.node",
                 "messageExpression": "'node ' + variables.node + ' may not touch records of node ' + oldObject.data.node", "reason": "Forbidden"}]}),
        &["Deny"],
    )
    .await;
    let as_agent: Api<ConfigMap> = Api::namespaced(agent, &ns);
    let admin: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    let mine = configmap("mine", json!({}), json!({"node": node}));
    as_agent
        .create(&PostParams::default(), &mine)
        .await
        .unwrap();
    let e = api_error(
        as_agent
            .create(
                &PostParams::default(),
                &configmap("theirs", json!({}), json!({"node": "other"})),
            )
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        e.message,
        p.denied(
            "theirs",
            &format!("node {node} may not write records of node other")
        )
    );
    // The admin is no node agent: the policy does not apply to it.
    admin
        .create(
            &PostParams::default(),
            &configmap("theirs", json!({}), json!({"node": "other"})),
        )
        .await
        .unwrap();
    let patch = Patch::Merge(json!({"data": {"extra": "x"}}));
    let e = api_error(
        as_agent
            .patch("theirs", &PatchParams::default(), &patch)
            .await,
    );
    assert_eq!(
        e.message,
        p.denied(
            "theirs",
            &format!("node {node} may not write records of node other")
        )
    );
    let e = api_error(as_agent.delete("theirs", &DeleteParams::default()).await);
    assert_eq!(
        e.message,
        p.denied(
            "theirs",
            &format!("node {node} may not touch records of node other")
        )
    );
    as_agent
        .patch("mine", &PatchParams::default(), &patch)
        .await
        .unwrap();
    as_agent
        .delete("mine", &DeleteParams::default())
        .await
        .unwrap();
    p.remove().await;
    let _ = Api::<Node>::all(c.client.clone())
        .delete(&node, &DeleteParams::default())
        .await;
    delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn updates_compare_object_with_old_object_on_every_write_path() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let p = enforce(
        &c,
        &ns,
        json!({"validations": [{"expression": "request.operation != 'UPDATE' || object.data.owner == oldObject.data.owner",
                                "message": "owner is immutable"}]}),
        &["Deny"],
    )
    .await;
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    // Until the policy is active, a probe of it: an update of the owner.
    let probe = configmap("probe", json!({}), json!({"owner": "a"}));
    api.create(&PostParams::default(), &probe).await.unwrap();
    let moved = Patch::Merge(json!({"data": {"owner": "b"}}));
    let e = wait_for(|| async {
        match api.patch("probe", &PatchParams::default(), &moved).await {
            Err(kube::Error::Api(s)) => Some(*s),
            Ok(_) => {
                let back = Patch::Merge(json!({"data": {"owner": "a"}}));
                let _ = api.patch("probe", &PatchParams::default(), &back).await;
                None
            }
            Err(_) => None,
        }
    })
    .await
    .expect("the policy takes effect");
    let message = p.denied("probe", "owner is immutable");
    assert_eq!((e.code, e.message.as_str()), (422, message.as_str()));

    let mut current = api.get("probe").await.unwrap();
    current
        .data
        .as_mut()
        .unwrap()
        .insert("owner".into(), "c".into());
    let e = api_error(api.replace("probe", &PostParams::default(), &current).await);
    assert_eq!(e.message, message);
    let json_patch = Patch::<()>::Json(
        serde_json::from_value(json!([{"op": "replace", "path": "/data/owner", "value": "d"}]))
            .unwrap(),
    );
    let e = api_error(
        api.patch("probe", &PatchParams::default(), &json_patch)
            .await,
    );
    assert_eq!(e.message, message);
    let applied = Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "probe"}, "data": {"owner": "e"}}));
    let e = api_error(
        api.patch("probe", &PatchParams::apply("vap-test").force(), &applied)
            .await,
    );
    assert_eq!(e.message, message);
    let dry = api_error(
        api.patch("probe", &PatchParams::default().dry_run(), &moved)
            .await,
    );
    assert_eq!(dry.message, message);
    // Other changes pass.
    let other = Patch::Merge(json!({"data": {"note": "fine"}}));
    api.patch("probe", &PatchParams::default(), &other)
        .await
        .unwrap();
    assert_eq!(api.get("probe").await.unwrap().data.unwrap()["owner"], "a");
    p.remove().await;
    delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn a_delete_sees_the_stored_object_as_old_object() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &configmap("keep", json!({"protected": "true"}), json!({})),
    )
    .await
    .unwrap();
    api.create(
        &PostParams::default(),
        &configmap("drop", json!({"protected": "false"}), json!({})),
    )
    .await
    .unwrap();
    let p = enforce(
        &c,
        &ns,
        json!({"validations": [{"expression": "request.operation != 'DELETE' || (object == null && oldObject.metadata.labels.protected != 'true')",
                                "messageExpression": "oldObject.metadata.name + ' is protected'"}]}),
        &["Deny"],
    )
    .await;
    let e = wait_for(|| async {
        match api.delete("keep", &DeleteParams::default().dry_run()).await {
            Err(kube::Error::Api(s)) => Some(*s),
            _ => None,
        }
    })
    .await
    .expect("the policy takes effect");
    let message = p.denied("keep", "keep is protected");
    assert_eq!((e.code, e.message.as_str()), (422, message.as_str()));
    let e = api_error(api.delete("keep", &DeleteParams::default()).await);
    assert_eq!(e.message, message);
    api.get("keep").await.unwrap();
    api.delete("drop", &DeleteParams::default()).await.unwrap();
    p.remove().await;
    delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn warn_answers_a_warning_header_and_the_write_lands() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let p = enforce(
        &c,
        &ns,
        json!({"validations": [{"expression": "'team' in object.data", "message": "a team is advised"}]}),
        &["Warn"],
    )
    .await;
    let expected = format!(
        "299 - \"Validation failed for ValidatingAdmissionPolicy '{}' with binding '{}': a team is advised\"",
        p.policy, p.binding
    );
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    let warned = wait_for(|| async {
        let name = unique("w");
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}});
        let req = http::Request::post(format!("/api/v1/namespaces/{ns}/configmaps"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .unwrap();
        let resp = c.client.send(req.map(kube::client::Body::from)).await.unwrap();
        assert_eq!(resp.status(), 201);
        let warnings: Vec<String> = resp
            .headers()
            .get_all("warning")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        (!warnings.is_empty()).then_some((name, warnings))
    })
    .await;
    let (name, warnings) = warned.expect("the policy takes effect");
    assert_eq!(warnings, [expected]);
    api.get(&name).await.unwrap();
    p.remove().await;
    delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn failure_policy_decides_what_an_erroring_expression_does() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let failing = json!({"failurePolicy": "Fail",
        "validations": [{"expression": "object.data.missing == 'x'", "reason": "Forbidden"}]});
    let p = enforce(&c, &ns, failing, &["Deny"]).await;
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    let e = refused(&api, &configmap("f", json!({}), json!({"k": "v"})), &p).await;
    // An error has no reason of its own: Invalid, whatever the validation says.
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        e.message,
        p.denied(
            "f",
            "expression 'object.data.missing == 'x'' resulted in error: no such key: missing"
        )
    );
    p.remove().await;

    let ignoring = json!({"failurePolicy": "Ignore",
        "validations": [{"expression": "object.data.missing == 'x'"}, {"expression": "object.data.k == 'v'", "message": "k must be v"}]});
    let p = enforce(&c, &ns, ignoring, &["Deny"]).await;
    // The second validation shows the policy is active; the first's error is ignored.
    let e = refused(&api, &configmap("g", json!({}), json!({"k": "w"})), &p).await;
    assert_eq!(e.message, p.denied("g", "k must be v"));
    api.create(
        &PostParams::default(),
        &configmap("g", json!({}), json!({"k": "v"})),
    )
    .await
    .unwrap();
    p.remove().await;
    delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn deleting_the_binding_lifts_the_policy() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let p = enforce(
        &c,
        &ns,
        json!({"validations": [{"expression": "false"}]}),
        &["Deny"],
    )
    .await;
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    refused(&api, &configmap("x", json!({}), json!({})), &p).await;
    Api::<ValidatingAdmissionPolicyBinding>::all(c.client.clone())
        .delete(&p.binding, &DeleteParams::default())
        .await
        .unwrap();
    let landed = wait_for(|| async {
        api.create(
            &PostParams::default(),
            &configmap("x", json!({}), json!({})),
        )
        .await
        .ok()
    })
    .await;
    assert!(landed.is_some(), "the write lands once the binding is gone");
    p.remove().await;
    delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn a_policy_reports_the_generation_it_has_seen() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let p = enforce(
        &c,
        &ns,
        json!({"validations": [{"expression": "true"}]}),
        &["Deny"],
    )
    .await;
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(c.client.clone());
    let seen = wait_for(|| async {
        let got = policies.get(&p.policy).await.ok()?;
        let observed = got.status?.observed_generation?;
        (Some(observed) == got.metadata.generation).then_some(observed)
    })
    .await;
    assert_eq!(seen, Some(1));
    p.remove().await;
    delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn kubectl_applies_a_policy_and_reports_its_denial() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    let ns = unique("t");
    k.ok(&["create", "namespace", &ns]).await;
    let policy = unique("vap");
    let manifest = format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: {policy}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE", "UPDATE"]
      resources: ["configmaps"]
  validations:
  - expression: "object.data.size() <= 1"
    message: "one key at most"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: {policy}
spec:
  policyName: {policy}
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels:
        kubernetes.io/metadata.name: {ns}
"#
    );
    let path = k.write("policy.yaml", &manifest);
    let out = k.ok(&["apply", "-f", &path]).await;
    assert!(
        out.contains(&format!(
            "validatingadmissionpolicy.admissionregistration.k8s.io/{policy} created"
        )),
        "{out}"
    );
    let listed = k
        .ok(&["get", "validatingadmissionpolicies", &policy, "-o", "name"])
        .await;
    assert_eq!(
        listed.trim(),
        format!("validatingadmissionpolicy.admissionregistration.k8s.io/{policy}")
    );
    let refusal = wait_for(|| async {
        let out = k
            .run(&[
                "create",
                "configmap",
                "two",
                "-n",
                &ns,
                "--from-literal=a=1",
                "--from-literal=b=2",
            ])
            .await;
        if out.status.success() {
            k.run(&["delete", "configmap", "two", "-n", &ns]).await;
            return None;
        }
        Some(String::from_utf8_lossy(&out.stderr).into_owned())
    })
    .await
    .expect("the policy takes effect");
    assert_eq!(
        refusal.trim(),
        format!(
            "error: failed to create configmap: configmaps \"two\" is forbidden: ValidatingAdmissionPolicy '{policy}' with binding '{policy}' denied request: one key at most"
        )
    );
    k.ok(&[
        "create",
        "configmap",
        "one",
        "-n",
        &ns,
        "--from-literal=a=1",
    ])
    .await;
    // Apply again: unchanged.
    let again = k.ok(&["apply", "-f", &path]).await;
    assert!(again.contains("unchanged"), "{again}");
    k.ok(&["delete", "-f", &path]).await;
    k.ok(&["delete", "namespace", &ns, "--wait=false"]).await;
}
