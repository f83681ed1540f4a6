//! Throughput of the API emulator under a controller's write pattern: concurrent kube-rs
//! clients each doing get + replace (a resourceVersion compare-and-swap) on custom
//! resources, here the test CRD `Subnet` (schema validation and CEL rules on every write).
//!
//! `cargo bench -p kube-emulator --bench cas`; the figure is criterion's `thrpt`
//! (replaces/s).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kube::api::PostParams;
use kube::{Api, Client};
use kube_emulator::{Config, Emulator};
use support::Subnet;

const CLIENTS: usize = 8;

fn subnet(name: &str) -> Subnet {
    let mut subnet = support::subnet(name, "10.0.0.0/24");
    subnet.spec.block_size = Some(26);
    subnet.metadata.labels = Some([("bench".to_string(), "cas".to_string())].into());
    subnet
}

async fn setup() -> (Emulator, Vec<Api<Subnet>>) {
    let emulator = Emulator::start(Config::default())
        .await
        .expect("emulator starts");
    support::install_crds(&emulator.client()).await;
    // One client (connection pool) per worker, as separate controllers would have.
    let apis: Vec<Api<Subnet>> = (0..CLIENTS)
        .map(|_| {
            Api::all(Client::try_from(kube::Config::new(emulator.url().parse().unwrap())).unwrap())
        })
        .collect();
    (emulator, apis)
}

/// One CAS write: read, change, replace with the read resourceVersion; retry on 409.
async fn cas_replace(api: &Api<Subnet>, name: &str) -> u32 {
    let mut conflicts = 0;
    loop {
        let mut s = api.get(name).await.expect("subnet exists");
        s.spec.exclude = vec![format!("10.0.0.{}", conflicts % 60 + 1)];
        // Always a change: an unchanged replace would be a no-op write.
        s.spec.disabled = !s.spec.disabled;
        match api.replace(name, &PostParams::default(), &s).await {
            Ok(_) => return conflicts,
            Err(kube::Error::Api(e)) if e.code == 409 => conflicts += 1,
            Err(e) => panic!("replace failed: {e}"),
        }
    }
}

fn run(
    rt: &tokio::runtime::Runtime,
    apis: &[Api<Subnet>],
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
    let own: Arc<Vec<String>> = Arc::new((0..CLIENTS).map(|i| format!("subnet-{i}")).collect());
    let shared: Arc<Vec<String>> = Arc::new(vec!["subnet-shared".to_string()]);
    rt.block_on(async {
        for name in own.iter().chain(shared.iter()) {
            apis[0]
                .create(&PostParams::default(), &subnet(name))
                .await
                .expect("subnet created");
        }
    });

    let mut group = c.benchmark_group("cas");
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
