//! `ipledger bench`, the load tool, as CI's smoke test: with its defaults it runs its own
//! emulator, controller and 8 agents, and its verdicts pass; a duplicate injected into the
//! ledger fails the duplicates verdict, a GC that cannot run fails the leaks verdict;
//! against a cluster named by a kubeconfig it removes what it created, also on Ctrl-C.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use ipledger::api::{IPBlock, IPPool};
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, ListParams};
use serde_json::Value;
use support::harness::Harness;

const HOST_LOCAL: &str = "/usr/lib/cni/host-local";

/// Runs `ipledger bench ARGS --json FILE` (ARGS split at whitespace); its output and the
/// report.
async fn bench(args: &str, dir: &Path) -> (Output, Value) {
    let json = dir.join("report.json");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ipledger"))
        .arg("bench")
        .args(args.split_whitespace())
        .arg("--json")
        .arg(&json)
        .env("IPLEDGER_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), output)
        .await
        .expect("the bench ends within 10 minutes")
        .expect("the bench runs");
    let report = std::fs::read_to_string(&json)
        .map(|text| serde_json::from_str(&text).expect("the report is JSON"))
        .unwrap_or(Value::Null);
    (output, report)
}

fn printed(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn count(value: &Value) -> usize {
    value.as_array().map_or(usize::MAX, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_defaults_the_bench_passes_beside_host_local() {
    if !Path::new(HOST_LOCAL).exists() {
        return test_support::skip(&format!(
            "{HOST_LOCAL} is missing (Debian package containernetworking-plugins)"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let (output, report) = bench("--compare host-local", dir.path()).await;
    let printed = printed(&output);
    assert!(output.status.success(), "{printed}");
    assert_eq!(report["passed"], true, "{printed}");
    assert!(printed.contains("verdict duplicates: PASS"), "{printed}");
    assert!(printed.contains("verdict leaks: PASS"), "{printed}");

    // The defaults: 8 nodes × 8 flows holding 4 pods each, then 2,000 churn operations.
    let ours = &report["ipledger"];
    assert_eq!(ours["fillAdds"], 256, "{printed}");
    assert_eq!(ours["churnOperations"], 2000, "{printed}");
    assert_eq!(ours["errors"], serde_json::json!({}), "{printed}");
    assert_eq!(ours["add"]["count"], 2256, "{printed}");
    // Every churn operation detached a pod, by DEL or by vanishing; then 10% of the
    // rest vanished.
    let dels = ours["del"]["count"].as_u64().unwrap();
    let vanished = ours["vanished"].as_u64().unwrap();
    assert!(dels + vanished >= 2000 + 25 && vanished > 100, "{printed}");
    assert!(ours["add"]["p99Ms"].as_f64().unwrap() >= ours["add"]["medianMs"].as_f64().unwrap());
    // The writes are counted by the emulator, not by ipledger.
    let api = &ours["api"];
    assert_eq!(api["source"], "server");
    let writes = api["writesPerOperation"].as_f64().unwrap();
    assert!(writes > 0.3 && writes < 2.0, "{printed}");

    let convergence = &report["convergence"];
    assert!(convergence["gcSeconds"].as_f64().is_some(), "{printed}");
    assert!(convergence["statusSeconds"].as_f64().is_some(), "{printed}");
    let live = convergence["live"].as_u64().unwrap();
    assert_eq!(live + vanished + dels, 2256, "{printed}");
    assert_eq!(convergence["pods"], live);

    assert_eq!(report["memory"]["agentProcesses"], 8);
    assert!(report["memory"]["agentPeakKib"].as_u64().unwrap() > 1000);
    assert!(report["memory"]["controllerPeakKib"].as_u64().unwrap() > 1000);

    // host-local ran the same load through the same driver.
    let theirs = &report["hostLocal"];
    assert_eq!(theirs["add"]["count"], 2256, "{printed}");
    assert_eq!(theirs["errors"], serde_json::json!({}), "{printed}");
    let ratio = report["ratios"]["addsPerSecond"].as_f64().unwrap();
    let expected =
        ours["addsPerSecond"].as_f64().unwrap() / theirs["addsPerSecond"].as_f64().unwrap();
    assert!((ratio - expected).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_duplicate_fails_the_duplicates_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let (output, report) = bench(
        "--nodes 2 --flows 2 --ops 40 --inject-duplicate",
        dir.path(),
    )
    .await;
    let printed = printed(&output);
    assert_eq!(output.status.code(), Some(1), "{printed}");
    assert_eq!(report["passed"], false, "{printed}");
    assert!(printed.contains("verdict duplicates: FAIL"), "{printed}");
    // Both ways of seeing it: the history (the pod's ADD returned a live pod's address)
    // and the ledger at the end (the address in two records).
    let verdicts = &report["verdicts"];
    assert_eq!(count(&verdicts["overlaps"]), 1, "{printed}");
    assert!(
        verdicts["overlaps"][0]["second"]
            .as_str()
            .unwrap()
            .ends_with("-duplicate")
    );
    assert_eq!(count(&verdicts["shared"]), 1, "{printed}");
    assert_eq!(
        verdicts["shared"][0]["address"],
        verdicts["overlaps"][0]["address"]
    );
    // Nothing leaked: the leaks verdict judges on its own.
    assert_eq!(count(&verdicts["ledger"]["leaked"]), 0, "{printed}");
    assert!(printed.contains("verdict leaks: PASS"), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_the_gc_never_releases_fail_the_leaks_verdict() {
    let dir = tempfile::tempdir().unwrap();
    // Half the detaches vanish, and the controller's GC waits an hour.
    let (output, report) = bench(
        "--nodes 1 --flows 2 --ops 20 --vanish 0.5 --gc 1h --converge-timeout 2s",
        dir.path(),
    )
    .await;
    let printed = printed(&output);
    assert_eq!(output.status.code(), Some(1), "{printed}");
    assert!(printed.contains("verdict leaks: FAIL"), "{printed}");
    assert!(printed.contains("verdict duplicates: PASS"), "{printed}");
    let leaked = count(&report["verdicts"]["ledger"]["leaked"]);
    assert_eq!(
        leaked as u64,
        report["ipledger"]["vanished"].as_u64().unwrap(),
        "{printed}"
    );
    assert!(leaked > 0);
    assert_eq!(report["convergence"]["gcSeconds"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn straight_at_the_sockets_with_several_nodes_per_agent_process() {
    let dir = tempfile::tempdir().unwrap();
    let (output, report) = bench(
        "--via socket --nodes 4 --nodes-per-process 2 --flows 2 --ops 100 --cidr fd00:be::/48",
        dir.path(),
    )
    .await;
    let printed = printed(&output);
    assert!(output.status.success(), "{printed}");
    assert_eq!(report["passed"], true, "{printed}");
    assert_eq!(report["memory"]["agentProcesses"], 2);
    // 4 nodes × 2 flows × 4 pods, then 100 operations.
    assert_eq!(report["ipledger"]["add"]["count"], 132, "{printed}");
    assert_eq!(
        report["ipledger"]["errors"],
        serde_json::json!({}),
        "{printed}"
    );
    assert!(
        report["convergence"]["blocks"].as_u64().unwrap() >= 4,
        "{printed}"
    );
}

#[tokio::test]
async fn bad_arguments_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (output, _) = bench("--vanish 1.5", dir.path()).await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--vanish") && stderr.contains("between 0 and 1"),
        "{stderr}"
    );
    let (output, _) = bench("--start-controller", dir.path()).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--kubeconfig"));
    let (output, _) = bench("--cidr 10.0.0.0/33 --nodes 1", dir.path()).await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cidr"), "{stderr}");
}

/// The run id the bench printed first (`run ID: namespace ...`).
fn run_id(printed: &str) -> String {
    printed
        .lines()
        .find_map(|l| l.strip_prefix("run ")?.split(':').next())
        .expect("the bench names its run")
        .to_string()
}

/// What run `id` left behind on the cluster: its namespace, pool, blocks and Nodes.
async fn leftovers(harness: &Harness, id: &str) -> Vec<String> {
    let client = harness.client();
    let params = ListParams::default();
    let mut left: Vec<String> = Vec::new();
    let namespaces = Api::<Namespace>::all(client.clone())
        .list_metadata(&params)
        .await
        .unwrap();
    let nodes = Api::<Node>::all(client.clone())
        .list_metadata(&params)
        .await
        .unwrap();
    for (kind, name) in namespaces
        .items
        .into_iter()
        .map(|n| ("namespace", n.metadata.name))
        .chain(nodes.items.into_iter().map(|n| ("node", n.metadata.name)))
    {
        left.extend(
            name.filter(|n| n.contains(id))
                .map(|n| format!("{kind} {n}")),
        );
    }
    for pool in Api::<IPPool>::all(client.clone())
        .list(&params)
        .await
        .unwrap()
    {
        left.extend(
            pool.metadata
                .name
                .filter(|n| n.contains(id))
                .map(|n| format!("pool {n}")),
        );
    }
    for block in Api::<IPBlock>::all(client.clone())
        .list(&params)
        .await
        .unwrap()
    {
        if block.spec.pool.contains(id) {
            left.push(format!("block {:?}", block.metadata.name));
        }
    }
    left
}

/// Fails unless run `id` left nothing behind (a real cluster deletes a namespace in the
/// background: it is given 30 seconds).
async fn assert_nothing_left(harness: &Harness, id: &str) {
    let cleaned =
        test_support::wait_for(|| async { leftovers(harness, id).await.is_empty().then_some(()) })
            .await;
    if cleaned.is_none() {
        assert_eq!(leftovers(harness, id).await, Vec::<String>::new());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_cluster_the_bench_removes_what_it_made() {
    let harness = Harness::new().await;
    let mut args = format!(
        "--kubeconfig {} --nodes 2 --flows 2 --ops 40",
        harness.kubeconfig.display()
    );
    // A real cluster has ipledger's controller installed; the emulator has none.
    if harness.cluster.is_emulator() {
        args.push_str(" --start-controller");
    }
    let (output, report) = bench(&args, harness.dir.path()).await;
    let printed = printed(&output);
    assert!(output.status.success(), "{printed}");
    assert_eq!(report["passed"], true, "{printed}");
    assert_eq!(report["settings"]["cluster"], "kubeconfig");
    // Without the emulator's request log, the writes are the agents' own counts.
    assert_eq!(report["ipledger"]["api"]["source"], "agents", "{printed}");
    let id = run_id(&printed);
    assert_eq!(report["settings"]["runId"], id.as_str());
    assert_nothing_left(&harness, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_ctrl_c_the_bench_removes_what_it_made() {
    let harness = Harness::new().await;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ipledger"));
    command
        .args(["bench", "--kubeconfig"])
        .arg(&harness.kubeconfig)
        .args(["--nodes", "2", "--flows", "2", "--duration", "10m"])
        .env("IPLEDGER_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if harness.cluster.is_emulator() {
        command.arg("--start-controller");
    }
    let bench = command.spawn().unwrap();
    // Interrupted once the load runs: its pods exist.
    let client = harness.client();
    let loading = test_support::wait_for(|| {
        let client = client.clone();
        async move {
            let pods = Api::<k8s_openapi::api::core::v1::Pod>::all(client)
                .list_metadata(&ListParams::default())
                .await
                .ok()?;
            (pods.items.len() >= 4).then_some(())
        }
    })
    .await;
    assert!(loading.is_some(), "the load never started");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = bench.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = tokio::time::timeout(Duration::from_secs(120), bench.wait_with_output())
        .await
        .expect("the bench stops within 2 minutes of Ctrl-C")
        .unwrap();
    let printed = printed(&output);
    assert_eq!(output.status.code(), Some(2), "{printed}");
    assert!(
        printed.contains("interrupted; the run's objects were removed"),
        "{printed}"
    );
    assert_nothing_left(&harness, &run_id(&printed)).await;
}
