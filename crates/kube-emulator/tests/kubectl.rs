//! Real kubectl and helm, default flags, against the emulator (or the cluster named by
//! `IPLEDGER_TEST_KUBECONFIG`), with built-in types and the test CRDs of `tests/fixtures/`.
//! kubectl comes from `$KUBECTL`, else /usr/local/bin/kubectl, helm from `$HELM`, else
//! /usr/local/bin/helm (both installed by `.ci/install-kube-tools.sh`); without them the
//! tests skip, saying so.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use test_support::kubectl::Kubectl;
use test_support::unique;

/// Installs the test CRDs with `kubectl apply -f tests/fixtures/`.
async fn install_crds(k: &Kubectl) {
    k.install_crds(support::fixtures(), &support::CRD_NAMES)
        .await;
}

fn subnet_file(k: &Kubectl, name: &str, cidr: &str) -> String {
    k.write(
        &format!("{name}.yaml"),
        &format!("apiVersion: emulator.example.com/v1\nkind: Subnet\nmetadata:\n  name: {name}\nspec:\n  cidr: {cidr}\n  blockSize: 26\n"),
    )
}

fn wait_child(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[tokio::test]
async fn apply_wait_and_get_show_printer_columns() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    install_crds(&k).await;
    let name = unique("subnet");
    let file = subnet_file(&k, &name, "10.30.0.0/16");
    let out = k.ok(&["apply", "-f", &file]).await;
    assert!(
        out.contains(&format!("subnet.emulator.example.com/{name} created")),
        "{out}"
    );
    let again = k.ok(&["apply", "-f", &file]).await;
    assert!(again.contains("unchanged"), "{again}");
    let table = k.ok(&["get", "subnets", &name]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "CIDR", "ALLOCATED", "FREE", "READY", "AGE"]
    );
    assert!(table.lines().nth(1).unwrap().starts_with(&name));
    assert!(table.contains("10.30.0.0/16"));
    // kubectl diff asks the server for a dry run of the change.
    let subnet = std::fs::read_to_string(&file).unwrap();
    let changed = k.write(
        "changed.yaml",
        &subnet.replace("blockSize: 26", "blockSize: 26\n  disabled: true"),
    );
    let diff = k.run(&["diff", "-f", &changed]).await;
    assert_eq!(
        diff.status.code(),
        Some(1),
        "kubectl diff finds a difference: {}",
        String::from_utf8_lossy(&diff.stderr)
    );
    assert!(String::from_utf8_lossy(&diff.stdout).contains("+  disabled: true"));
    let unchanged = k
        .ok(&["get", "subnet", &name, "-o", "jsonpath={.spec.disabled}"])
        .await;
    assert_eq!(unchanged, "", "the dry run changed nothing");
    let short = k
        .ok(&["get", "sn", &name, "-o", "jsonpath={.spec.cidr}"])
        .await;
    assert_eq!(short, "10.30.0.0/16");
    k.ok(&["delete", "subnet", &name]).await;
}

#[tokio::test]
async fn replace_with_a_stale_resource_version_reports_the_conflict() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    install_crds(&k).await;
    let name = unique("stale");
    k.ok(&["apply", "-f", &subnet_file(&k, &name, "10.31.0.0/16")])
        .await;
    let stale = k.ok(&["get", "subnet", &name, "-o", "yaml"]).await;
    let stale_file = k.write("stale.yaml", &stale);
    k.ok(&["label", "subnet", &name, "changed=yes"]).await;
    let out = k.run(&["replace", "-f", &stale_file]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("Operation cannot be fulfilled on subnets.emulator.example.com \"{name}\": the object has been modified; please apply your changes to the latest version and try again")),
        "{stderr}"
    );
    let cidr_change = k
        .run(&[
            "patch",
            "subnet",
            &name,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"cidr":"10.32.0.0/16"}}"#,
        ])
        .await;
    assert!(!cidr_change.status.success());
    assert!(String::from_utf8_lossy(&cidr_change.stderr).contains("cidr is immutable"));
    k.ok(&["delete", "subnet", &name]).await;
}

