//! The audit log (`Emulator::audit`): every answered resource request — get, list, watch
//! and the writes — with its user, verb, resource and status; discovery is not recorded.
//! Emulator only: a real cluster's audit log is not readable through the API.

mod support;

use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent};
use kube::{Client, ResourceExt};
use kube_emulator::{AuditEvent, Config, Emulator};
use serde_json::json;
use support::{Subnet, SubnetStatus, subnet};

const ALICE: &str = "alice-token";
const BOB: &str = "bob-token";

async fn emulator() -> Emulator {
    let mut config = Config::default();
    config.tokens.insert(ALICE.into(), "alice".into());
    config.tokens.insert(BOB.into(), "bob".into());
    Emulator::start(config).await.unwrap()
}

/// A client that sends `token`, through the kubeconfig the emulator writes for it.
async fn client_with_token(emulator: &Emulator, token: &str) -> Client {
    let kubeconfig = emulator.kubeconfig_with_token(token);
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

fn configmap(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": value}})).unwrap()
}

/// An event as `(user, verb, objectRef resource, namespace, name, code)`.
fn summary(e: &AuditEvent) -> (&str, &str, String, Option<&str>, Option<&str>, u16) {
    (
        e.user.as_str(),
        e.verb,
        e.object_resource(),
        e.namespace.as_deref(),
        e.name.as_deref(),
        e.code,
    )
}

#[tokio::test]
async fn requests_are_recorded_with_their_user_and_status() {
    let emulator = emulator().await;
    let admin = emulator.client();
    support::install_crds(&admin).await;
    let alice: Api<ConfigMap> = Api::default_namespaced(client_with_token(&emulator, ALICE).await);
    let bob: Api<ConfigMap> = Api::default_namespaced(client_with_token(&emulator, BOB).await);
    let since = emulator.audit().len();
    let started = Instant::now();

    let created = alice
        .create(&PostParams::default(), &configmap("shared", "1"))
        .await
        .unwrap();
    let mut changed = created.clone();
    changed.data = Some([("v".to_string(), "2".to_string())].into());
    alice
        .replace("shared", &PostParams::default(), &changed)
        .await
        .unwrap();
    // Bob's copy carries the version before alice's replace: refused, changes nothing.
    let mut stale = created.clone();
    stale.data = Some([("v".to_string(), "3".to_string())].into());
    let refused = bob.replace("shared", &PostParams::default(), &stale).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 409),
        "{refused:?}"
    );
    // Reads are recorded too, and change nothing.
    assert_eq!(bob.get("shared").await.unwrap().name_any(), "shared");
    bob.list(&Default::default()).await.unwrap();
    bob.patch(
        "shared",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "4"}})),
    )
    .await
    .unwrap();
    // A status subresource and a cluster-scoped resource.
    let subnets: Api<Subnet> = Api::all(client_with_token(&emulator, ALICE).await);
    let mut net = subnets
        .create(&PostParams::default(), &subnet("audited", "10.40.0.0/16"))
        .await
        .unwrap();
    net.status = Some(SubnetStatus {
        allocated: Some("1".into()),
        ..Default::default()
    });
    subnets
        .replace_status("audited", &PostParams::default(), &net)
        .await
        .unwrap();
    bob.delete("shared", &DeleteParams::default())
        .await
        .unwrap();
    let missing = bob.delete("shared", &DeleteParams::default()).await;
    assert!(
        matches!(&missing, Err(kube::Error::Api(s)) if s.code == 404),
        "{missing:?}"
    );

    let log = emulator.audit();
    let events = &log[since..];
    let seen: Vec<_> = events.iter().map(summary).collect();
    let cm = "configmaps".to_string();
    let default = Some("default");
    assert_eq!(
        seen,
        [
            ("alice", "create", cm.clone(), default, Some("shared"), 201),
            ("alice", "update", cm.clone(), default, Some("shared"), 200),
            ("bob", "update", cm.clone(), default, Some("shared"), 409),
            ("bob", "get", cm.clone(), default, Some("shared"), 200),
            ("bob", "list", cm.clone(), default, None, 200),
            ("bob", "patch", cm.clone(), default, Some("shared"), 200),
            (
                "alice",
                "create",
                "emulator.example.com/subnets".into(),
                None,
                Some("audited"),
                201
            ),
            (
                "alice",
                "update",
                "emulator.example.com/subnets/status".into(),
                None,
                Some("audited"),
                200
            ),
            ("bob", "delete", cm.clone(), default, Some("shared"), 200),
            ("bob", "delete", cm, default, Some("shared"), 404),
        ]
    );
    assert!(events.iter().all(|e| !e.dry_run));
    assert!(!events[2].changed_something() && events[5].changed_something());
    assert!(events[3].is_read() && events[4].is_read());
    assert!(!events[3].changed_something() && !events[4].changed_something());
    assert_eq!(
        events.iter().filter(|e| e.is_write()).count(),
        8,
        "all but the get and the list"
    );
    // In order, each answered after it arrived, all after the test started.
    assert!(
        events
            .iter()
            .all(|e| started <= e.received && e.received <= e.answered)
    );
    assert!(events.windows(2).all(|w| w[0].answered <= w[1].received));
}

