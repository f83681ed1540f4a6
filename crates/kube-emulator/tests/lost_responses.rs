//! Writes that land but whose answer is lost (`Faults::lose_next_write_responses`): the
//! client sees an error — a dropped connection or a 5xx — yet the write is in the store
//! and its watch event goes out, and a retry carrying the old resourceVersion gets 409.

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, PostParams, WatchEvent, WatchParams};
use kube::{Client, ResourceExt};
use kube_emulator::{Config, Emulator, LostResponse};
use serde_json::json;

fn configmap(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": value}})).unwrap()
}

fn value(cm: &ConfigMap) -> &str {
    cm.data.as_ref().and_then(|d| d.get("v")).unwrap()
}

/// A client that does not retry 503/504 (kube-rs's default client does, up to 15 times).
fn client_without_retries(emulator: &Emulator) -> Client {
    let mut config = kube::Config::new(emulator.url().parse().unwrap());
    config.auth_info.token = Some(kube_emulator::ADMIN_TOKEN.to_string().into());
    config.default_retry = false;
    Client::try_from(config).unwrap()
}

fn api_code<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.reason),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_replace_whose_connection_drops_landed_and_its_retry_conflicts() {
    let emulator = Emulator::start(Config::default()).await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(emulator.client());
    let created = api
        .create(&PostParams::default(), &configmap("a", "1"))
        .await
        .unwrap();
    let read_version = created.resource_version().unwrap();
    let mut events = Box::pin(
        api.watch(
            &WatchParams::default().disable_bookmarks().timeout(10),
            &read_version,
        )
        .await
        .unwrap(),
    );

    emulator
        .faults()
        .lose_next_write_responses("configmaps", 1, LostResponse::Reset);
    let mut changed = created.clone();
    changed.data = Some([("v".to_string(), "2".to_string())].into());
    let lost = api.replace("a", &PostParams::default(), &changed).await;
    match &lost {
        Err(kube::Error::Api(status)) => panic!("expected no answer at all, got {status:?}"),
        Err(error) => {
            let mut chain = vec![error.to_string()];
            let mut source = std::error::Error::source(error);
            while let Some(e) = source {
                chain.push(e.to_string());
                source = e.source();
            }
            eprintln!("the client saw: {}", chain.join(": "));
        }
        Ok(_) => panic!("the answer was not lost"),
    }

    let stored = api.get("a").await.unwrap();
    assert_eq!(value(&stored), "2", "the write landed");
    let landed_version = stored.resource_version().unwrap();
    assert_ne!(landed_version, read_version, "with a new resourceVersion");
    match tokio::time::timeout(std::time::Duration::from_secs(5), events.try_next()).await {
        Ok(Ok(Some(WatchEvent::Modified(cm)))) => {
            assert_eq!(value(&cm), "2");
            assert_eq!(cm.resource_version(), Some(landed_version));
        }
        other => panic!("watchers see the write as any other: {other:?}"),
    }

    assert_eq!(
        api_code(api.replace("a", &PostParams::default(), &changed).await),
        (409, "Conflict".to_string()),
        "a retry with the resourceVersion read before conflicts with its own write"
    );
    let mut again = stored.clone();
    again.data = Some([("v".to_string(), "3".to_string())].into());
    let answered = api
        .replace("a", &PostParams::default(), &again)
        .await
        .expect("only the next write lost its answer");
    assert_eq!(value(&answered), "3");
}

#[tokio::test]
async fn a_create_answered_504_landed_and_its_retry_already_exists() {
    let emulator = Emulator::start(Config::default()).await.unwrap();
    let bare: Api<ConfigMap> = Api::default_namespaced(client_without_retries(&emulator));

    emulator
        .faults()
        .lose_next_write_responses("configmaps", 1, LostResponse::Status(504));
    assert_eq!(
        api_code(
            bare.create(&PostParams::default(), &configmap("b", "1"))
                .await
        ),
        (504, "Timeout".to_string())
    );
    assert_eq!(
        value(&bare.get("b").await.unwrap()),
        "1",
        "the create landed"
    );
    assert_eq!(
        api_code(
            bare.create(&PostParams::default(), &configmap("b", "1"))
                .await
        ),
        (409, "AlreadyExists".to_string()),
        "creating it again finds it"
    );

    // kube-rs's default client repeats a 504ed request by itself: the repeat carries the
    // old resourceVersion, so the caller sees a 409 for a write that did land.
    let retrying: Api<ConfigMap> = Api::default_namespaced(emulator.client());
    let mut changed = retrying.get("b").await.unwrap();
    changed.data = Some([("v".to_string(), "2".to_string())].into());
    emulator
        .faults()
        .lose_next_write_responses("configmaps", 1, LostResponse::Status(504));
    assert_eq!(
        api_code(
            retrying
                .replace("b", &PostParams::default(), &changed)
                .await
        ),
        (409, "Conflict".to_string())
    );
    assert_eq!(value(&retrying.get("b").await.unwrap()), "2");
}

#[tokio::test]
async fn writes_that_do_not_land_keep_the_loss_for_the_next_one_that_does() {
    let emulator = Emulator::start(Config::default()).await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(emulator.client());
    let created = api
        .create(&PostParams::default(), &configmap("c", "1"))
        .await
        .unwrap();
    let mut bumped = created.clone();
    bumped.data = Some([("v".to_string(), "2".to_string())].into());
    api.replace("c", &PostParams::default(), &bumped)
        .await
        .unwrap();

    emulator
        .faults()
        .lose_next_write_responses("configmaps", 1, LostResponse::Status(500));
    // A stale replace is refused, a dry run stores nothing, a read is no write: all are
    // answered as usual and leave the loss in place.
    assert_eq!(
        api_code(api.replace("c", &PostParams::default(), &created).await),
        (409, "Conflict".to_string())
    );
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    api.create(&dry, &configmap("d", "1")).await.unwrap();
    api.get("c").await.unwrap();
    api.delete("c", &DeleteParams::default().dry_run())
        .await
        .unwrap();

    assert_eq!(
        api_code(api.delete("c", &DeleteParams::default()).await),
        (500, "InternalError".to_string()),
        "the first write that lands loses its answer"
    );
    assert!(
        api.get_opt("c").await.unwrap().is_none(),
        "the delete landed"
    );
    api.create(&PostParams::default(), &configmap("c", "3"))
        .await
        .expect("the loss was used up");
}
