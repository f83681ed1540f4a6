//! Conformance of the API emulator, written with kube-rs against the real REST protocol,
//! with built-in types and the test CRDs of `tests/fixtures/`.
//!
//! Runs against the emulator; set `IPLEDGER_TEST_KUBECONFIG` to run the same tests against
//! a real cluster (each test uses unique names or its own namespace, and cleans up).
//! Fault-injection tests skip against a real cluster.

mod support;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy,
    WatchEvent, WatchParams,
};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::{ApiResource, Discovery};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use support::{GROUP, Reservation, Subnet, install_crds, subnet};
use test_support::{api_error, cluster, namespace, unique, wait_for};

fn lease(name: &str, labels: Value) -> Lease {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": {"holderIdentity": "conformance"}})).unwrap()
}

fn configmap(name: &str, labels: Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
    )
    .unwrap()
}

async fn subnets(client: &Client) -> Api<Subnet> {
    install_crds(client).await;
    Api::all(client.clone())
}

fn rv<K: ResourceExt>(obj: &K) -> u64 {
    obj.resource_version().unwrap().parse().unwrap()
}

#[tokio::test]
async fn discovery_serves_version_builtins_and_registered_crds() {
    let c = cluster().await;
    let version = c.client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
    install_crds(&c.client).await;
    let discovery = Discovery::new(c.client.clone()).run().await.unwrap();
    let (subnets, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk(GROUP, "v1", "Subnet"))
        .expect("Subnet discovered");
    assert_eq!(subnets.plural, "subnets");
    assert_eq!(caps.scope, kube::discovery::Scope::Cluster);
    assert!(
        caps.subresources
            .iter()
            .any(|(r, _)| r.plural == "subnets/status" || r.plural == "status")
    );
    for (group, kind) in [
        ("", "Pod"),
        ("apps", "Deployment"),
        ("coordination.k8s.io", "Lease"),
        ("policy", "PodDisruptionBudget"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("events.k8s.io", "Event"),
    ] {
        assert!(
            discovery
                .resolve_gvk(&GroupVersionKind::gvk(group, "v1", kind))
                .is_some(),
            "{group}/{kind} should be served"
        );
    }
    // storageVersionHash is the real server's: a hash of the storage group/version/kind.
    let core: Value = c
        .client
        .request(http::Request::get("/api/v1").body(Vec::new()).unwrap())
        .await
        .unwrap();
    let configmaps = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "configmaps")
        .unwrap();
    assert_eq!(configmaps["storageVersionHash"], "qFsyl6wFWjQ=");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c.client.clone());
    namespaces.get("default").await.unwrap();
    namespaces.get("kube-system").await.unwrap();
}

