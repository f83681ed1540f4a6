//! The `ipledger emulator` command: writes a kubeconfig kube-rs accepts, serves, and stops
//! on SIGTERM; `--write-latency` and `--read-latency` slow it down as etcd slows a real
//! server.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::PostParams;
use kube::{Api, Client};

/// Kills the emulator if the test fails before stopping it.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test]
async fn the_command_writes_a_kubeconfig_serves_and_stops_on_sigterm() {
    if Command::new("kill")
        .arg("-l")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        test_support::skip("no `kill` command to send SIGTERM with");
        return;
    }
    let dir = std::env::temp_dir().join(format!("ipledger-emulator-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    let child = Command::new(env!("CARGO_BIN_EXE_ipledger"))
        .args(["emulator", "--listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(&kubeconfig)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = KillOnDrop(Some(child));
    let pid = guard.0.as_ref().unwrap().id();
    let namespaces: Api<Namespace> = Api::all(client_of(&kubeconfig).await);
    assert!(namespaces.get("kube-system").await.is_ok());

    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = guard.0.take().unwrap();
    let exited = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    })
    .await
    .unwrap();
    assert!(exited.expect("the emulator stops on SIGTERM").success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client for the emulator that wrote `kubeconfig`, once it has (within 20 s).
async fn client_of(kubeconfig: &Path) -> Client {
    let started = Instant::now();
    while !kubeconfig.exists() && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let config = kube::config::Kubeconfig::read_from(kubeconfig).expect("a kubeconfig was written");
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

#[tokio::test]
async fn the_latency_flags_delay_writes() {
    let dir =
        std::env::temp_dir().join(format!("ipledger-emulator-latency-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    let child = Command::new(env!("CARGO_BIN_EXE_ipledger"))
        .args(["emulator", "--listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(&kubeconfig)
        // humantime 2.4 reads fractions, so `0.5ms` is as good as `500us`.
        .args(["--write-latency", "30ms", "--read-latency", "0.5ms"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(Some(child));
    let configmaps: Api<ConfigMap> = Api::default_namespaced(client_of(&kubeconfig).await);
    let cm: ConfigMap =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "slow"}})).unwrap();
    let started = Instant::now();
    configmaps
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(30),
        "the create took {took:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_latency_is_refused_naming_its_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_ipledger"))
        .args([
            "emulator",
            "--kubeconfig",
            "unused",
            "--write-latency",
            "fast",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--write-latency"), "{stderr}");
}