#[tokio::test]
async fn delete_with_a_finalizer_waits_until_it_is_removed() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    install_crds(&k).await;
    let name = unique("fin");
    let file = k.write(
        "fin.yaml",
        &format!("apiVersion: emulator.example.com/v1\nkind: Subnet\nmetadata:\n  name: {name}\n  finalizers: [emulator.example.com/test]\nspec:\n  cidr: 10.33.0.0/16\n"),
    );
    k.ok(&["apply", "-f", &file]).await;
    let mut delete = k
        .command(&["delete", "subnet", &name, "--timeout=60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pending = tokio::task::spawn_blocking(move || {
        let early = wait_child(&mut delete, Duration::from_secs(2));
        (early, delete)
    })
    .await
    .unwrap();
    assert!(
        pending.0.is_none(),
        "kubectl delete returned while the finalizer was still there"
    );
    let mut delete = pending.1;
    let ts = k
        .ok(&[
            "get",
            "subnet",
            &name,
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ])
        .await;
    assert!(!ts.is_empty(), "deletionTimestamp is set");
    k.ok(&[
        "patch",
        "subnet",
        &name,
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ])
    .await;
    let status =
        tokio::task::spawn_blocking(move || wait_child(&mut delete, Duration::from_secs(30)))
            .await
            .unwrap();
    assert!(status.expect("kubectl delete finished").success());
    let gone = k.run(&["get", "subnet", &name]).await;
    assert!(String::from_utf8_lossy(&gone.stderr).contains("not found"));
}

#[tokio::test]
async fn get_watch_sees_changes() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    install_crds(&k).await;
    let name = unique("watched");
    // The subnet exists first, so its line shows when the watch has started.
    k.ok(&["apply", "-f", &subnet_file(&k, &name, "10.34.0.0/16")])
        .await;
    let mut watch = k
        .command(&["get", "subnets", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                lines.lock().unwrap().push(line);
            }
        })
    };
    let ours = |lines: &std::sync::Mutex<Vec<String>>| {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(&name))
            .cloned()
            .collect::<Vec<_>>()
    };
    let wait_for_lines = |n: usize| {
        let lines = lines.clone();
        let ours = &ours;
        async move {
            let started = Instant::now();
            while ours(&lines).len() < n && started.elapsed() < Duration::from_secs(30) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ours(&lines)
        }
    };
    assert_eq!(
        wait_for_lines(1).await.len(),
        1,
        "the watch lists the subnet first"
    );
    k.ok(&["label", "subnet", &name, "seen=yes"]).await;
    k.ok(&["delete", "subnet", &name]).await;
    let seen = wait_for_lines(3).await;
    watch.kill().unwrap();
    let _ = watch.wait();
    reader.join().unwrap();
    assert!(
        seen.len() >= 3,
        "expected list, update and delete lines for {name}: {seen:?}"
    );
    assert!(seen.iter().all(|l| l.contains("10.34.0.0/16")));
}

#[tokio::test]
async fn builtins_work_with_apply_and_get() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    let ns = unique("kns");
    k.ok(&[
        "create",
        "-f",
        &k.write(
            "ns.yaml",
            &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"),
        ),
    ])
    .await;
    let deploy = |replicas: u32, image: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n      - name: a\n        image: nginx\n      - name: b\n        image: {image}\n"
        )
    };
    k.ok(&["apply", "-f", &k.write("d1.yaml", &deploy(1, "busybox"))])
        .await;
    let out = k
        .ok(&["apply", "-f", &k.write("d2.yaml", &deploy(2, "alpine"))])
        .await;
    assert!(out.contains("configured"), "{out}");
    let got = k
        .ok(&[
            "-n",
            &ns,
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas} {.spec.template.spec.containers[*].image}",
        ])
        .await;
    assert_eq!(got, "2 nginx alpine");
    let listed = k.ok(&["-n", &ns, "get", "deployments"]).await;
    assert!(
        listed.lines().nth(1).is_some_and(|l| l.starts_with("web")),
        "{listed}"
    );
    k.ok(&["delete", "namespace", &ns]).await;
    assert!(!Path::new(k.kubeconfig()).as_os_str().is_empty());
}

