//! The audit log (`Emulator::audit`): every answered write with its user, verb, resource
//! and status; reads are not recorded. Emulator only: a real cluster's audit log is not
//! readable through the API.

mod support;

use std::time::Instant;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
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
async fn writes_are_recorded_with_their_user_and_status_and_reads_are_not() {
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
    // Reads leave no trace.
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
    assert!(!events[2].changed_something() && events[3].changed_something());
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
