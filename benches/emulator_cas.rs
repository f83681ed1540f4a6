//! Throughput of the API emulator under the ledger's write pattern: concurrent kube-rs
//! clients each doing get + replace (a resourceVersion compare-and-swap) on IPBlocks.
//!
//! `cargo bench --bench emulator_cas`; the figure is criterion's `thrpt` (replaces/s).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ipledger::api::IPBlock;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::{Api, Client};
use kube_emulator::{Config, Emulator};
use serde_json::json;

const CLIENTS: usize = 8;

fn block(name: &str) -> IPBlock {
    serde_json::from_value(json!({
        "apiVersion": "ipledger.io/v1alpha1", "kind": "IPBlock",
        "metadata": {"name": name, "labels": {"ipledger.io/pool": "bench", "ipledger.io/node": name}},
        "spec": {"pool": "bench", "cidr": "10.0.0.0/26", "node": name},
    }))
    .expect("a valid block")
}

async fn setup() -> (Emulator, Vec<Api<IPBlock>>) {
    let emulator = Emulator::start(Config::default())
        .await
        .expect("emulator starts");
    let client = emulator.client();
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    for crd in ipledger::api::crds() {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("CRD installed");
    }
    // One client (connection pool) per worker, as separate agents would have.
    let apis: Vec<Api<IPBlock>> = (0..CLIENTS)
        .map(|_| {
            Api::all(Client::try_from(kube::Config::new(emulator.url().parse().unwrap())).unwrap())
        })
        .collect();
    (emulator, apis)
}

/// One CAS write: read, change, replace with the read resourceVersion; retry on 409.
async fn cas_replace(api: &Api<IPBlock>, name: &str) -> u32 {
    let mut conflicts = 0;
    loop {
        let mut b = api.get(name).await.expect("block exists");
        b.spec.last_allocated = Some(format!("10.0.0.{}", conflicts % 60 + 1).parse().unwrap());
        b.spec.node = format!(
            "{}-{}",
            name,
            b.metadata.resource_version.clone().unwrap_or_default()
        );
        match api.replace(name, &PostParams::default(), &b).await {
            Ok(_) => return conflicts,
            Err(kube::Error::Api(e)) if e.code == 409 => conflicts += 1,
            Err(e) => panic!("replace failed: {e}"),
        }
    }
}

fn run(
    rt: &tokio::runtime::Runtime,
    apis: &[Api<IPBlock>],
    names: Arc<Vec<String>>,
    iters: u64,
) -> Duration {
    rt.block_on(async {
        let per_client = iters.div_ceil(CLIENTS as u64);
        let start = Instant::now();
        let tasks: Vec<_> = apis
            .iter()
            .enumerate()
            .map(|(i, api)| {
                let api = api.clone();
                let names = names.clone();
                tokio::spawn(async move {
                    let name = &names[i % names.len()];
                    for _ in 0..per_client {
                        cas_replace(&api, name).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("worker finished");
        }
        // Scale to the iterations criterion asked for (workers may round up).
        start
            .elapsed()
            .mul_f64(iters as f64 / (per_client * CLIENTS as u64) as f64)
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (_emulator, apis) = rt.block_on(setup());
    let own: Arc<Vec<String>> = Arc::new((0..CLIENTS).map(|i| format!("block-{i}")).collect());
    let shared: Arc<Vec<String>> = Arc::new(vec!["block-shared".to_string()]);
    rt.block_on(async {
        for name in own.iter().chain(shared.iter()) {
            apis[0]
                .create(&PostParams::default(), &block(name))
                .await
                .expect("block created");
        }
    });

    let mut group = c.benchmark_group("emulator_cas");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(10));
    group.bench_function(format!("get_replace_{CLIENTS}_clients_own_objects"), |b| {
        b.iter_custom(|iters| run(&rt, &apis, own.clone(), iters))
    });
    group.bench_function(
        format!("get_replace_{CLIENTS}_clients_one_shared_object"),
        |b| b.iter_custom(|iters| run(&rt, &apis, shared.clone(), iters)),
    );
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
