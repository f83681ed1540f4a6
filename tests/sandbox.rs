//! The README's "try it" command: `ipledger sandbox` starts, and the plugin command it
//! prints allocates an IPv4 and an IPv6 address; Ctrl-C stops it cleanly.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_prints_a_plugin_command_that_allocates() {
    let dir = tempfile::tempdir().unwrap();
    let mut sandbox = Command::new(env!("CARGO_BIN_EXE_ipledger"))
        .args(["sandbox", "--dir"])
        .arg(dir.path())
        .env("IPLEDGER_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the sandbox starts");
    let mut lines = BufReader::new(sandbox.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = line.starts_with("Ctrl-C");
            printed.push(line);
            if done {
                break;
            }
        }
    });
    read.await
        .expect("the sandbox prints its instructions within 60 s");

    // The ADD command is the three lines after "Allocate addresses ...", joined as a shell would.
    let start = printed
        .iter()
        .position(|l| l.starts_with("Allocate addresses"))
        .expect("an ADD command")
        + 1;
    let add = printed[start..start + 3].join("\n");
    assert!(add.contains("CNI_COMMAND=ADD"), "{add}");
    let output = Command::new("sh")
        .arg("-c")
        .arg(&add)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{add}\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let addresses: Vec<ipnet::IpNet> = result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| ip["address"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(addresses.len(), 2, "dual-stack default pools: {result}");
    assert!(
        "10.244.0.0/16"
            .parse::<ipnet::IpNet>()
            .unwrap()
            .contains(&addresses[0].addr())
    );
    assert!(
        "fd00:10:244::/48"
            .parse::<ipnet::IpNet>()
            .unwrap()
            .contains(&addresses[1].addr())
    );
    // The network is a `bridge` one: its `isGateway` takes the result's gateway, and
    // without one the first address of the prefix, which ipledger would hand out too.
    for (ip, gateway) in result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .zip(["10.244.0.1", "fd00:10:244::1"])
    {
        assert_eq!(ip["gateway"], gateway, "{result}");
        let address: ipnet::IpNet = ip["address"].as_str().unwrap().parse().unwrap();
        assert_ne!(address.addr().to_string(), gateway, "{result}");
    }
    assert!(dir.path().join("kubeconfig").exists());

    // The sandbox's controller fills the pools' status: `kubectl get ippools` shows the
    // address allocated.
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(dir.path().join("kubeconfig")).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let pools: kube::Api<ipledger::api::IPPool> =
        kube::Api::all(kube::Client::try_from(config).unwrap());
    let counted = test_support::wait_for(|| async {
        let status = pools.get("sandbox-v4").await.ok()?.status?;
        (status.allocated.as_deref() == Some("1")).then_some(status)
    })
    .await
    .expect("the controller counts the allocation in the pool's status");
    assert!(
        counted
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "{counted:?}"
    );

    let pid = sandbox.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), sandbox.wait())
        .await
        .expect("stops on Ctrl-C")
        .unwrap();
    assert!(status.success(), "clean exit on SIGINT: {status}");
    assert!(
        !dir.path().join("agent.sock").exists(),
        "the socket is removed on exit"
    );
}
