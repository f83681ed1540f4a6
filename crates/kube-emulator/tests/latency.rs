//! Storage latency (`Config::write_latency`, `Config::read_latency`): writes wait as a real
//! server's wait for etcd, before they land; gets and lists wait a read's time; watches,
//! discovery and concurrent requests do not queue behind it. Emulator only.
//!
//! Lower bounds are tight; the few upper bounds sit far from the times they tell apart
//! (a wait that was skipped against one that was not), so a busy machine does not fail
//! them.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent};
use kube_emulator::{Config, Emulator};
use serde_json::json;

async fn emulator(write_latency: Duration, read_latency: Duration) -> Emulator {
    Emulator::start(Config {
        write_latency,
        read_latency,
        ..Config::default()
    })
    .await
    .unwrap()
}

fn configmap(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": "1"}})).unwrap()
}

/// How long `f` took, with its output.
async fn timed<T>(f: impl std::future::Future<Output = T>) -> (Duration, T) {
    let started = Instant::now();
    let out = f.await;
    (started.elapsed(), out)
}

#[test]
fn latency_is_off_by_default() {
    let config = Config::default();
    assert_eq!(config.write_latency, Duration::ZERO);
    assert_eq!(config.read_latency, Duration::ZERO);
}

#[tokio::test]
async fn every_kind_of_write_waits_the_write_latency() {
    let latency = Duration::from_millis(30);
    let emulator = emulator(latency, Duration::ZERO).await;
    let client = emulator.client();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());

    let (took, created) = timed(cms.create(&PostParams::default(), &configmap("a"))).await;
    let mut created = created.unwrap();
    assert!(took >= latency, "create took {took:?}");
    created.data = Some([("v".to_string(), "2".to_string())].into());
    let (took, replaced) = timed(cms.replace("a", &PostParams::default(), &created)).await;
    replaced.unwrap();
    assert!(took >= latency, "replace took {took:?}");
    let patch = Patch::Merge(json!({"data": {"v": "3"}}));
    let (took, patched) = timed(cms.patch("a", &PatchParams::default(), &patch)).await;
    patched.unwrap();
    assert!(took >= latency, "patch took {took:?}");
    let (took, deleted) = timed(cms.delete("a", &DeleteParams::default())).await;
    deleted.unwrap();
    assert!(took >= latency, "delete took {took:?}");

    // The status subresource is a write like any other.
    let namespaces: Api<Namespace> = Api::all(client);
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "slow"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let status = Patch::Merge(json!({"status": {"phase": "Active"}}));
    let (took, patched) =
        timed(namespaces.patch_status("slow", &PatchParams::default(), &status)).await;
    patched.unwrap();
    assert!(took >= latency, "status patch took {took:?}");
}

#[tokio::test]
async fn gets_and_lists_wait_the_read_latency() {
    let latency = Duration::from_millis(20);
    let emulator = emulator(Duration::ZERO, latency).await;
    let cms: Api<ConfigMap> = Api::default_namespaced(emulator.client());
    cms.create(&PostParams::default(), &configmap("a"))
        .await
        .unwrap();

    let (took, got) = timed(cms.get("a")).await;
    assert_eq!(got.unwrap().name_any(), "a");
    assert!(took >= latency, "get took {took:?}");
    let (took, listed) = timed(cms.list(&ListParams::default())).await;
    assert!(listed.unwrap().items.iter().any(|cm| cm.name_any() == "a"));
    assert!(took >= latency, "list took {took:?}");
    // A 404 is read from storage too.
    let (took, missing) = timed(cms.get("b")).await;
    assert!(matches!(missing, Err(kube::Error::Api(s)) if s.code == 404));
    assert!(took >= latency, "a missing get took {took:?}");
}

#[tokio::test]
async fn concurrent_writes_wait_side_by_side() {
    let latency = Duration::from_millis(30);
    let emulator = emulator(latency, Duration::ZERO).await;
    let cms: Api<ConfigMap> = Api::default_namespaced(emulator.client());
    // A first write opens a connection, so that the timed ones measure the server.
    cms.create(&PostParams::default(), &configmap("warm"))
        .await
        .unwrap();

    let (took, created) = timed(futures::future::join_all((0..8).map(|i| {
        let cms = cms.clone();
        async move {
            cms.create(&PostParams::default(), &configmap(&format!("c{i}")))
                .await
        }
    })))
    .await;
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    assert!(took >= latency, "8 writes took {took:?}");
    // In series they would take 240 ms.
    assert!(
        took < Duration::from_millis(200),
        "8 concurrent writes took {took:?}: they queued behind each other's latency"
    );
}

#[tokio::test]
async fn dry_runs_wait_the_read_latency_as_they_persist_nothing() {
    let write = Duration::from_millis(500);
    let read = Duration::from_millis(20);
    let emulator = emulator(write, read).await;
    let cms: Api<ConfigMap> = Api::default_namespaced(emulator.client());
    cms.create(&PostParams::default(), &configmap("a"))
        .await
        .unwrap();
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let (took, created) = timed(cms.create(&dry, &configmap("b"))).await;
    created.unwrap();
    assert!(took >= read, "a dry-run create took {took:?}");
    // kube-rs asks for a dry-run delete in the DeleteOptions body, not the query.
    let (took, deleted) = timed(cms.delete(
        "a",
        &DeleteParams {
            dry_run: true,
            ..Default::default()
        },
    ))
    .await;
    deleted.unwrap();
    assert!(took >= read, "a dry-run delete took {took:?}");
    let log = emulator.audit();
    let dry_runs: Vec<_> = log.iter().filter(|e| e.dry_run).collect();
    assert_eq!(dry_runs.len(), 2, "{log:?}");
    for e in dry_runs {
        // Measured in the server: not a full write latency.
        let served = e.answered - e.received;
        assert!(
            served < write,
            "a dry-run {} was served in {served:?}",
            e.verb
        );
    }
}

#[tokio::test]
async fn watches_and_discovery_do_not_wait_and_writes_land_after_their_wait() {
    let latency = Duration::from_millis(300);
    let emulator = emulator(latency, latency).await;
    let client = emulator.client();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());

    let discovery = Instant::now();
    client.apiserver_version().await.unwrap();
    client.list_core_api_versions().await.unwrap();
    client.list_api_groups().await.unwrap();
    client.list_core_api_resources("v1").await.unwrap();
    let discovery = discovery.elapsed();
    assert!(
        discovery < latency,
        "four discovery requests took {discovery:?}"
    );

    let mut stream = cms.watch(&Default::default(), "0").await.unwrap().boxed();
    let log = emulator.audit();
    let watch = log
        .iter()
        .find(|e| e.verb == "watch")
        .expect("the watch is recorded");
    let served = watch.answered - watch.received;
    assert!(served < latency, "the watch's head took {served:?}");

    let sent = Instant::now();
    let create = tokio::spawn({
        let cms = cms.clone();
        async move { cms.create(&PostParams::default(), &configmap("w")).await }
    });
    let added = loop {
        match stream.try_next().await.unwrap() {
            Some(WatchEvent::Added(cm)) if cm.name_any() == "w" => break sent.elapsed(),
            Some(_) => {}
            None => panic!("the watch ended"),
        }
    };
    create.await.unwrap().unwrap();
    // The write waits before the store applies it, so no watcher sees it earlier.
    assert!(added >= latency, "the ADDED event came after {added:?}");
    // The event is not delayed once more on its way to the watcher.
    assert!(
        added < latency * 2,
        "the ADDED event came after {added:?}: delayed as a second write"
    );
}