#[tokio::test]
async fn create_conflicts_and_not_found_carry_the_real_status() {
    let c = cluster().await;
    let api = subnets(&c.client).await;
    let name = unique("crud");
    let created = api
        .create(&PostParams::default(), &subnet(&name, "10.10.0.0/16"))
        .await
        .unwrap();
    assert!(created.uid().is_some());
    assert!(created.creation_timestamp().is_some());
    assert_eq!(created.metadata.generation, Some(1));

    let exists = api_error(
        api.create(&PostParams::default(), &subnet(&name, "10.10.0.0/16"))
            .await,
    );
    assert_eq!(
        (exists.code, exists.reason.as_str()),
        (409, "AlreadyExists")
    );
    assert_eq!(
        exists.message,
        format!("subnets.emulator.example.com \"{name}\" already exists")
    );

    let missing = api_error(api.get(&format!("{name}-missing")).await);
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(
        missing.message,
        format!("subnets.emulator.example.com \"{name}-missing\" not found")
    );

    let mut stale = created.clone();
    let mut fresh = created.clone();
    fresh.spec.disabled = true;
    let replaced = api
        .replace(&name, &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert!(rv(&replaced) > rv(&created));
    assert_eq!(replaced.metadata.generation, Some(2));
    stale.spec.default = true;
    let conflict = api_error(api.replace(&name, &PostParams::default(), &stale).await);
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        conflict.message,
        format!(
            "Operation cannot be fulfilled on subnets.emulator.example.com \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
        )
    );

    let mut other_uid = replaced.clone();
    other_uid.metadata.uid = Some("00000000-0000-0000-0000-000000000000".into());
    let err = api_error(api.replace(&name, &PostParams::default(), &other_uid).await);
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message.contains(&format!(
            "Precondition failed: UID in precondition: 00000000-0000-0000-0000-000000000000, UID in object meta: {}",
            created.uid().unwrap()
        )),
        "{}",
        err.message
    );

    let mut unversioned = replaced.clone();
    unversioned.metadata.resource_version = None;
    let invalid = api_error(
        api.replace(&name, &PostParams::default(), &unversioned)
            .await,
    );
    assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        invalid.message,
        format!(
            "Subnet.emulator.example.com \"{name}\" is invalid: metadata.resourceVersion: Invalid value: 0: must be specified for an update"
        )
    );

    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn create_needs_an_existing_namespace_and_honours_generate_name() {
    let c = cluster().await;
    let missing_ns = unique("nope");
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), &missing_ns);
    let err = api_error(
        api.create(&PostParams::default(), &configmap("a", json!({})))
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert_eq!(
        err.message,
        format!("namespaces \"{missing_ns}\" not found")
    );

    let ns = namespace(&c.client).await;
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    let mut generated = configmap("", json!({}));
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let a = api
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    let b = api
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    assert!(a.name_any().starts_with("gen-") && a.name_any().len() == "gen-".len() + 5);
    assert_ne!(a.name_any(), b.name_any());
    let long = "a".repeat(254);
    let err = api_error(
        api.create(&PostParams::default(), &configmap(&long, json!({})))
            .await,
    );
    assert_eq!(
        (err.code, err.message),
        (
            422,
            format!(
                "ConfigMap \"{long}\" is invalid: metadata.name: Invalid value: \"{long}\": must be no more than 253 characters"
            )
        )
    );
    test_support::delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn resource_versions_increase_across_resources_and_updates() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    let api = subnets(&c.client).await;
    let name = unique("rv");
    let a = cms
        .create(&PostParams::default(), &configmap("a", json!({})))
        .await
        .unwrap();
    let p = api
        .create(&PostParams::default(), &subnet(&name, "10.11.0.0/16"))
        .await
        .unwrap();
    let b = cms
        .create(&PostParams::default(), &configmap("b", json!({})))
        .await
        .unwrap();
    assert!(rv(&a) < rv(&p) && rv(&p) < rv(&b));
    let list = cms.list(&ListParams::default()).await.unwrap();
    assert!(
        list.metadata
            .resource_version
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= rv(&b)
    );
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    test_support::delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn list_filters_by_label_and_field_selectors_and_pages() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    // Leases: no controller adds any to a new namespace (a real one gets a ConfigMap).
    let api: Api<Lease> = Api::namespaced(c.client.clone(), &ns);
    for (name, labels) in [
        ("a", json!({"app": "web", "tier": "front"})),
        ("b", json!({"app": "db"})),
        ("c", json!({"app": "web", "tier": "back"})),
        ("d", json!({})),
    ] {
        api.create(&PostParams::default(), &lease(name, labels))
            .await
            .unwrap();
    }
    let names = |selector: &'static str| {
        let api = api.clone();
        async move {
            let mut names: Vec<String> = api
                .list(&ListParams::default().labels(selector))
                .await
                .unwrap()
                .iter()
                .map(|c| c.name_any())
                .collect();
            names.sort();
            names
        }
    };
    assert_eq!(names("app=web").await, ["a", "c"]);
    assert_eq!(names("app==db").await, ["b"]);
    assert_eq!(names("app!=web").await, ["b", "d"]);
    assert_eq!(names("app in (db,web),tier notin (back)").await, ["a", "b"]);
    assert_eq!(names("tier").await, ["a", "c"]);
    assert_eq!(names("!tier").await, ["b", "d"]);
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=c"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let by_ns = api
        .list(&ListParams::default().fields(&format!("metadata.namespace={ns}")))
        .await
        .unwrap();
    assert_eq!(by_ns.items.len(), 4);

    let first = api.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(first.items.len(), 3);
    let token = first.metadata.continue_.clone().expect("a continue token");
    assert_eq!(first.metadata.remaining_item_count, Some(1));
    let second = api
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(second.items.len(), 1);
    assert!(
        second
            .metadata
            .continue_
            .as_deref()
            .unwrap_or("")
            .is_empty()
    );

    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &ns);
    for (name, node) in [("p1", "node-a"), ("p2", "node-b")] {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}})).unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    let on_b = pods
        .list(&ListParams::default().fields("spec.nodeName=node-b"))
        .await
        .unwrap();
    assert_eq!(
        on_b.items.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
        ["p2"]
    );
    let err = api_error(
        api.list(&ListParams::default().fields("spec.nodeName=x"))
            .await,
    );
    assert_eq!(err.code, 400);
    test_support::delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn malformed_label_selectors_are_bad_requests() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    api.create(&PostParams::default(), &configmap("a", json!({"app": "a"})))
        .await
        .unwrap();
    for (selector, says) in [
        ("app=a b", "found 'b', expected: ',' or 'end of string'"),
        (
            "app in a",
            "unable to parse requirement: found 'a' expected: '('",
        ),
        ("app,", "found '', expected: identifier after ','"),
        (
            "app_=a",
            "unable to parse requirement: <nil>: Invalid value: \"app_\": name part must consist of alphanumeric characters",
        ),
    ] {
        let err = api_error(api.list(&ListParams::default().labels(selector)).await);
        assert_eq!(
            (err.code, err.reason.as_str()),
            (400, "BadRequest"),
            "{selector}: {}",
            err.message
        );
        assert!(err.message.contains(says), "{selector}: {}", err.message);
    }
    let listed = api
        .list(&ListParams::default().labels("app in (a, b),!tier"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    test_support::delete_namespace(&c.client, &ns).await;
}

/// A raw request that must fail: its Status.
async fn refused(
    client: &Client,
    method: &str,
    uri: &str,
    content_type: &str,
    body: &str,
) -> kube::core::Status {
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("Content-Type", content_type)
        .body(body.as_bytes().to_vec())
        .unwrap();
    api_error(client.request::<Value>(req).await)
}

#[tokio::test]
async fn bodies_of_the_wrong_kind_or_with_duplicate_fields_are_refused() {
    let c = cluster().await;
    install_crds(&c.client).await;
    let ns = namespace(&c.client).await;
    let name = unique("body");
    let subnets = "/apis/emulator.example.com/v1/subnets";
    let json = "application/json";

    let untyped =
        format!(r#"{{"metadata": {{"name": "{name}"}}, "spec": {{"cidr": "10.19.0.0/16"}}}}"#);
    let err = refused(&c.client, "POST", subnets, json, &untyped).await;
    assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"));
    assert!(
        err.message.starts_with(
            "the object provided is unrecognized (must be of type Subnet): Object 'Kind' is missing in"
        ),
        "{}",
        err.message
    );

    let other_kind = format!(
        r#"{{"apiVersion": "emulator.example.com/v1", "kind": "Reservation", "metadata": {{"name": "{name}"}}, "spec": {{"cidr": "10.19.0.0/16"}}}}"#
    );
    let err = refused(&c.client, "POST", subnets, json, &other_kind).await;
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        err.message,
        format!(
            "Subnet.emulator.example.com \"{name}\" is invalid: kind: Invalid value: \"Reservation\": must be Subnet"
        )
    );

    let secret =
        format!(r#"{{"apiVersion": "v1", "kind": "Secret", "metadata": {{"name": "{name}"}}}}"#);
    let err = refused(
        &c.client,
        "POST",
        &format!("/api/v1/namespaces/{ns}/configmaps"),
        json,
        &secret,
    )
    .await;
    assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"));
    assert!(
        err.message
            .starts_with("Secret in version \"v1\" cannot be handled as a ConfigMap"),
        "{}",
        err.message
    );

    let twice = format!(
        r#"{{"apiVersion": "emulator.example.com/v1", "kind": "Subnet", "metadata": {{"name": "{name}"}}, "spec": {{"cidr": "10.19.0.0/16", "cidr": "10.20.0.0/16"}}}}"#
    );
    let err = refused(
        &c.client,
        "POST",
        &format!("{subnets}?fieldValidation=Strict"),
        json,
        &twice,
    )
    .await;
    assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"));
    assert!(
        err.message
            .contains("strict decoding error: duplicate field \"spec.cidr\""),
        "{}",
        err.message
    );

    let unkinded = format!(r#"{{"metadata": {{"name": "{name}"}}, "data": {{"k": "v"}}}}"#);
    let err = refused(
        &c.client,
        "PATCH",
        &format!("/api/v1/namespaces/{ns}/configmaps/{name}?fieldManager=conformance"),
        "application/apply-patch+yaml",
        &unkinded,
    )
    .await;
    assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"));
    assert!(
        err.message.contains("invalid object type: /, Kind="),
        "{}",
        err.message
    );
    assert!(
        Api::<Subnet>::all(c.client.clone())
            .get_opt(&name)
            .await
            .unwrap()
            .is_none()
    );
    test_support::delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn invalid_request_options_are_422_on_the_options_kind() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let configmaps = format!("/api/v1/namespaces/{ns}/configmaps");
    let body = r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "opts"}}"#;
    let json = "application/json";
    let err = refused(
        &c.client,
        "POST",
        &format!("{configmaps}?dryRun=Bogus"),
        json,
        body,
    )
    .await;
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(
        err.message
            .starts_with("CreateOptions.meta.k8s.io \"\" is invalid: dryRun: Unsupported value:")
            && err.message.ends_with("supported values: \"All\""),
        "{}",
        err.message
    );
    let err = refused(
        &c.client,
        "POST",
        &format!("{configmaps}?fieldValidation=Bogus"),
        json,
        body,
    )
    .await;
    assert_eq!(
        (err.code, err.message.as_str()),
        (
            422,
            "CreateOptions.meta.k8s.io \"\" is invalid: fieldValidation: Unsupported value: \"Bogus\": supported values: \"\", \"Ignore\", \"Strict\", \"Warn\""
        )
    );
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    api.create(&PostParams::default(), &configmap("opts", json!({})))
        .await
        .unwrap();
    let err = refused(
        &c.client,
        "DELETE",
        &format!("{configmaps}/opts?propagationPolicy=Later"),
        json,
        "",
    )
    .await;
    assert_eq!(
        (err.code, err.message.as_str()),
        (
            422,
            "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"Later\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
        )
    );
    let err = refused(
        &c.client,
        "GET",
        &format!("{configmaps}?resourceVersion=1&resourceVersionMatch=Bogus"),
        json,
        "",
    )
    .await;
    assert_eq!(
        (err.code, err.message.as_str()),
        (
            422,
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Unsupported value: \"Bogus\": supported values: \"Exact\", \"NotOlderThan\", \"\""
        )
    );
    assert!(api.get_opt("opts").await.unwrap().is_some());
    test_support::delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn a_list_at_resource_version_0_is_served_whole_whatever_the_limit() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    for name in ["a", "b", "c"] {
        api.create(&PostParams::default(), &configmap(name, json!({})))
            .await
            .unwrap();
    }
    // Raw: kube-rs leaves resourceVersion=0 out when a limit is set.
    let cached = wait_for(|| {
        let client = c.client.clone();
        let req = http::Request::get(format!(
            "/api/v1/namespaces/{ns}/configmaps?resourceVersion=0&limit=1"
        ))
        .body(Vec::new())
        .unwrap();
        async move {
            let list: Value = client.request(req).await.unwrap();
            (list["items"].as_array().unwrap().len() >= 3).then_some(list)
        }
    })
    .await
    .expect("the cache serves every item");
    assert!(
        cached["metadata"]["continue"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "{}",
        cached["metadata"]
    );
    let paged = api.list(&ListParams::default().limit(1)).await.unwrap();
    assert_eq!(paged.items.len(), 1);
    assert!(paged.metadata.continue_.is_some());
    test_support::delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn watch_streams_changes_from_a_resource_version() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    let list = api.list(&ListParams::default()).await.unwrap();
    let from = list.metadata.resource_version.unwrap();
    let stream = api
        .watch(&WatchParams::default().timeout(20), &from)
        .await
        .unwrap();
    let mut stream = stream.boxed();
    let created = api
        .create(&PostParams::default(), &configmap("w", json!({})))
        .await
        .unwrap();
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "changed"}})),
    )
    .await
    .unwrap();
    api.delete("w", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        // Only our object: a real cluster adds its own ConfigMap to new namespaces.
        let (kind, o) = match stream.try_next().await.unwrap().expect("stream open") {
            WatchEvent::Added(o) => ("ADDED", o),
            WatchEvent::Modified(o) => ("MODIFIED", o),
            WatchEvent::Deleted(o) => ("DELETED", o),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        };
        if o.name_any() == "w" {
            seen.push((kind, o));
        }
    }
    let kinds: Vec<_> = seen.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"]);
    assert_eq!(seen[0].1.uid(), created.uid());
    assert_eq!(seen[1].1.data.as_ref().unwrap()["k"], "changed");
    assert!(rv(&seen[0].1) < rv(&seen[1].1) && rv(&seen[1].1) < rv(&seen[2].1));
    test_support::delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn watch_sends_bookmarks_when_asked() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    let from = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    // Real servers send bookmarks about once a minute; the emulator every second.
    let mut stream = api
        .watch(&WatchParams::default().timeout(90), &from)
        .await
        .unwrap()
        .boxed();
    let bookmark = loop {
        match stream.try_next().await.unwrap() {
            Some(WatchEvent::Bookmark(b)) => break b,
            Some(_) => {}
            None => panic!("watch ended without a bookmark"),
        }
    };
    assert!(
        bookmark.metadata.resource_version.parse::<u64>().unwrap() >= from.parse::<u64>().unwrap()
    );

    // Writes to another resource only: the quiet ConfigMap watch sees no event, but its
    // bookmarks follow the store's progress (a real server's, etcd's progress
    // notifications), so that a re-watch from them is still in the history.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(c.client.clone(), &ns);
    let mut last = 0;
    for i in 0..3 {
        let secret: k8s_openapi::api::core::v1::Secret =
            serde_json::from_value(serde_json::json!({"metadata": {"name": format!("s{i}")}}))
                .unwrap();
        last = rv(&secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap());
    }
    loop {
        match stream.try_next().await.unwrap() {
            Some(WatchEvent::Bookmark(b)) => {
                if b.metadata.resource_version.parse::<u64>().unwrap() >= last {
                    break;
                }
            }
            Some(event) => panic!("the ConfigMap watch saw {event:?}"),
            None => panic!("the watch ended before a bookmark reached {last}"),
        }
    }
    test_support::delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn watch_with_a_selector_sees_objects_enter_and_leave() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    let from = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().labels("app=web").timeout(20), &from)
        .await
        .unwrap()
        .boxed();
    api.create(
        &PostParams::default(),
        &configmap("s", json!({"app": "db"})),
    )
    .await
    .unwrap();
    api.patch(
        "s",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
    )
    .await
    .unwrap();
    api.patch(
        "s",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}})),
    )
    .await
    .unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        match stream.try_next().await.unwrap().expect("stream open") {
            WatchEvent::Added(_) => kinds.push("ADDED"),
            WatchEvent::Modified(_) => kinds.push("MODIFIED"),
            WatchEvent::Deleted(gone) => {
                // The last state the selector matched, not the one that left it.
                assert_eq!(gone.labels()["app"], "web");
                kinds.push("DELETED")
            }
            _ => {}
        }
    }
    assert_eq!(kinds, ["ADDED", "DELETED"]);
    test_support::delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn status_subresource_and_generation_are_separate() {
    let c = cluster().await;
    let api = subnets(&c.client).await;
    let name = unique("status");
    let mut with_status = subnet(&name, "10.12.0.0/16");
    with_status.status = Some(serde_json::from_value(json!({"allocated": "5"})).unwrap());
    let created = api
        .create(&PostParams::default(), &with_status)
        .await
        .unwrap();
    assert!(created.status.is_none(), "create ignores status");

    let patched = api
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"allocated": "7"}, "spec": {"disabled": true}})),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.status.as_ref().unwrap().allocated.as_deref(),
        Some("7")
    );
    assert!(!patched.spec.disabled, "status writes ignore spec");
    assert_eq!(
        patched.metadata.generation,
        Some(1),
        "status writes keep generation"
    );

    let main = api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"allocated": "9"}, "spec": {"disabled": true}})),
        )
        .await
        .unwrap();
    assert_eq!(
        main.status.as_ref().unwrap().allocated.as_deref(),
        Some("7"),
        "main writes ignore status"
    );
    assert!(main.spec.disabled);
    assert_eq!(main.metadata.generation, Some(2));

    let labelled = api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        labelled.metadata.generation,
        Some(2),
        "metadata changes keep generation"
    );
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let c = cluster().await;
    let api = subnets(&c.client).await;
    let name = unique("fin");
    let mut p = subnet(&name, "10.13.0.0/16");
    p.metadata.finalizers = Some(vec!["emulator.example.com/test".into()]);
    api.create(&PostParams::default(), &p).await.unwrap();
    let answer = api.delete(&name, &DeleteParams::default()).await.unwrap();
    let pending = answer
        .left()
        .expect("a pending deletion answers with the object");
    assert!(pending.metadata.deletion_timestamp.is_some());
    let pending = api.get(&name).await.unwrap();
    assert!(pending.metadata.deletion_timestamp.is_some());
    let err = api_error(
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"finalizers": ["emulator.example.com/test", "emulator.example.com/more"]}}),
            ),
        )
        .await,
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message.ends_with(
            "no new finalizers can be added if the object is being deleted, found new finalizers []string{\"emulator.example.com/more\"}"
        ),
        "{}",
        err.message
    );
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Json::<()>(
            serde_json::from_value(json!([{"op": "remove", "path": "/metadata/finalizers"}]))
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(api_error(api.get(&name).await).code, 404);
}