#[tokio::test]
async fn refused_tokens_and_dry_runs_are_recorded_as_such() {
    let emulator = emulator().await;
    let mut config = kube::Config::new(emulator.url().parse().unwrap());
    config.auth_info.token = Some("not-a-known-token".to_string().into());
    let stranger: Api<ConfigMap> = Api::namespaced(Client::try_from(config).unwrap(), "default");
    let refused = stranger
        .create(&PostParams::default(), &configmap("x", "1"))
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 401),
        "{refused:?}"
    );
    let alice: Api<ConfigMap> = Api::default_namespaced(client_with_token(&emulator, ALICE).await);
    alice
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &configmap("y", "1"),
        )
        .await
        .unwrap();
    let log = emulator.audit();
    let seen: Vec<_> = log.iter().map(|e| (summary(e), e.dry_run)).collect();
    let cm = "configmaps".to_string();
    assert_eq!(
        seen,
        [
            (
                ("", "create", cm.clone(), Some("default"), None, 401),
                false
            ),
            (
                ("alice", "create", cm, Some("default"), Some("y"), 201),
                true
            ),
        ]
    );
    assert!(!log[1].changed_something(), "a dry run stores nothing");
}

#[tokio::test]
async fn gets_lists_and_watches_are_recorded_with_their_verb_and_user() {
    let emulator = emulator().await;
    let alice: Api<ConfigMap> = Api::default_namespaced(client_with_token(&emulator, ALICE).await);
    let bob_client = client_with_token(&emulator, BOB).await;
    let bob: Api<ConfigMap> = Api::default_namespaced(bob_client.clone());
    let missing = alice.get("nothing").await;
    assert!(
        matches!(&missing, Err(kube::Error::Api(s)) if s.code == 404),
        "{missing:?}"
    );
    bob.list(&ListParams::default()).await.unwrap();
    // A list selecting one name by field is logged with that name, as the real server's
    // request info names it.
    alice
        .list(&ListParams::default().fields("metadata.name=watched"))
        .await
        .unwrap();
    let all: Api<ConfigMap> = Api::all(bob_client.clone());
    all.list(&ListParams::default()).await.unwrap();

    let mut watch = bob.watch(&Default::default(), "0").await.unwrap().boxed();
    // Recorded once its response head is ready, while the stream is open.
    let log = emulator.audit();
    let watches: Vec<_> = log.iter().filter(|e| e.verb == "watch").collect();
    assert_eq!(watches.len(), 1, "{log:?}");
    let opened = watches[0].clone();
    alice
        .create(&PostParams::default(), &configmap("watched", "1"))
        .await
        .unwrap();
    loop {
        match watch.try_next().await.unwrap() {
            Some(WatchEvent::Added(cm)) if cm.name_any() == "watched" => break,
            Some(_) => {}
            None => panic!("the watch ended"),
        }
    }
    // The `/watch/` path prefix, as older clients watch.
    let prefixed = http::Request::get("/api/v1/watch/namespaces/default/configmaps/watched")
        .body(Vec::new())
        .unwrap();
    let prefixed = bob_client.send(prefixed.map(Into::into)).await.unwrap();
    assert!(prefixed.status().is_success());

    let log = emulator.audit();
    let seen: Vec<_> = log.iter().map(summary).collect();
    let cm = "configmaps".to_string();
    let default = Some("default");
    assert_eq!(
        seen,
        [
            ("alice", "get", cm.clone(), default, Some("nothing"), 404),
            ("bob", "list", cm.clone(), default, None, 200),
            ("alice", "list", cm.clone(), default, Some("watched"), 200),
            ("bob", "list", cm.clone(), None, None, 200),
            ("bob", "watch", cm.clone(), default, None, 200),
            ("alice", "create", cm.clone(), default, Some("watched"), 201),
            ("bob", "watch", cm, default, Some("watched"), 200),
        ]
    );
    assert_eq!(log[4], opened, "a watch is recorded once, when it opens");
    assert!(log.iter().all(|e| !e.dry_run));
    assert!(
        log[..4]
            .iter()
            .all(|e| e.is_read() && !e.changed_something())
    );
    assert!(!log[4].is_read() && !log[4].is_write() && !log[4].changed_something());
    assert!(log[5].is_write() && log[5].changed_something());
}

#[tokio::test]
async fn discovery_version_health_and_reviews_are_not_recorded() {
    let emulator = emulator().await;
    let client = client_with_token(&emulator, ALICE).await;
    client.apiserver_version().await.unwrap();
    client.list_core_api_versions().await.unwrap();
    client.list_core_api_resources("v1").await.unwrap();
    client.list_api_groups().await.unwrap();
    client
        .list_api_group_resources("coordination.k8s.io/v1")
        .await
        .unwrap();
    for path in ["/healthz", "/livez", "/readyz", "/openapi/v3"] {
        let req = http::Request::get(path).body(Vec::new()).unwrap();
        client.request_text(req).await.unwrap();
    }
    let review = |group: &str, resource: &str, kind: &str, spec: serde_json::Value| {
        let body = json!({"apiVersion": format!("{group}/v1"), "kind": kind, "spec": spec});
        http::Request::post(format!("/apis/{group}/v1/{resource}"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .unwrap()
    };
    client
        .request_text(review(
            "authorization.k8s.io",
            "selfsubjectaccessreviews",
            "SelfSubjectAccessReview",
            json!({"resourceAttributes": {"verb": "list", "resource": "configmaps"}}),
        ))
        .await
        .unwrap();
    client
        .request_text(review(
            "authentication.k8s.io",
            "selfsubjectreviews",
            "SelfSubjectReview",
            json!({}),
        ))
        .await
        .unwrap();
    assert_eq!(emulator.audit(), [], "nothing names a stored resource");
}
