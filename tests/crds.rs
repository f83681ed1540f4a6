//! ipledger's CRDs as an API server serves them: schema, CEL rules and printer columns of
//! `IPPool`, through kube-rs and through kubectl applying `crds/`.
//!
//! Runs against the emulator; set `IPLEDGER_TEST_KUBECONFIG` to run the same tests against
//! a real cluster (each test uses unique names and cleans up). The emulator's own
//! conformance, with CRDs of its own, is in `crates/kube-emulator/tests/`.

mod support;

use std::path::Path;

use ipledger::api::IPPool;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use support::install_crds;
use test_support::kubectl::Kubectl;
use test_support::{api_error, cluster, unique};

fn pool(name: &str, cidr: &str) -> IPPool {
    serde_json::from_value(json!({
        "apiVersion": "ipledger.io/v1alpha1",
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": {"cidr": cidr},
    }))
    .unwrap()
}

async fn pools(client: &Client) -> Api<IPPool> {
    install_crds(client).await;
    Api::all(client.clone())
}

#[tokio::test]
async fn a_pools_schema_prunes_unknown_fields_and_rejects_invalid_values() {
    let c = cluster().await;
    let api = pools(&c.client).await;
    let raw: Api<DynamicObject> = Api::all_with(
        c.client.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk("ipledger.io", "v1alpha1", "IPPool")),
    );
    let name = unique("schema");
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "ipledger.io/v1alpha1", "kind": "IPPool", "metadata": {"name": name},
        "spec": {"cidr": "10.16.0.0/16", "colour": "blue"},
    }))
    .unwrap();
    let created = raw.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(created.data["spec"], json!({"cidr": "10.16.0.0/16"}));

    let bad_type: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "ipledger.io/v1alpha1", "kind": "IPPool", "metadata": {"name": format!("{name}-t")},
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
        "apiVersion": "ipledger.io/v1alpha1", "kind": "IPPool", "metadata": {"name": format!("{name}-m")}, "spec": {},
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
            &pool(&format!("{name}-h"), "10.18.0.1/16"),
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

#[tokio::test]
async fn cel_transition_rule_refuses_changing_a_pools_cidr() {
    let c = cluster().await;
    let api = pools(&c.client).await;
    let name = unique("cel");
    api.create(&PostParams::default(), &pool(&name, "10.19.0.0/16"))
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
    assert!(err.message.contains("spec.cidr"), "{}", err.message);
    assert!(err.message.contains("cidr is immutable"), "{}", err.message);
    let err = api_error(
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"blockSize": 28}})),
        )
        .await,
    );
    assert!(
        err.message.contains("blockSize is immutable"),
        "{}",
        err.message
    );
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

/// The IPPool CRD's CEL rules (block size per family, gateway inside the pool), as a real
/// API server evaluates them: the good pools pass, each bad one is refused with its message.
#[tokio::test]
async fn cel_rules_bound_block_size_and_gateway() {
    let c = cluster().await;
    let api = pools(&c.client).await;
    let name = unique("celr");
    let with = |suffix: &str, spec: Value| -> IPPool {
        serde_json::from_value(json!({
            "apiVersion": "ipledger.io/v1alpha1", "kind": "IPPool",
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
    for pool in &good {
        api.create(&PostParams::default(), pool).await.unwrap();
    }
    for (suffix, spec, message) in [
        (
            "big",
            json!({"cidr": "10.22.0.0/16", "blockSize": 20}),
            "blockSize must be between 22 and 32",
        ),
        (
            "v6big",
            json!({"cidr": "fd00:22::/48", "blockSize": 100}),
            "between 118 and 128 for an IPv6 pool",
        ),
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
    for pool in &good {
        api.delete(&pool.name_any(), &DeleteParams::default())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn the_pool_table_shows_the_printer_columns() {
    let c = cluster().await;
    let api = pools(&c.client).await;
    let name = unique("table");
    api.create(&PostParams::default(), &pool(&name, "10.22.0.0/16"))
        .await
        .unwrap();
    let req = http::Request::get(format!("/apis/ipledger.io/v1alpha1/ippools/{name}"))
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

/// `kubectl apply -f crds/` installs the CRDs, and `kubectl get` shows a pool with the
/// printer columns, also by its short name.
#[tokio::test]
async fn kubectl_applies_the_crds_and_gets_pools_with_their_columns() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    k.install_crds(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("crds"),
        &["ippools.ipledger.io", "ipblocks.ipledger.io"],
    )
    .await;
    let name = unique("pool");
    let file = k.write(
        &format!("{name}.yaml"),
        &format!("apiVersion: ipledger.io/v1alpha1\nkind: IPPool\nmetadata:\n  name: {name}\nspec:\n  cidr: 10.30.0.0/16\n  blockSize: 26\n"),
    );
    let out = k.ok(&["apply", "-f", &file]).await;
    assert!(
        out.contains(&format!("ippool.ipledger.io/{name} created")),
        "{out}"
    );
    let table = k.ok(&["get", "ippools", &name]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "CIDR", "ALLOCATED", "FREE", "READY", "AGE"]
    );
    assert!(table.lines().nth(1).unwrap().starts_with(&name));
    assert!(table.contains("10.30.0.0/16"));
    let short = k
        .ok(&["get", "ipp", &name, "-o", "jsonpath={.spec.cidr}"])
        .await;
    assert_eq!(short, "10.30.0.0/16");
    k.ok(&["delete", "ippool", &name]).await;
}