#[tokio::test]
async fn delete_preconditions_guard_uid_and_resource_version() {
    let c = cluster().await;
    let api = subnets(&c.client).await;
    let name = unique("pre");
    let created = api
        .create(&PostParams::default(), &subnet(&name, "10.14.0.0/16"))
        .await
        .unwrap();
    let wrong_uid = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("00000000-0000-0000-0000-000000000000".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let err = api_error(api.delete(&name, &wrong_uid).await);
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    // Checked before storage, and named by kind, as the real server's BeforeDelete does.
    assert_eq!(
        err.message,
        format!(
            "Operation cannot be fulfilled on Subnet.emulator.example.com \"{name}\": the UID in the precondition (00000000-0000-0000-0000-000000000000) does not match the UID in record ({}). The object might have been deleted and then recreated",
            created.uid().unwrap()
        )
    );
    let wrong_rv = DeleteParams {
        preconditions: Some(Preconditions {
            uid: None,
            resource_version: Some("1".into()),
        }),
        ..Default::default()
    };
    let err = api_error(api.delete(&name, &wrong_rv).await);
    assert_eq!(err.code, 409);
    let right = DeleteParams {
        preconditions: Some(Preconditions {
            uid: created.uid(),
            resource_version: created.resource_version(),
        }),
        ..Default::default()
    };
    let answer = api.delete(&name, &right).await.unwrap();
    let status = answer
        .right()
        .expect("a completed deletion answers with a Status");
    assert_eq!(status.details.unwrap().name, name);
    assert_eq!(api_error(api.get(&name).await).code, 404);
}

#[tokio::test]
async fn deleting_an_owner_deletes_its_dependents_in_the_background() {
    let c = cluster().await;
    let subnets = subnets(&c.client).await;
    let reservations: Api<Reservation> = Api::all(c.client.clone());
    let name = unique("owner");
    let owner = subnets
        .create(&PostParams::default(), &subnet(&name, "10.15.0.0/16"))
        .await
        .unwrap();
    let dependent: Reservation = serde_json::from_value(json!({
        "apiVersion": "emulator.example.com/v1", "kind": "Reservation",
        "metadata": {"name": format!("{name}-r"), "ownerReferences": [{"apiVersion": "emulator.example.com/v1", "kind": "Subnet", "name": name, "uid": owner.uid().unwrap()}]},
        "spec": {"subnet": name, "cidr": "10.15.0.0/26", "holder": "n1"},
    }))
    .unwrap();
    reservations
        .create(&PostParams::default(), &dependent)
        .await
        .unwrap();
    let second_name = format!("{name}-second");
    let mut second = dependent.clone();
    second.metadata.name = Some(second_name.clone());
    second.metadata.owner_references = None;
    reservations
        .create(&PostParams::default(), &second)
        .await
        .unwrap();

    subnets
        .delete(
            &name,
            &DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let gone = wait_for(|| {
        let reservations = reservations.clone();
        let name = format!("{name}-r");
        async move {
            matches!(reservations.get(&name).await, Err(kube::Error::Api(e)) if e.code == 404)
                .then_some(())
        }
    })
    .await;
    assert!(
        gone.is_some(),
        "the dependent reservation is garbage collected"
    );
    assert!(
        reservations.get_opt(&second_name).await.unwrap().is_some(),
        "a reservation without an owner reference stays"
    );
    reservations
        .delete(&second_name, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn orphan_propagation_keeps_dependents_without_the_owner_reference() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    let owner = api
        .create(&PostParams::default(), &configmap("owner", json!({})))
        .await
        .unwrap();
    let mut dep = configmap("dep", json!({}));
    dep.metadata.owner_references = Some(vec![serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.uid().unwrap()})).unwrap()]);
    api.create(&PostParams::default(), &dep).await.unwrap();
    // Asynchronous, as on a real cluster: the answer is the owner, held by the `orphan`
    // finalizer until the garbage collector has orphaned its dependents.
    let pending = api
        .delete("owner", &DeleteParams::orphan())
        .await
        .unwrap()
        .left()
        .expect("an orphan deletion answers with the object");
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert_eq!(pending.metadata.deletion_grace_period_seconds, Some(0));
    assert_eq!(
        pending.metadata.finalizers,
        Some(vec!["orphan".to_string()])
    );
    let kept = wait_for(|| {
        let api = api.clone();
        async move {
            let dep = api.get("dep").await.ok()?;
            dep.metadata
                .owner_references
                .as_ref()
                .is_none_or(|o| o.is_empty())
                .then_some(dep)
        }
    })
    .await;
    assert!(
        kept.is_some(),
        "the dependent stays, without its owner reference"
    );
    let owner_gone = wait_for(|| {
        let api = api.clone();
        async move { api.get_opt("owner").await.unwrap().is_none().then_some(()) }
    })
    .await;
    assert!(
        owner_gone.is_some(),
        "the owner goes once orphaning is done"
    );
    assert!(api.get_opt("dep").await.unwrap().is_some());
    test_support::delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn foreground_deletion_answers_with_the_owner_and_removes_blocking_dependents_first() {
    let c = cluster().await;
    let subnets = subnets(&c.client).await;
    let reservations: Api<Reservation> = Api::all(c.client.clone());
    let name = unique("fg");
    let owner = subnets
        .create(&PostParams::default(), &subnet(&name, "10.16.0.0/16"))
        .await
        .unwrap();
    let reservation = |suffix: &str, block: bool, finalizers: Value| -> Reservation {
        serde_json::from_value(json!({
            "apiVersion": "emulator.example.com/v1", "kind": "Reservation",
            "metadata": {"name": format!("{name}-{suffix}"), "finalizers": finalizers,
                "ownerReferences": [{"apiVersion": "emulator.example.com/v1", "kind": "Subnet", "name": name, "uid": owner.uid().unwrap(), "blockOwnerDeletion": block}]},
            "spec": {"subnet": name, "cidr": "10.16.0.0/26"},
        }))
        .unwrap()
    };
    let blocking = format!("{name}-blocking");
    let loose = format!("{name}-loose");
    reservations
        .create(
            &PostParams::default(),
            &reservation("blocking", true, json!(["emulator.example.com/hold"])),
        )
        .await
        .unwrap();
    reservations
        .create(
            &PostParams::default(),
            &reservation("loose", false, json!([])),
        )
        .await
        .unwrap();

    let pending = subnets
        .delete(&name, &DeleteParams::foreground())
        .await
        .unwrap()
        .left()
        .expect("a foreground deletion answers with the object");
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert_eq!(pending.metadata.deletion_grace_period_seconds, Some(0));
    assert_eq!(
        pending.metadata.finalizers,
        Some(vec!["foregroundDeletion".to_string()])
    );

    // The garbage collector deletes the dependents; the one with a finalizer stays,
    // deleting, and holds its owner, since it blocks the owner's deletion.
    let held = wait_for(|| {
        let reservations = reservations.clone();
        let blocking = blocking.clone();
        async move {
            let r = reservations.get(&blocking).await.ok()?;
            r.metadata.deletion_timestamp.is_some().then_some(())
        }
    })
    .await;
    assert!(held.is_some(), "the blocking dependent is deleted");
    let loose_gone = wait_for(|| {
        let reservations = reservations.clone();
        let loose = loose.clone();
        async move {
            reservations
                .get_opt(&loose)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await;
    assert!(loose_gone.is_some(), "the other dependent is deleted");
    let waiting = subnets.get(&name).await.unwrap();
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert_eq!(
        waiting.metadata.finalizers,
        Some(vec!["foregroundDeletion".to_string()])
    );

    reservations
        .patch(
            &blocking,
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([{"op": "remove", "path": "/metadata/finalizers"}]))
                    .unwrap(),
            ),
        )
        .await
        .unwrap();
    let owner_gone = wait_for(|| {
        let subnets = subnets.clone();
        let name = name.clone();
        async move {
            subnets
                .get_opt(&name)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await;
    assert!(
        owner_gone.is_some(),
        "the owner goes after its blocking dependent"
    );
    assert!(reservations.get_opt(&blocking).await.unwrap().is_none());
}

#[tokio::test]
async fn schema_prunes_unknown_fields_and_rejects_invalid_values() {
    let c = cluster().await;
    let api = subnets(&c.client).await;
    let raw: Api<DynamicObject> = Api::all_with(
        c.client.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, "v1", "Subnet")),
    );
    let name = unique("schema");
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "emulator.example.com/v1", "kind": "Subnet", "metadata": {"name": name},
        "spec": {"cidr": "10.16.0.0/16", "colour": "blue"},
    }))
    .unwrap();
    let created = raw.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(created.data["spec"], json!({"cidr": "10.16.0.0/16"}));

    let bad_type: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "emulator.example.com/v1", "kind": "Subnet", "metadata": {"name": format!("{name}-t")},
        "spec": {"cidr": "10.17.0.0/16", "blockSize": "big"},
    }))
    .unwrap();
    let err = api_error(raw.create(&PostParams::default(), &bad_type).await);
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    let causes = err.details.as_ref().unwrap().causes.clone();
    assert!(
        causes.iter().any(|c| c.field == "spec.blockSize"),
        "{causes:?}"
    );

    let missing: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "emulator.example.com/v1", "kind": "Subnet", "metadata": {"name": format!("{name}-m")}, "spec": {},
    }))
    .unwrap();
    let err = api_error(raw.create(&PostParams::default(), &missing).await);
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains("spec.cidr: Required value"),
        "{}",
        err.message
    );

    let err = api_error(
        api.create(
            &PostParams::default(),
            &subnet(&format!("{name}-h"), "10.18.0.1/16"),
        )
        .await,
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message
            .contains("cidr must be a network address in CIDR notation"),
        "{}",
        err.message
    );
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

