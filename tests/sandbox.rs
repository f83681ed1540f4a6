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

/// One row of a pools table the demo prints, as `kubectl get ippools` would.
#[derive(Debug)]
struct Row {
    allocated: u128,
    free: u128,
    ready: String,
}

/// The pools table printed after the first line that starts with `phase`, by pool name.
fn table_after(lines: &[&str], phase: &str) -> std::collections::HashMap<String, Row> {
    let at = lines
        .iter()
        .position(|l| l.starts_with(phase))
        .unwrap_or_else(|| panic!("no line starting with {phase:?}"));
    let header = at
        + lines[at..]
            .iter()
            .position(|l| l.starts_with("NAME"))
            .unwrap_or_else(|| panic!("no table after {phase:?}"));
    assert_eq!(
        lines[header].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "CIDR", "ALLOCATED", "FREE", "READY", "AGE"],
        "the columns of `kubectl get ippools`"
    );
    lines[header + 1..header + 3]
        .iter()
        .map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cells.len(), 6, "{line}");
            let number = |s: &str| s.parse().unwrap_or_else(|_| panic!("{s} in {line}"));
            let row = Row {
                allocated: number(cells[2]),
                free: number(cells[3]),
                ready: cells[4].to_string(),
            };
            (cells[0].to_string(), row)
        })
        .collect()
}

/// The number a phase line starts with after its verb: `attached 20 pods: ...` → 20.
fn count(lines: &[&str], phase: &str) -> u128 {
    let line = lines
        .iter()
        .find(|l| l.starts_with(phase))
        .unwrap_or_else(|| panic!("no line starting with {phase:?}"));
    line[phase.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line}"))
}

/// `ipledger sandbox --demo 20` runs to completion, and the pools' tables it prints
/// after each phase agree with what it says it did: one IPv4 and one IPv6 address per
/// attached pod, fewer after DEL, fewer again once the leak GC has collected the pods
/// deleted without DEL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_attaches_detaches_and_collects_leaks() {
    let dir = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_ipledger"))
        .args(["sandbox", "--demo", "20", "--dir"])
        .arg(dir.path())
        .env("IPLEDGER_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the demo finishes within 180 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{stderr}",
        output.status
    );
    let lines: Vec<&str> = stdout.lines().collect();

    let attached = count(&lines, "attached ");
    let detached = count(&lines, "detached ");
    let leaked = count(&lines, "deleted ");
    assert_eq!(attached, 20, "{stdout}");
    assert!(
        stdout.contains("attached 20 pods: 10 on sandbox-node-a, 10 on sandbox-node-b"),
        "{stdout}"
    );
    assert!(
        detached >= 1 && leaked >= 1 && detached + leaked < attached,
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "the controller's leak GC released the addresses of {leaked} pods"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("every 2s"),
        "the demo's GC interval is stated: {stdout}"
    );

    // Capacity is what the pools' FREE shows before any pod: a /16 less its network,
    // broadcast and gateway addresses; the IPv6 one is taken as printed.
    let before = table_after(&lines, "the pools, before any pod");
    assert_eq!(before["sandbox-v4"].free, 65533);
    for (phase, expected) in [
        ("attached ", attached),
        ("detached ", attached - detached),
        (
            "the controller's leak GC released",
            attached - detached - leaked,
        ),
    ] {
        let table = table_after(&lines, phase);
        for pool in ["sandbox-v4", "sandbox-v6"] {
            let row = &table[pool];
            assert_eq!(row.allocated, expected, "{pool} after {phase:?}:\n{stdout}");
            assert_eq!(
                row.free + row.allocated,
                before[pool].free,
                "{pool} after {phase:?}"
            );
            assert_eq!(row.ready, "True", "{pool} after {phase:?}");
        }
    }
    let sockets: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".sock"))
        .collect();
    assert!(
        sockets.is_empty(),
        "the agents removed their sockets: {sockets:?}"
    );
}

/// `--demo 0` is refused by the argument parser, naming the flag, before anything starts.
#[tokio::test]
async fn the_demo_refuses_zero_pods() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ipledger"))
        .args(["sandbox", "--demo", "0", "--dir"])
        .arg(dir.path().join("sandbox"))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("--demo"), "{stderr}");
    assert!(!dir.path().join("sandbox").exists(), "nothing started");
}

/// Without `ipledger-cni` beside the executable the demo stops at once, naming the path.
#[tokio::test]
async fn the_demo_without_the_plugin_binary_says_so() {
    let built = std::path::Path::new(env!("CARGO_BIN_EXE_ipledger"));
    // A hard link in the build directory (one filesystem): the executable's own path,
    // which is where the demo looks for the plugin, then has no `ipledger-cni` beside it.
    let alone = tempfile::tempdir_in(built.parent().unwrap()).unwrap();
    let exe = alone.path().join("ipledger");
    if std::fs::hard_link(built, &exe).is_err() {
        std::fs::copy(built, &exe).unwrap();
    }
    let output = Command::new(&exe)
        .args(["sandbox", "--demo", "2", "--dir"])
        .arg(alone.path().join("sandbox"))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&alone.path().join("ipledger-cni").display().to_string()),
        "{stderr}"
    );
}