#[tokio::test]
async fn typed_client_commands_send_protobuf_that_is_understood() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    let ns = unique("proto");
    k.ok(&["create", "namespace", &ns]).await;
    k.ok(&[
        "-n",
        &ns,
        "create",
        "configmap",
        "settings",
        "--from-literal=mode=fast",
        "--from-literal=size=3",
    ])
    .await;
    k.ok(&[
        "-n",
        &ns,
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=hunter2",
    ])
    .await;
    let data = k
        .ok(&[
            "-n",
            &ns,
            "get",
            "configmap",
            "settings",
            "-o",
            "jsonpath={.data.mode} {.data.size}",
        ])
        .await;
    assert_eq!(data, "fast 3");
    let secret = k
        .ok(&[
            "-n",
            &ns,
            "get",
            "secret",
            "creds",
            "-o",
            "jsonpath={.type} {.data.password}",
        ])
        .await;
    assert_eq!(secret, "Opaque aHVudGVyMg==");
    let phase = k
        .ok(&["get", "namespace", &ns, "-o", "jsonpath={.status.phase}"])
        .await;
    assert_eq!(phase, "Active");
    k.ok(&["delete", "namespace", &ns]).await;
}

#[tokio::test]
async fn helm_installs_and_uninstalls_a_chart() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    let helm = std::env::var("HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/local/bin/helm"));
    if !helm.exists() {
        test_support::skip(
            "no helm ($HELM unset and /usr/local/bin/helm missing; run .ci/install-kube-tools.sh)",
        );
        return;
    }
    let ns = unique("helm");
    k.ok(&["create", "namespace", &ns]).await;
    let chart = k.dir().join("chart");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: demo\nversion: 0.1.0\n",
    )
    .unwrap();
    std::fs::write(
        chart.join("templates/settings.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo-settings\ndata:\n  mode: fast\n",
    )
    .unwrap();
    let run_helm = |args: Vec<String>| {
        let mut cmd = Command::new(&helm);
        cmd.args(&args)
            .env("KUBECONFIG", k.kubeconfig())
            .env("HOME", k.dir());
        async move {
            tokio::task::spawn_blocking(move || cmd.output().expect("helm runs"))
                .await
                .unwrap()
        }
    };
    // Helm 4 applies server-side by default, which the emulator does not implement.
    let install = run_helm(vec![
        "install".into(),
        "demo".into(),
        chart.display().to_string(),
        "-n".into(),
        ns.clone(),
        "--server-side=false".into(),
    ])
    .await;
    assert!(
        install.status.success(),
        "{}",
        String::from_utf8_lossy(&install.stderr)
    );
    let listed = run_helm(vec!["list".into(), "-n".into(), ns.clone()]).await;
    assert!(String::from_utf8_lossy(&listed.stdout).contains("deployed"));
    let data = k
        .ok(&[
            "-n",
            &ns,
            "get",
            "configmap",
            "demo-settings",
            "-o",
            "jsonpath={.data.mode}",
        ])
        .await;
    assert_eq!(data, "fast");
    let uninstall = run_helm(vec![
        "uninstall".into(),
        "demo".into(),
        "-n".into(),
        ns.clone(),
    ])
    .await;
    assert!(
        uninstall.status.success(),
        "{}",
        String::from_utf8_lossy(&uninstall.stderr)
    );
    let gone = k
        .run(&["-n", &ns, "get", "configmap", "demo-settings"])
        .await;
    assert!(!gone.status.success());
    k.ok(&["delete", "namespace", &ns]).await;
}