/// Transition rules (`self == oldSelf`, and one on the parent with a `fieldPath`) refuse an
/// update with the rule's message, at the field's path.
#[tokio::test]
async fn nulls_are_pruned_or_absent_to_cel_rules() {
    let c = cluster().await;
    let api = subnets(&c.client).await;
    let raw: Api<DynamicObject> = Api::all_with(
        c.client.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, "v1", "Subnet")),
    );
    let name = unique("nulls");
    // `default` is not nullable: its null is pruned. `gateway` and `blockSize` are: CEL
    // rules see them as absent (`has()` is false), so the rules about them hold.
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "emulator.example.com/v1", "kind": "Subnet", "metadata": {"name": name},
        "spec": {"cidr": "10.18.0.0/16", "gateway": null, "blockSize": null, "default": null},
    }))
    .unwrap();
    let created = raw.create(&PostParams::default(), &obj).await.unwrap();
    let spec = &created.data["spec"];
    assert_eq!(spec["cidr"], "10.18.0.0/16");
    assert!(spec.get("default").is_none(), "{spec}");
    assert!(
        spec["gateway"].is_null() && spec["blockSize"].is_null(),
        "{spec}"
    );
    let mut again = created.clone();
    again.data["spec"]["gateway"] = Value::Null;
    again.data["spec"]["disabled"] = json!(true);
    raw.replace(&name, &PostParams::default(), &again)
        .await
        .unwrap();
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn cel_transition_rules_refuse_changing_an_immutable_field() {
    let c = cluster().await;
    let api = subnets(&c.client).await;
    let name = unique("cel");
    api.create(&PostParams::default(), &subnet(&name, "10.19.0.0/16"))
        .await
        .unwrap();
    let err = api_error(
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"cidr": "10.20.0.0/16"}})),
        )
        .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    // A rule on a scalar shows the value it judged; one on an object shows none.
    assert_eq!(
        err.message,
        format!(
            "Subnet.emulator.example.com \"{name}\" is invalid: spec.cidr: Invalid value: \"10.20.0.0/16\": cidr is immutable"
        )
    );
    let err = api_error(
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"blockSize": 28}})),
        )
        .await,
    );
    assert_eq!(
        err.message,
        format!(
            "Subnet.emulator.example.com \"{name}\" is invalid: spec.blockSize: Invalid value: blockSize is immutable"
        )
    );
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

/// CEL rules with the Kubernetes IP library (`isCIDR`, `cidr().prefixLength()`, `isIP`,
/// `containsIP`), as a real API server evaluates them: the good subnets pass, each bad
/// one is refused with its message.
#[tokio::test]
async fn cel_rules_with_the_ip_library_check_block_size_and_gateway() {
    let c = cluster().await;
    let api = subnets(&c.client).await;
    let name = unique("celr");
    let with = |suffix: &str, spec: Value| -> Subnet {
        serde_json::from_value(json!({
            "apiVersion": "emulator.example.com/v1", "kind": "Subnet",
            "metadata": {"name": format!("{name}-{suffix}")}, "spec": spec,
        }))
        .unwrap()
    };
    let good = [
        with(
            "v4",
            json!({"cidr": "10.21.0.0/16", "blockSize": 24, "gateway": "10.21.0.1"}),
        ),
        with(
            "v6",
            json!({"cidr": "fd00:21::/48", "blockSize": 122, "gateway": "fd00:21::1"}),
        ),
    ];
    for subnet in &good {
        api.create(&PostParams::default(), subnet).await.unwrap();
    }
    for (suffix, spec, message) in [
        (
            "short",
            json!({"cidr": "10.23.0.0/28", "blockSize": 26}),
            "blockSize must not be shorter",
        ),
        (
            "gw",
            json!({"cidr": "10.24.0.0/16", "gateway": "10.99.0.1"}),
            "gateway must be an IP address inside cidr",
        ),
        (
            "gwbad",
            json!({"cidr": "10.25.0.0/16", "gateway": "not-an-ip"}),
            "gateway must be an IP address inside cidr",
        ),
    ] {
        let err = api_error(
            api.create(&PostParams::default(), &with(suffix, spec))
                .await,
        );
        assert_eq!(
            (err.code, err.reason.as_str()),
            (422, "Invalid"),
            "{suffix}: {}",
            err.message
        );
        assert!(err.message.contains(message), "{suffix}: {}", err.message);
    }
    for subnet in &good {
        api.delete(&subnet.name_any(), &DeleteParams::default())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn patches_json_merge_and_strategic() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "one"}, {"name": "b", "image": "one"}]}})).unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let patched = pods
        .patch("p", &PatchParams::default(), &Patch::Strategic(json!({"metadata": {"labels": {"x": "y"}}, "spec": {"containers": [{"name": "b", "image": "two"}]}})))
        .await
        .unwrap();
    let images: Vec<_> = patched
        .spec
        .unwrap()
        .containers
        .iter()
        .map(|c| (c.name.clone(), c.image.clone().unwrap()))
        .collect();
    assert_eq!(
        images,
        [
            ("a".to_string(), "one".to_string()),
            ("b".to_string(), "two".to_string())
        ]
    );

    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    cms.create(&PostParams::default(), &configmap("m", json!({})))
        .await
        .unwrap();
    let test_ok: json_patch::Patch = serde_json::from_value(json!([{"op": "test", "path": "/data/k", "value": "v"}, {"op": "replace", "path": "/data/k", "value": "w"}])).unwrap();
    let out = cms
        .patch("m", &PatchParams::default(), &Patch::Json::<()>(test_ok))
        .await
        .unwrap();
    assert_eq!(out.data.unwrap()["k"], "w");
    let test_bad: json_patch::Patch = serde_json::from_value(json!([{"op": "test", "path": "/data/k", "value": "v"}, {"op": "replace", "path": "/data/k", "value": "x"}])).unwrap();
    let err = api_error(
        cms.patch("m", &PatchParams::default(), &Patch::Json::<()>(test_bad))
            .await,
    );
    assert_eq!(err.code, 422);
    let merged = cms
        .patch(
            "m",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": null, "n": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.data.unwrap().into_iter().collect::<Vec<_>>(),
        [("n".to_string(), "1".to_string())]
    );

    let api = subnets(&c.client).await;
    let name = unique("smp");
    api.create(&PostParams::default(), &subnet(&name, "10.21.0.0/16"))
        .await
        .unwrap();
    let err = api_error(
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"disabled": true}})),
        )
        .await,
    );
    assert_eq!(
        (err.code, err.reason.as_str()),
        (415, "UnsupportedMediaType")
    );
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    test_support::delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn a_deleted_crd_takes_its_objects_and_resource_with_it() {
    let c = cluster().await;
    let crds: Api<CustomResourceDefinition> = Api::all(c.client.clone());
    let plural = unique("widgets").replace('-', "");
    // A kind of its own: a leftover CRD of an earlier run holding `Widget` in this group
    // would keep this one from being established.
    let kind = format!("Widget{}", &plural["widgets".len()..]);
    let group = "conformance.emulator.example.com";
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {"group": group, "scope": "Namespaced", "names": {"plural": plural, "singular": format!("{plural}s"), "kind": kind, "listKind": format!("{kind}List")},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}]},
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let established = wait_for(|| {
        let crds = crds.clone();
        let name = format!("{plural}.{group}");
        async move {
            let c = crds.get(&name).await.ok()?;
            c.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        }
    })
    .await;
    assert!(established.is_some());
    let ar = ApiResource {
        group: group.into(),
        version: "v1".into(),
        api_version: format!("{group}/v1"),
        kind: kind.clone(),
        plural: plural.clone(),
    };
    let ns = namespace(&c.client).await;
    let widgets: Api<DynamicObject> = Api::namespaced_with(c.client.clone(), &ns, &ar);
    let w: DynamicObject = serde_json::from_value(json!({"apiVersion": format!("{group}/v1"), "kind": kind, "metadata": {"name": "w"}, "spec": {"size": 3}})).unwrap();
    // The resource may take a moment to be served on a real cluster.
    let created = wait_for(|| {
        let widgets = widgets.clone();
        let w = w.clone();
        async move { widgets.create(&PostParams::default(), &w).await.ok() }
    })
    .await;
    assert_eq!(created.unwrap().data["spec"]["size"], 3);
    let from = widgets
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut watch = widgets
        .watch(&WatchParams::default().timeout(60), &from)
        .await
        .unwrap()
        .boxed();
    crds.delete(&format!("{plural}.{group}"), &DeleteParams::default())
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        let mut deleted = false;
        while let Ok(Some(event)) = watch.try_next().await {
            deleted |= matches!(event, WatchEvent::Deleted(_));
        }
        deleted
    })
    .await;
    assert_eq!(
        ended,
        Ok(true),
        "the watch sees the object go, then ends with its resource"
    );
    let gone = wait_for(|| {
        let widgets = widgets.clone();
        async move {
            matches!(widgets.get("w").await, Err(kube::Error::Api(e)) if e.code == 404)
                .then_some(())
        }
    })
    .await;
    assert!(gone.is_some(), "the CRD's objects go with it");
    test_support::delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn a_crd_whose_kind_is_taken_in_its_group_is_never_established() {
    let c = cluster().await;
    let crds: Api<CustomResourceDefinition> = Api::all(c.client.clone());
    let id = unique("g").replace('-', "");
    let kind = format!("Gadget{}", &id[1..]);
    let group = "names.emulator.example.com";
    let crd = |plural: &str| -> CustomResourceDefinition {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{plural}.{group}")},
            "spec": {"group": group, "scope": "Cluster", "names": {"plural": plural, "kind": kind, "listKind": format!("{kind}List")},
                "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]},
        }))
        .unwrap()
    };
    let first = format!("{id}a");
    let second = format!("{id}b");
    let condition = |name: String, ty: &'static str| {
        let crds = crds.clone();
        async move {
            let crd = crds.get(&name).await.ok()?;
            crd.status?.conditions?.into_iter().find(|c| c.type_ == ty)
        }
    };
    crds.create(&PostParams::default(), &crd(&first))
        .await
        .unwrap();
    let established = wait_for(|| {
        let name = format!("{first}.{group}");
        async move {
            condition(name, "Established")
                .await
                .filter(|c| c.status == "True")
        }
    })
    .await;
    assert!(established.is_some());
    crds.create(&PostParams::default(), &crd(&second))
        .await
        .unwrap();
    let refused = wait_for(|| {
        let name = format!("{second}.{group}");
        async move {
            condition(name, "NamesAccepted")
                .await
                .filter(|c| c.status == "False")
        }
    })
    .await
    .expect("the second CRD's names are refused");
    // Kind and list kind are both taken; the real controller reports the last.
    assert_eq!(refused.reason.as_deref(), Some("ListKindConflict"));
    assert_eq!(
        refused.message.as_deref(),
        Some(format!("\"{kind}List\" is already in use").as_str())
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let not_established = condition(format!("{second}.{group}"), "Established").await;
    assert!(
        not_established.as_ref().is_none_or(|c| c.status != "True"),
        "{not_established:?}"
    );
    for name in [&second, &first] {
        crds.delete(&format!("{name}.{group}"), &DeleteParams::default())
            .await
            .unwrap();
        let gone = wait_for(|| {
            let crds = crds.clone();
            let name = format!("{name}.{group}");
            async move { crds.get_opt(&name).await.unwrap().is_none().then_some(()) }
        })
        .await;
        assert!(gone.is_some(), "{name} is deleted");
    }
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_content() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    api.create(&PostParams::default(), &configmap("x", json!({})))
        .await
        .unwrap();
    test_support::delete_namespace(&c.client, &ns).await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c.client.clone());
    let gone = wait_for(|| {
        let namespaces = namespaces.clone();
        let ns = ns.clone();
        async move {
            namespaces
                .get_opt(&ns)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await;
    assert!(gone.is_some(), "the namespace finishes terminating");
    assert_eq!(api_error(api.get("x").await).code, 404);
}

#[tokio::test]
async fn tables_show_printer_columns() {
    let c = cluster().await;
    let api = subnets(&c.client).await;
    let name = unique("table");
    api.create(&PostParams::default(), &subnet(&name, "10.22.0.0/16"))
        .await
        .unwrap();
    let req = http::Request::get(format!("/apis/emulator.example.com/v1/subnets/{name}"))
        .header(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(Vec::new())
        .unwrap();
    let table: Value = c.client.request(req).await.unwrap();
    assert_eq!(table["kind"], "Table");
    let columns: Vec<_> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        columns,
        ["Name", "CIDR", "Allocated", "Free", "Ready", "Age"]
    );
    assert_eq!(table["rows"][0]["cells"][0], name.as_str());
    assert_eq!(table["rows"][0]["cells"][1], "10.22.0.0/16");
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn table_cells_of_values_that_are_null_or_absent() {
    let c = cluster().await;
    let api = subnets(&c.client).await;
    let raw: Api<DynamicObject> = Api::all_with(
        c.client.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, "v1", "Subnet")),
    );
    let name = unique("table-null");
    api.create(&PostParams::default(), &subnet(&name, "10.23.0.0/16"))
        .await
        .unwrap();
    // A merge patch would delete a null: the status is replaced whole instead.
    let mut obj = raw.get(&name).await.unwrap();
    obj.data["status"] = json!({"allocated": null});
    let written = raw
        .replace_status(&name, &PostParams::default(), &obj)
        .await
        .unwrap();
    let status = &written.data["status"];
    assert!(
        status["allocated"].is_null() && status.get("allocated").is_some(),
        "a nullable field keeps its null: {status}"
    );
    assert!(status.get("free").is_none(), "{status}");
    let req = http::Request::get(format!("/apis/emulator.example.com/v1/subnets/{name}"))
        .header(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(Vec::new())
        .unwrap();
    let table: Value = c.client.request(req).await.unwrap();
    let cells = &table["rows"][0]["cells"];
    // Name, CIDR, Allocated, Free, Ready, Age: a null prints as text/template's
    // `<no value>`; a field that is not there, or a filter matching nothing, is a null cell.
    assert_eq!(cells[2], "<no value>", "{cells}");
    assert!(cells[3].is_null(), "{cells}");
    assert!(cells[4].is_null(), "{cells}");
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

// ---- Fault injection: emulator only ----

macro_rules! emulator_only {
    ($c:expr) => {
        match &$c.emulator {
            Some(e) => e,
            None => {
                test_support::skip("fault injection needs the emulator (IPLEDGER_TEST_KUBECONFIG names a real cluster)");
                return;
            }
        }
    };
}

#[tokio::test]
async fn injected_write_failures_come_back_as_statuses() {
    let c = cluster().await;
    let emulator = emulator_only!(c);
    let api = subnets(&c.client).await;
    let name = unique("fault");
    emulator.faults().fail_next_writes("subnets", 1, 409);
    emulator.faults().fail_next_writes("subnets", 1, 500);
    for code in [409, 500] {
        let err = api_error(
            api.create(&PostParams::default(), &subnet(&name, "10.23.0.0/16"))
                .await,
        );
        assert_eq!(err.code, code);
    }
    assert_eq!(
        api_error(api.get(&name).await).code,
        404,
        "failed creates store nothing"
    );
    // Without retries a 503 surfaces; kube-rs's default client retries it away.
    let bare: Api<Subnet> = Api::all(test_support::client_without_retries(&c).await);
    emulator.faults().fail_next_writes("subnets", 1, 503);
    let err = api_error(
        bare.create(&PostParams::default(), &subnet(&name, "10.23.0.0/16"))
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (503, "ServiceUnavailable"));
    emulator.faults().fail_next_writes("subnets", 1, 503);
    api.create(&PostParams::default(), &subnet(&name, "10.23.0.0/16"))
        .await
        .unwrap();
    emulator.faults().fail_next_writes("subnets", 1, 409);
    let err = api_error(
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"disabled": true}})),
        )
        .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        !api.get(&name).await.unwrap().spec.disabled,
        "a failed write changes nothing"
    );
}

#[tokio::test]
async fn injected_delay_slows_responses() {
    let c = cluster().await;
    let emulator = emulator_only!(c);
    let api: Api<ConfigMap> = Api::default_namespaced(c.client.clone());
    emulator
        .faults()
        .delay_responses(Duration::from_millis(300));
    let started = std::time::Instant::now();
    api.list(&ListParams::default()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    emulator.faults().delay_responses(Duration::ZERO);
}

#[tokio::test]
async fn dropped_watches_end_and_compaction_answers_410() {
    let c = cluster().await;
    let emulator = emulator_only!(c);
    let ns = namespace(&c.client).await;
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    let from = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(
            &WatchParams::default().disable_bookmarks().timeout(30),
            &from,
        )
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &configmap("a", json!({})))
        .await
        .unwrap();
    assert!(matches!(
        stream.try_next().await.unwrap(),
        Some(WatchEvent::Added(_))
    ));
    emulator.faults().drop_watches();
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .expect("the watch ends");
    assert!(matches!(ended, Ok(None)), "{ended:?}");

    api.create(&PostParams::default(), &configmap("b", json!({})))
        .await
        .unwrap();
    emulator.faults().compact();
    let mut stream = api
        .watch(&WatchParams::default().timeout(10), &from)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
        }
        other => panic!("expected 410 Expired, got {other:?}"),
    }
}

#[tokio::test]
async fn concurrent_cas_writers_never_lose_an_update() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    let mut counter = configmap("counter", json!({}));
    counter.data = Some([("n".to_string(), "0".to_string())].into());
    api.create(&PostParams::default(), &counter).await.unwrap();
    let (writers, each) = (6, 15);
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move {
                let mut versions = Vec::new();
                for _ in 0..each {
                    loop {
                        let mut cm = api.get("counter").await.unwrap();
                        let data = cm.data.get_or_insert_default();
                        let n: u64 = data["n"].parse().unwrap();
                        data.insert("n".into(), (n + 1).to_string());
                        match api.replace("counter", &PostParams::default(), &cm).await {
                            Ok(written) => {
                                versions.push(rv(&written));
                                break;
                            }
                            Err(kube::Error::Api(e)) if e.code == 409 => continue,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                versions
            })
        })
        .collect();
    let mut versions = Vec::new();
    for t in tasks {
        versions.extend(t.await.unwrap());
    }
    let final_count: u64 = api.get("counter").await.unwrap().data.unwrap()["n"]
        .parse()
        .unwrap();
    assert_eq!(
        final_count,
        writers * each,
        "every successful CAS counted once"
    );
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(
        versions.len() as u64,
        writers * each,
        "every write got its own resourceVersion"
    );
    test_support::delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn a_patch_carrying_a_stale_resource_version_conflicts() {
    let c = cluster().await;
    let api = subnets(&c.client).await;
    let name = unique("patchrv");
    let created = api
        .create(&PostParams::default(), &subnet(&name, "10.24.0.0/16"))
        .await
        .unwrap();
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"disabled": true}})),
    )
    .await
    .unwrap();
    let stale = json!({"metadata": {"resourceVersion": created.resource_version()}, "spec": {"default": true}});
    let err = api_error(
        api.patch(&name, &PatchParams::default(), &Patch::Merge(stale))
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn kube_runtime_watcher_lists_then_follows_changes() {
    use kube::runtime::watcher;
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    api.create(&PostParams::default(), &configmap("before", json!({})))
        .await
        .unwrap();
    for config in [
        watcher::Config::default(),
        watcher::Config::default().streaming_lists(),
    ] {
        let streaming = config.initial_list_strategy == watcher::InitialListStrategy::StreamingList;
        let mut events = watcher(api.clone(), config).boxed();
        let mut initial = Vec::new();
        let listed = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match events.try_next().await? {
                    Some(watcher::Event::Init) => {}
                    Some(watcher::Event::InitApply(o)) => initial.push(o.name_any()),
                    Some(watcher::Event::InitDone) => return Ok::<(), watcher::Error>(()),
                    Some(other) => {
                        panic!(
                            "unexpected {other:?} before InitDone (streaming lists: {streaming})"
                        )
                    }
                    None => panic!("the watcher ended before InitDone"),
                }
            }
        })
        .await;
        if streaming && !c.is_emulator() {
            // Streaming lists need the server's WatchList feature, and storage that can
            // request watch progress: without it the watch is a 500 "... the required
            // storage feature RequestWatchProgress is disabled".
            let unsupported = match &listed {
                Err(_) => Some("does not finish streaming lists (WatchList feature off?)"),
                Ok(Err(e)) if format!("{e:?}").contains("RequestWatchProgress") => {
                    Some("refuses streaming lists (storage without RequestWatchProgress)")
                }
                Ok(_) => None,
            };
            if let Some(why) = unsupported {
                test_support::skip(&format!("this cluster {why}"));
                continue;
            }
        }
        listed
            .expect("the initial list completes")
            .expect("the watcher lists without error");
        assert!(initial.contains(&"before".to_string()), "{initial:?}");
        let name = format!("after-{streaming}");
        api.create(&PostParams::default(), &configmap(&name, json!({})))
            .await
            .unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let watcher::Event::Apply(o) = events.try_next().await.unwrap().unwrap()
                    && o.name_any() == name
                {
                    return o;
                }
            }
        })
        .await
        .expect("the watcher sees the new object");
        assert_eq!(seen.name_any(), name);
    }
    test_support::delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn kube_runtime_watcher_recovers_from_dropped_watches_and_compaction() {
    use kube::runtime::watcher;
    let c = cluster().await;
    let emulator = emulator_only!(c);
    let ns = namespace(&c.client).await;
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    while !matches!(
        events.try_next().await.unwrap().unwrap(),
        watcher::Event::InitDone
    ) {}
    for (i, fault) in ["drop", "compact"].into_iter().enumerate() {
        match fault {
            "drop" => emulator.faults().drop_watches(),
            _ => {
                emulator.faults().compact();
                emulator.faults().drop_watches();
            }
        }
        let name = format!("after-{i}");
        api.create(&PostParams::default(), &configmap(&name, json!({})))
            .await
            .unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match events.try_next().await {
                    Ok(Some(watcher::Event::Apply(o) | watcher::Event::InitApply(o)))
                        if o.name_any() == name =>
                    {
                        return;
                    }
                    Ok(_) => {}
                    // A 410 surfaces once as an error; the watcher then re-lists.
                    Err(_) => {}
                }
            }
        })
        .await;
        assert!(seen.is_ok(), "the watcher recovers after {fault}");
    }
}

#[tokio::test]
async fn self_subject_access_review_is_answered() {
    let c = cluster().await;
    let req = http::Request::post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {"resourceAttributes": {"verb": "get", "resource": "pods", "namespace": "default"}}})).unwrap())
        .unwrap();
    let review: Value = c.client.request(req).await.unwrap();
    assert_eq!(review["kind"], "SelfSubjectAccessReview");
    assert!(review["status"]["allowed"].is_boolean());
}

#[tokio::test]
async fn unknown_tokens_are_401_and_anonymous_requests_403() {
    let c = test_support::cluster_with(kube_emulator::Config {
        forbid_anonymous: true,
        ..Default::default()
    })
    .await;
    // A client without the cluster's credentials is only easy to make for the emulator.
    let emulator = emulator_only!(c);
    let known: Api<ConfigMap> = Api::default_namespaced(c.client.clone());
    known.list(&ListParams::default()).await.unwrap();
    let client = |token: Option<&str>| {
        let mut config = kube::Config::new(emulator.url().parse().unwrap());
        config.auth_info.token = token.map(|t| t.to_string().into());
        Client::try_from(config).unwrap()
    };
    let stranger: Api<ConfigMap> = Api::namespaced(client(Some("not-a-known-token")), "default");
    let err = api_error(stranger.list(&ListParams::default()).await);
    assert_eq!(
        (err.code, err.reason.as_str(), err.message.as_str()),
        (401, "Unauthorized", "Unauthorized")
    );
    let anonymous = client(None);
    let nobody: Api<ConfigMap> = Api::namespaced(anonymous.clone(), "default");
    let err = api_error(nobody.list(&ListParams::default()).await);
    assert_eq!(
        (err.code, err.reason.as_str(), err.message.as_str()),
        (
            403,
            "Forbidden",
            "configmaps is forbidden: User \"system:anonymous\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"default\""
        )
    );
    // The public version and health endpoints stay open.
    anonymous.apiserver_version().await.unwrap();
    let permissive = test_support::cluster_with(kube_emulator::Config {
        accept_unknown_tokens: true,
        ..Default::default()
    })
    .await;
    let emulator = permissive.emulator.as_ref().unwrap();
    let mut config = kube::Config::new(emulator.url().parse().unwrap());
    config.auth_info.token = Some("not-a-known-token".to_string().into());
    let trusted: Api<ConfigMap> = Api::namespaced(Client::try_from(config).unwrap(), "default");
    trusted.list(&ListParams::default()).await.unwrap();
}

#[tokio::test]
async fn continued_lists_are_consistent_with_their_first_page() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    // Leases: no controller adds any to a new namespace (a real one gets a ConfigMap).
    let api: Api<Lease> = Api::namespaced(c.client.clone(), &ns);
    for name in ["a", "b", "c"] {
        api.create(&PostParams::default(), &lease(name, json!({})))
            .await
            .unwrap();
    }
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    let names: Vec<_> = first.iter().map(|c| c.name_any()).collect();
    assert_eq!(names, ["a", "b"]);
    api.delete("c", &DeleteParams::default()).await.unwrap();
    api.create(&PostParams::default(), &lease("d", json!({})))
        .await
        .unwrap();
    let token = first.metadata.continue_.unwrap();
    let rest = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    let names: Vec<_> = rest.iter().map(|c| c.name_any()).collect();
    assert_eq!(
        names,
        ["c"],
        "the second page reads the first page's snapshot"
    );
    assert_eq!(
        rest.metadata.resource_version,
        first.metadata.resource_version
    );
    test_support::delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn delete_collection_removes_what_the_selector_matches() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    // Leases: no controller adds any to a new namespace (a real one gets a ConfigMap).
    let api: Api<Lease> = Api::namespaced(c.client.clone(), &ns);
    for (name, labels) in [
        ("a", json!({"drop": "yes"})),
        ("b", json!({"drop": "yes"})),
        ("c", json!({})),
    ] {
        api.create(&PostParams::default(), &lease(name, labels))
            .await
            .unwrap();
    }
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("drop=yes"),
    )
    .await
    .unwrap();
    let left: Vec<_> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert_eq!(left, ["c"]);
    test_support::delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn builtin_status_subresource_keeps_spec_and_status_apart() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "one"}]}, "status": {"phase": "Running"}})).unwrap();
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(
        created.status.unwrap().phase.as_deref(),
        Some("Pending"),
        "create ignores status"
    );
    let running = pods
        .patch_status(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}, "spec": {"containers": [{"name": "a", "image": "two"}]}})),
        )
        .await
        .unwrap();
    assert_eq!(running.status.unwrap().phase.as_deref(), Some("Running"));
    let image = running.spec.unwrap().containers[0].image.clone();
    assert_eq!(image.as_deref(), Some("one"), "status writes ignore spec");
    test_support::delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn server_side_apply_creates_merges_and_drops_what_is_no_longer_applied() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    let ssa = PatchParams::apply("conformance");
    let first = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"k": "v", "old": "x"}});
    let created = api.patch("ssa", &ssa, &Patch::Apply(&first)).await.unwrap();
    assert_eq!(created.data.clone().unwrap().len(), 2);
    let managers: Vec<_> = created
        .metadata
        .managed_fields
        .unwrap_or_default()
        .iter()
        .map(|m| m.manager.clone().unwrap_or_default())
        .collect();
    assert!(
        managers.contains(&"conformance".to_string()),
        "{managers:?}"
    );
    api.patch(
        "ssa",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"theirs": "y"}})),
    )
    .await
    .unwrap();
    let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"k": "v2"}});
    let applied = api
        .patch("ssa", &ssa, &Patch::Apply(&second))
        .await
        .unwrap();
    let data = applied.data.unwrap();
    assert_eq!(data.get("k").map(String::as_str), Some("v2"));
    assert!(
        !data.contains_key("old"),
        "a field no longer applied is removed"
    );
    assert_eq!(
        data.get("theirs").map(String::as_str),
        Some("y"),
        "fields of other writers stay"
    );
    let err = api_error(
        api.patch("ssa", &PatchParams::default(), &Patch::Apply(&second))
            .await,
    );
    assert_eq!(err.code, 422, "apply needs a field manager");
    test_support::delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn creating_with_a_resource_version_is_refused() {
    let c = cluster().await;
    let api = subnets(&c.client).await;
    let mut p = subnet(&unique("withrv"), "10.25.0.0/16");
    p.metadata.resource_version = Some("12345".into());
    let err = api_error(api.create(&PostParams::default(), &p).await);
    assert_eq!(err.code, 500);
    assert!(
        err.message
            .contains("resourceVersion should not be set on objects to be created"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn lists_read_an_exact_resource_version_and_refuse_future_ones() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let api: Api<Lease> = Api::namespaced(c.client.clone(), &ns);
    api.create(&PostParams::default(), &lease("a", json!({})))
        .await
        .unwrap();
    let at = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    api.create(&PostParams::default(), &lease("b", json!({})))
        .await
        .unwrap();
    let exact = api
        .list(
            &ListParams::default()
                .at(&at)
                .matching(kube::api::VersionMatch::Exact),
        )
        .await
        .unwrap();
    let names: Vec<_> = exact.iter().map(|l| l.name_any()).collect();
    assert_eq!(names, ["a"], "the list at {at} does not see b yet");
    let future = (at.parse::<u64>().unwrap() + 1_000_000).to_string();
    let plain = test_support::client_without_retries(&c).await;
    let api: Api<Lease> = Api::namespaced(plain.clone(), &ns);
    // The server waits for its cache to catch up (about 3 s), then gives up.
    let started = std::time::Instant::now();
    let err = api_error(
        api.list(
            &ListParams::default()
                .at(&future)
                .matching(kube::api::VersionMatch::NotOlderThan),
        )
        .await,
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((err.code, err.reason.as_str()), (504, "Timeout"));
    assert!(
        err.message
            .starts_with(&format!("Too large resource version: {future}, current: ")),
        "{}",
        err.message
    );
    assert_eq!(err.details.unwrap().retry_after_seconds, 1);
    let req = http::Request::get(format!(
        "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases?resourceVersion={future}"
    ))
    .body(Vec::new())
    .unwrap();
    let resp = plain.send(req.map(kube::client::Body::from)).await.unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(resp.headers()["retry-after"], "1");
    let err = api_error(
        api.list(
            &ListParams::default()
                .at(&future)
                .matching(kube::api::VersionMatch::Exact),
        )
        .await,
    );
    assert_eq!(err.code, 504);
    assert_eq!(err.details.unwrap().retry_after_seconds, 0);
    test_support::delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn server_side_apply_reports_conflicts_between_managers_unless_forced() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    let mine = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared"}, "data": {"k": "1"}});
    api.patch("shared", &PatchParams::apply("first"), &Patch::Apply(&mine))
        .await
        .unwrap();
    let theirs = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared"}, "data": {"k": "2"}});
    let err = api_error(
        api.patch(
            "shared",
            &PatchParams::apply("second"),
            &Patch::Apply(&theirs),
        )
        .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message
            .starts_with("Apply failed with 1 conflict: conflict with \"first\""),
        "{}",
        err.message
    );
    let forced = api
        .patch(
            "shared",
            &PatchParams::apply("second").force(),
            &Patch::Apply(&theirs),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["k"], "2");
    test_support::delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn events_are_one_resource_in_two_api_groups() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event;
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let events: Api<Event> = Api::namespaced(c.client.clone(), &ns);
    let core: Api<CoreEvent> = Api::namespaced(c.client.clone(), &ns);
    let event: Event = serde_json::from_value(json!({
        "metadata": {"name": "subnet-full"},
        "eventTime": "2024-01-01T00:00:00.000000Z",
        "regarding": {"apiVersion": "v1", "kind": "ConfigMap", "namespace": ns, "name": "p"},
        "reason": "SubnetExhausted", "note": "all 254 addresses are in use", "type": "Warning",
        "action": "Allocate", "reportingController": "emulator.example.com/controller", "reportingInstance": "controller-0",
    }))
    .unwrap();
    events.create(&PostParams::default(), &event).await.unwrap();
    let seen = core
        .list(&ListParams::default().fields("involvedObject.name=p"))
        .await
        .unwrap();
    assert_eq!(seen.items.len(), 1);
    assert_eq!(
        seen.items[0].message.as_deref(),
        Some("all 254 addresses are in use")
    );
    assert_eq!(
        seen.items[0].involved_object.kind.as_deref(),
        Some("ConfigMap")
    );
    let back = events.get("subnet-full").await.unwrap();
    assert_eq!(back.note.as_deref(), Some("all 254 addresses are in use"));
    assert_eq!(back.regarding.unwrap().name.as_deref(), Some("p"));
    test_support::delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn event_managed_fields_name_the_version_they_were_written_in() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event;
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let events: Api<Event> = Api::namespaced(c.client.clone(), &ns);
    let core: Api<CoreEvent> = Api::namespaced(c.client.clone(), &ns);
    let through_events: Event = serde_json::from_value(json!({
        "metadata": {"name": "through-events"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "regarding": {"apiVersion": "v1", "kind": "ConfigMap", "namespace": ns, "name": "c"},
        "reason": "Tested", "note": "n", "type": "Normal", "action": "Test",
        "reportingController": "emulator.example.com/conformance", "reportingInstance": "conformance-0",
    }))
    .unwrap();
    events
        .create(&PostParams::default(), &through_events)
        .await
        .unwrap();
    let through_core: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": "through-core"},
        "involvedObject": {"apiVersion": "v1", "kind": "ConfigMap", "namespace": ns, "name": "c"},
        "reason": "Tested", "message": "m", "type": "Normal",
    }))
    .unwrap();
    core.create(&PostParams::default(), &through_core)
        .await
        .unwrap();
    // The entry records the request's version, with the field names of that version,
    // whichever group the Event is read through.
    let entry = |fields: &Option<Vec<_>>| {
        let entry: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry =
            &fields.as_ref().expect("managedFields")[0];
        let names = entry.fields_v1.as_ref().expect("fieldsV1").0.clone();
        (entry.api_version.clone().unwrap_or_default(), names)
    };
    let (version, fields) = entry(
        &events
            .get("through-events")
            .await
            .unwrap()
            .metadata
            .managed_fields,
    );
    assert_eq!(version, "events.k8s.io/v1");
    assert!(
        fields.get("f:note").is_some() && fields.get("f:message").is_none(),
        "{fields}"
    );
    let (version, _) = entry(
        &core
            .get("through-events")
            .await
            .unwrap()
            .metadata
            .managed_fields,
    );
    assert_eq!(version, "events.k8s.io/v1");
    let (version, fields) = entry(
        &events
            .get("through-core")
            .await
            .unwrap()
            .metadata
            .managed_fields,
    );
    assert_eq!(version, "v1");
    assert!(
        fields.get("f:message").is_some() && fields.get("f:note").is_none(),
        "{fields}"
    );
    test_support::delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn leases_need_microsecond_times_and_a_positive_duration() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let raw: Api<DynamicObject> =
        Api::namespaced_with(c.client.clone(), &ns, &ApiResource::erase::<Lease>(&()));
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), &ns);
    let lease = |name: &str, spec: Value| -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name}, "spec": spec})).unwrap()
    };
    // MicroTime has exactly six fractional digits; seconds precision does not decode.
    let seconds = lease(
        "seconds",
        json!({"holderIdentity": "a", "renewTime": "2026-01-01T10:00:20Z"}),
    );
    let err = api_error(raw.create(&PostParams::default(), &seconds).await);
    assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"));
    assert_eq!(
        err.message,
        "Lease in version \"v1\" cannot be handled as a Lease: parsing time \"2026-01-01T10:00:20Z\" as \"2006-01-02T15:04:05.000000Z07:00\": cannot parse \"Z\" as \".000000\""
    );
    let zero = lease(
        "zero",
        json!({"holderIdentity": "a", "leaseDurationSeconds": 0}),
    );
    let err = api_error(raw.create(&PostParams::default(), &zero).await);
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        err.message,
        "Lease.coordination.k8s.io \"zero\" is invalid: spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"
    );
    // What a typed client writes is fine, and the same rules hold on update.
    let good = lease(
        "good",
        json!({"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": "2026-01-01T10:00:20.000000Z", "leaseTransitions": 0}),
    );
    raw.create(&PostParams::default(), &good).await.unwrap();
    let mut typed = leases.get("good").await.unwrap();
    typed.spec.as_mut().unwrap().lease_transitions = Some(-1);
    let err = api_error(leases.replace("good", &PostParams::default(), &typed).await);
    assert_eq!(
        err.message,
        "Lease.coordination.k8s.io \"good\" is invalid: spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0"
    );
    let err = api_error(
        leases
            .patch(
                "good",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"acquireTime": "2026-01-01T10:00:20Z"}})),
            )
            .await,
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains("cannot parse \"Z\" as \".000000\""),
        "{}",
        err.message
    );
    test_support::delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn events_are_validated_as_the_real_server_validates_them() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event;
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let core: Api<DynamicObject> =
        Api::namespaced_with(c.client.clone(), &ns, &ApiResource::erase::<CoreEvent>(&()));
    let v1: Api<DynamicObject> =
        Api::namespaced_with(c.client.clone(), &ns, &ApiResource::erase::<Event>(&()));
    let event = |api_version: &str, name: &str, rest: Value| -> DynamicObject {
        let mut obj =
            json!({"apiVersion": api_version, "kind": "Event", "metadata": {"name": name}});
        obj.as_object_mut()
            .unwrap()
            .extend(rest.as_object().unwrap().clone());
        serde_json::from_value(obj).unwrap()
    };
    let refused = |e: kube::core::Status| (e.code, e.reason, e.message);
    let mismatch = |name: &str, value: &str| {
        (
            422,
            "Invalid".to_string(),
            format!(
                "Event \"{name}\" is invalid: involvedObject.namespace: Invalid value: \"{value}\": does not match event.namespace"
            ),
        )
    };

    // core/v1: the involved object's namespace must be the event's (a cluster-scoped
    // one's events belong in `default`); an event with nothing but metadata fails so too.
    let cluster_scoped = event(
        "v1",
        "cluster-scoped",
        json!({"involvedObject": {"kind": "Node", "name": "n1"}, "reason": "Tested", "message": "m", "type": "Normal"}),
    );
    let err = api_error(core.create(&PostParams::default(), &cluster_scoped).await);
    assert_eq!(refused(err), mismatch("cluster-scoped", ""));
    let elsewhere = event(
        "v1",
        "elsewhere",
        json!({"involvedObject": {"kind": "ConfigMap", "namespace": "default", "name": "c"}, "reason": "Tested"}),
    );
    let err = api_error(core.create(&PostParams::default(), &elsewhere).await);
    assert_eq!(refused(err), mismatch("elsewhere", "default"));
    let bare = event("v1", "bare", json!({}));
    let err = api_error(core.create(&PostParams::default(), &bare).await);
    assert_eq!(refused(err), mismatch("bare", ""));
    let fine = event(
        "v1",
        "fine",
        json!({"involvedObject": {"kind": "ConfigMap", "namespace": ns, "name": "c"}, "reason": "Tested", "message": "m", "type": "Normal"}),
    );
    core.create(&PostParams::default(), &fine).await.unwrap();

    // events.k8s.io/v1 is stricter: eventTime is required and type is Normal or Warning.
    let regarding = json!({"kind": "ConfigMap", "namespace": ns, "name": "c"});
    let untimed = event(
        "events.k8s.io/v1",
        "untimed",
        json!({"regarding": regarding, "reason": "Tested", "note": "n", "type": "Normal"}),
    );
    let err = api_error(v1.create(&PostParams::default(), &untimed).await);
    assert_eq!(
        refused(err),
        (
            422,
            "Invalid".to_string(),
            "Event \"untimed\" is invalid: eventTime: Required value".to_string()
        )
    );
    let timed = |name: &str, ty: &str| {
        event(
            "events.k8s.io/v1",
            name,
            json!({"regarding": regarding, "reason": "Tested", "note": "n", "type": ty,
                "eventTime": "2026-01-01T00:00:00.000000Z", "action": "Test",
                "reportingController": "emulator.example.com/conformance", "reportingInstance": "conformance-0"}),
        )
    };
    let err = api_error(
        v1.create(&PostParams::default(), &timed("bogus", "Bogus"))
            .await,
    );
    assert_eq!(
        refused(err),
        (
            422,
            "Invalid".to_string(),
            "Event \"bogus\" is invalid: type: Invalid value: \"\": has invalid value: Bogus"
                .to_string()
        )
    );
    v1.create(&PostParams::default(), &timed("normal", "Normal"))
        .await
        .unwrap();
    test_support::delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn a_watch_sees_every_concurrent_write_once_in_resource_version_order() {
    let c = cluster().await;
    let ns = namespace(&c.client).await;
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    let (writers, each) = (4usize, 15usize);
    for w in 0..writers {
        api.create(
            &PostParams::default(),
            &configmap(&format!("w{w}"), json!({})),
        )
        .await
        .unwrap();
    }
    let from = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(60), &from)
        .await
        .unwrap()
        .boxed();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let api = api.clone();
            tokio::spawn(async move {
                let mut written = Vec::new();
                for i in 0..each {
                    let mut cm = api.get(&format!("w{w}")).await.unwrap();
                    cm.data
                        .get_or_insert_default()
                        .insert("i".into(), i.to_string());
                    let out = api
                        .replace(&format!("w{w}"), &PostParams::default(), &cm)
                        .await
                        .unwrap();
                    written.push(rv(&out));
                }
                written
            })
        })
        .collect();
    let mut written = Vec::new();
    for t in tasks {
        written.extend(t.await.unwrap());
    }
    written.sort_unstable();
    let mut seen = Vec::new();
    while seen.len() < written.len() {
        let event = tokio::time::timeout(Duration::from_secs(30), stream.try_next())
            .await
            .expect("the watch keeps up")
            .unwrap()
            .expect("stream open");
        if let WatchEvent::Modified(o) = event
            && o.name_any().starts_with('w')
        {
            seen.push(rv(&o));
        }
    }
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "events arrive in resourceVersion order"
    );
    assert_eq!(seen, written, "every write is seen exactly once");
    test_support::delete_namespace(&c.client, &ns).await;
}

#[tokio::test]
async fn metadata_only_lists_and_watches_carry_just_metadata() {
    use kube::runtime::{WatchStreamExt, watcher};
    let c = cluster().await;
    let api = subnets(&c.client).await;
    let name = unique("meta");
    let mut p = subnet(&name, "10.26.0.0/16");
    p.metadata.labels = Some([("suite".to_string(), name.clone())].into());
    api.create(&PostParams::default(), &p).await.unwrap();
    let listed = api
        .list_metadata(&ListParams::default().labels(&format!("suite={name}")))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(
        listed.items[0].metadata.name.as_deref(),
        Some(name.as_str())
    );
    let req = http::Request::get(format!(
        "/apis/emulator.example.com/v1/subnets?labelSelector=suite%3D{name}"
    ))
    .header(
        "Accept",
        "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json",
    )
    .body(Vec::new())
    .unwrap();
    let raw: Value = c.client.request(req).await.unwrap();
    assert_eq!(raw["kind"], "PartialObjectMetadataList");
    assert_eq!(raw["items"][0]["kind"], "PartialObjectMetadata");
    assert!(raw["items"][0].get("spec").is_none(), "only metadata");
    let got = api.get_metadata(&name).await.unwrap();
    assert_eq!(got.metadata.uid, listed.items[0].metadata.uid);
    let meta_api: Api<kube::core::PartialObjectMeta<Subnet>> = Api::all(c.client.clone());
    let mut stream = watcher(
        meta_api,
        watcher::Config::default().labels(&format!("suite={name}")),
    )
    .applied_objects()
    .boxed();
    let first = tokio::time::timeout(Duration::from_secs(20), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some(name.as_str()));
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"seen": "yes"}}})),
    )
    .await
    .unwrap();
    let changed = tokio::time::timeout(Duration::from_secs(20), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        changed
            .metadata
            .annotations
            .unwrap_or_default()
            .get("seen")
            .map(String::as_str),
        Some("yes")
    );
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn kube_runtime_finalizer_helper_adds_and_removes_its_finalizer() {
    use kube::runtime::controller::Action;
    use kube::runtime::finalizer::{Event, finalizer};
    use std::sync::Arc;
    let c = cluster().await;
    let api = subnets(&c.client).await;
    let name = unique("finhelper");
    api.create(&PostParams::default(), &subnet(&name, "10.27.0.0/16"))
        .await
        .unwrap();
    let fin = "conformance.emulator.example.com/cleanup";
    let run = |obj: Subnet| {
        let api = api.clone();
        async move {
            finalizer(&api, fin, Arc::new(obj), |event| async move {
                Ok::<_, std::io::Error>(match event {
                    Event::Apply(_) | Event::Cleanup(_) => Action::await_change(),
                })
            })
            .await
        }
    };
    run(api.get(&name).await.unwrap())
        .await
        .expect("the finalizer is added");
    let held = api.get(&name).await.unwrap();
    assert_eq!(
        held.metadata.finalizers.as_deref(),
        Some(&[fin.to_string()][..])
    );
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    run(api.get(&name).await.unwrap())
        .await
        .expect("cleanup removes the finalizer");
    let gone = wait_for(|| {
        let api = api.clone();
        let name = name.clone();
        async move { api.get_opt(&name).await.unwrap().is_none().then_some(()) }
    })
    .await;
    assert!(
        gone.is_some(),
        "the subnet goes once its finalizer is removed"
    );
}

#[tokio::test]
async fn a_kube_runtime_controller_reconciles_against_it() {
    use kube::runtime::controller::Action;
    use kube::runtime::{Controller, watcher};
    use std::sync::Arc;
    let c = cluster().await;
    let api = subnets(&c.client).await;
    let name = unique("ctrl");
    let mut p = subnet(&name, "10.28.0.0/16");
    p.metadata.labels = Some([("suite".to_string(), name.clone())].into());
    api.create(&PostParams::default(), &p).await.unwrap();
    let reconcile = |subnet: Arc<Subnet>, api: Arc<Api<Subnet>>| async move {
        let generation = subnet.metadata.generation.unwrap_or_default();
        let status = json!({"status": {"observedGeneration": generation, "allocated": "0"}});
        api.patch_status(
            &subnet.name_any(),
            &PatchParams::default(),
            &Patch::Merge(status),
        )
        .await?;
        Ok::<_, kube::Error>(Action::await_change())
    };
    let controller = Controller::new(
        api.clone(),
        watcher::Config::default().labels(&format!("suite={name}")),
    )
    .run(
        reconcile,
        |_, _, _| Action::await_change(),
        Arc::new(api.clone()),
    )
    .for_each(|_| async {});
    let handle = tokio::spawn(controller);
    let observed = wait_for(|| {
        let api = api.clone();
        let name = name.clone();
        async move {
            let status = api.get(&name).await.ok()?.status?;
            (status.observed_generation == Some(1)).then_some(())
        }
    })
    .await;
    assert!(observed.is_some(), "the controller wrote the status");
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"disabled": true}})),
    )
    .await
    .unwrap();
    let again = wait_for(|| {
        let api = api.clone();
        let name = name.clone();
        async move {
            let status = api.get(&name).await.ok()?.status?;
            (status.observed_generation == Some(2)).then_some(())
        }
    })
    .await;
    assert!(again.is_some(), "a spec change is reconciled again");
    handle.abort();
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn kube_runtime_recorder_events_show_up_as_core_events() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let c = cluster().await;
    let api = subnets(&c.client).await;
    let name = unique("recorded");
    let created = api
        .create(&PostParams::default(), &subnet(&name, "10.29.0.0/16"))
        .await
        .unwrap();
    let recorder = Recorder::new(
        c.client.clone(),
        Reporter {
            controller: "emulator-conformance".into(),
            instance: Some("test-0".into()),
        },
    );
    let event = Event {
        type_: EventType::Warning,
        reason: "SubnetExhausted".into(),
        note: Some("no free address".into()),
        action: "Allocate".into(),
        secondary: None,
    };
    let reference = kube::Resource::object_ref(&created, &());
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();
    // Cluster-scoped objects' events land in `default`.
    let core: Api<CoreEvent> = Api::namespaced(c.client.clone(), "default");
    let seen = wait_for(|| {
        let core = core.clone();
        let name = name.clone();
        async move {
            let list = core
                .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
                .await
                .ok()?;
            list.items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("SubnetExhausted"))
        }
    })
    .await
    .expect("the event is visible through core/v1");
    assert_eq!(seen.message.as_deref(), Some("no free address"));
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn dry_runs_validate_and_answer_without_writing() {
    let c = cluster().await;
    let api = subnets(&c.client).await;
    let name = unique("dry");
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let answer = api
        .create(&dry, &subnet(&name, "10.30.0.0/16"))
        .await
        .unwrap();
    assert_eq!(answer.name_any(), name);
    assert!(
        api.get_opt(&name).await.unwrap().is_none(),
        "a dry-run create stores nothing"
    );
    let err = api_error(api.create(&dry, &subnet(&name, "10.30.0.1/16")).await);
    assert_eq!(err.code, 422, "a dry run still validates");

    let created = api
        .create(&PostParams::default(), &subnet(&name, "10.30.0.0/16"))
        .await
        .unwrap();
    let patched = api
        .patch(
            &name,
            &PatchParams::default().dry_run(),
            &Patch::Merge(json!({"spec": {"disabled": true}})),
        )
        .await
        .unwrap();
    assert!(patched.spec.disabled);
    assert_eq!(patched.resource_version(), created.resource_version());
    let stored = api.get(&name).await.unwrap();
    assert!(!stored.spec.disabled, "a dry-run patch changes nothing");
    assert_eq!(stored.resource_version(), created.resource_version());
    api.delete(
        &name,
        &DeleteParams {
            dry_run: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(
        api.get_opt(&name).await.unwrap().is_some(),
        "a dry-run delete deletes nothing"
    );
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let c = test_support::cluster_with(kube_emulator::Config {
        max_body: 64 * 1024,
        ..Default::default()
    })
    .await;
    let _emulator = emulator_only!(c);
    let ns = namespace(&c.client).await;
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    let mut big = configmap("big", json!({}));
    big.data = Some([("blob".to_string(), "x".repeat(100 * 1024))].into());
    let err = api_error(api.create(&PostParams::default(), &big).await);
    assert_eq!(
        (err.code, err.reason.as_str()),
        (413, "RequestEntityTooLarge")
    );
}
