//! `ipledger sandbox --demo N`: a pod lifecycle on two simulated nodes, played through
//! the real plugin binary, with the pools' state after each phase.
//!
//! Phases: N pods are attached (CNI ADD), alternately on the two nodes; some are detached
//! (CNI DEL, then the pod is deleted, as kubelet does); a few more are deleted without DEL,
//! as when a node crashes, and the controller's leak GC releases their addresses. Each
//! phase checks what the pools' status and the ledger say against what it did, and a
//! mismatch is an error: the demo doubles as a smoke test of the whole path.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::{POOLS, Sandbox, SandboxError, create_pod, plugin_path};
use crate::api::{IPBlock, IPPool};

/// The simulated nodes and their agents' socket files.
pub const NODES: [(&str, &str); 2] = [
    ("sandbox-node-a", "sandbox-node-a.sock"),
    ("sandbox-node-b", "sandbox-node-b.sock"),
];

/// The controller's leak-GC interval and grace in the demo (5 m and 60 s by default), so
/// that the leaked pods' addresses come back within seconds.
pub const GC: Duration = Duration::from_secs(2);

/// How long the pools' status may take to show a phase's outcome. The controller
/// recomputes it on every block change, at most once a second; the leak GC's pass adds
/// the grace and the pass interval.
const CONVERGE: Duration = Duration::from_secs(60);

/// The network name of the demo's attachments.
const NETWORK: &str = "sandbox";

/// One pod of the demo and its attachment.
struct DemoPod {
    name: String,
    uid: String,
    node: &'static str,
    socket: std::path::PathBuf,
}

impl DemoPod {
    /// The containerID the simulated runtime gives the pod's sandbox.
    fn container_id(&self) -> String {
        format!("sandbox-{}", self.name)
    }
}

/// Runs the demo with `pods` pods in `dir`, then stops everything.
pub async fn run(dir: &Path, pods: u32) -> Result<(), SandboxError> {
    // Checked first: without the plugin nothing of the demo can run.
    let plugin = plugin_path();
    if !plugin.is_file() {
        return Err(SandboxError::PluginMissing { path: plugin });
    }
    let sandbox = Sandbox::start(dir, &NODES, GC).await?;
    println!(
        "ipledger sandbox demo in {}: {} pods on {} and {}, through the plugin {}",
        sandbox.dir.display(),
        pods,
        NODES[0].0,
        NODES[1].0,
        plugin.display()
    );
    println!(
        "  the controller's leak GC runs every {GC:?} and spares allocations younger than {GC:?} in demo mode (5m and 60s by default)"
    );
    let outcome = phases(&sandbox, &plugin, pods).await;
    // Stopped whatever the outcome: the agents remove their sockets.
    let stopped = sandbox.stop().await;
    outcome?;
    stopped?;
    println!("stopped the sandbox");
    Ok(())
}

/// The demo's phases on a started sandbox.
async fn phases(sandbox: &Sandbox, plugin: &Path, pods: u32) -> Result<(), SandboxError> {
    let client = &sandbox.client;
    let started = wait_for_pools(client, 0).await?;
    println!();
    println!("the pools, before any pod:");
    print!("{}", pool_table(&started, jiff::Timestamp::now()));

    // Attach: every pod gets one address of each family, all distinct.
    let mut attached = Vec::new();
    for i in 0..pods as usize {
        let (node, _) = NODES[i % NODES.len()];
        let name = format!("demo-{}", i + 1);
        let uid = create_pod(client, &name, node).await?;
        attached.push(DemoPod {
            name,
            uid,
            node,
            socket: sandbox
                .agents
                .iter()
                .find(|a| a.node == node)
                .expect("an agent per node")
                .socket
                .clone(),
        });
    }
    let mut addresses = BTreeSet::new();
    for pod in &attached {
        let result = cni(plugin, "ADD", pod).await?;
        let ips = result_addresses(&result).map_err(|e| {
            SandboxError::Demo(format!("ADD of {} answered {result}: {e}", pod.name))
        })?;
        if ips.len() != POOLS.len() {
            return Err(SandboxError::Demo(format!(
                "ADD of {} gave {} addresses, one per default pool ({}) expected: {result}",
                pod.name,
                ips.len(),
                POOLS.len()
            )));
        }
        for ip in ips {
            if !addresses.insert(ip) {
                return Err(SandboxError::Demo(format!(
                    "{ip} was given to {} and to another pod",
                    pod.name
                )));
            }
        }
    }
    println!();
    println!(
        "attached {} pods: {} ({} addresses, all distinct)",
        attached.len(),
        per_node(&attached),
        addresses.len()
    );
    show_pools(client, attached.len()).await?;

    // Detach a quarter (at least one): DEL through the plugin, then the pod goes, as
    // kubelet does when a pod is deleted.
    let detach = attached.len().div_ceil(4);
    let detached: Vec<DemoPod> = attached.drain(..detach).collect();
    for pod in &detached {
        cni(plugin, "DEL", pod).await?;
        delete_pod(client, &pod.name).await?;
    }
    println!();
    println!(
        "detached {} pods through CNI DEL and deleted them: {}",
        detached.len(),
        per_node(&detached)
    );
    show_pools(client, attached.len()).await?;

    // Leak another quarter: the pods go without DEL, as when a node crashes. Only the
    // controller's leak GC gives these addresses back.
    let leak = attached.len().min(detach);
    let leaked: Vec<DemoPod> = attached.drain(..leak).collect();
    let since = Instant::now();
    for pod in &leaked {
        delete_pod(client, &pod.name).await?;
    }
    println!();
    println!(
        "deleted {} pods without CNI DEL: {}; waiting for the controller's leak GC",
        leaked.len(),
        per_node(&leaked)
    );
    let pools = wait_for_pools(client, attached.len()).await?;
    check_ledger(client, &attached).await?;
    println!(
        "the controller's leak GC released the addresses of {} pods in {:.1} s; the ledger holds exactly the {} attached pods' addresses",
        leaked.len(),
        since.elapsed().as_secs_f64(),
        attached.len()
    );
    print!("{}", pool_table(&pools, jiff::Timestamp::now()));
    println!();
    println!(
        "{} pods remain attached: {}",
        attached.len(),
        per_node(&attached)
    );
    Ok(())
}

/// Runs the plugin binary for `command` and `pod` as a container runtime would: the CNI
/// environment, and on stdin an IPAM-only network config naming the pod's node's agent
/// (the demo creates no network namespace, so no main plugin runs).
async fn cni(plugin: &Path, command: &str, pod: &DemoPod) -> Result<Value, SandboxError> {
    let config = json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "type": "ipledger",
        "ipam": {"type": "ipledger", "socket": pod.socket},
    });
    let failed = |what: String| {
        SandboxError::Demo(format!(
            "{command} of pod default/{} on {}: {what}",
            pod.name, pod.node
        ))
    };
    let mut child = tokio::process::Command::new(plugin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", pod.container_id())
        .env(
            "CNI_NETNS",
            format!("/var/run/netns/{}", pod.container_id()),
        )
        .env("CNI_IFNAME", "eth0")
        .env(
            "CNI_PATH",
            plugin.parent().unwrap_or_else(|| Path::new("/")),
        )
        .env(
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={};K8S_POD_UID={}",
                pod.name, pod.uid
            ),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(format!("cannot run {}: {e}", plugin.display())))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(config.to_string().as_bytes())
        .await
        .map_err(|e| failed(format!("writing the network config: {e}")))?;
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .map_err(|_| failed("the plugin did not exit within 60 s".into()))?
        .map_err(|e| failed(e.to_string()))?;
    if !output.status.success() {
        return Err(failed(format!(
            "the plugin failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    if output.stdout.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| failed(format!("the plugin printed no JSON result: {e}")))
}

/// The addresses of a CNI ADD result.
fn result_addresses(result: &Value) -> Result<Vec<IpAddr>, String> {
    result["ips"]
        .as_array()
        .ok_or("no ips")?
        .iter()
        .map(|ip| {
            let address = ip["address"].as_str().ok_or("an ip without address")?;
            address
                .parse::<ipnet::IpNet>()
                .map(|net| net.addr())
                .map_err(|e| format!("{address}: {e}"))
        })
        .collect()
}

/// `10 on sandbox-node-a, 10 on sandbox-node-b`.
fn per_node(pods: &[DemoPod]) -> String {
    NODES
        .iter()
        .map(|(node, _)| {
            let count = pods.iter().filter(|p| p.node == *node).count();
            format!("{count} on {node}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn delete_pod(client: &Client, name: &str) -> Result<(), SandboxError> {
    Api::<Pod>::namespaced(client.clone(), "default")
        .delete(name, &DeleteParams::default())
        .await
        .map_err(|e| SandboxError::Demo(format!("deleting the pod default/{name}: {e}")))?;
    Ok(())
}

/// Waits until the pools' status shows `pods` attachments, then prints the table.
async fn show_pools(client: &Client, pods: usize) -> Result<(), SandboxError> {
    let pools = wait_for_pools(client, pods).await?;
    print!("{}", pool_table(&pools, jiff::Timestamp::now()));
    Ok(())
}

/// Waits (at most [`CONVERGE`]) until the controller's status of every pool counts one
/// address per pod of `pods` and is Ready; returns the pools. The status is the
/// controller's, written after the agents' writes: the demo checks it, not its own count.
async fn wait_for_pools(client: &Client, pods: usize) -> Result<Vec<IPPool>, SandboxError> {
    let api = Api::<IPPool>::all(client.clone());
    let expected = pods.to_string();
    let deadline = Instant::now() + CONVERGE;
    loop {
        let pools = api
            .list(&ListParams::default())
            .await
            .map_err(|e| SandboxError::Demo(format!("listing the pools: {e}")))?
            .items;
        if pools.len() == POOLS.len()
            && pools
                .iter()
                .all(|p| shown(p) == (Some(expected.as_str()), true))
        {
            return Ok(pools);
        }
        if Instant::now() >= deadline {
            let seen: Vec<String> = pools
                .iter()
                .map(|p| {
                    let (allocated, ready) = shown(p);
                    format!(
                        "{} allocated {}, ready {ready}",
                        p.name_any(),
                        allocated.unwrap_or("<none>")
                    )
                })
                .collect();
            return Err(SandboxError::Demo(format!(
                "the pools' status did not show {expected} allocated addresses each within {} s: {}",
                CONVERGE.as_secs(),
                seen.join("; ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a pool's status shows: allocated, and whether it is Ready.
fn shown(pool: &IPPool) -> (Option<&str>, bool) {
    let status = pool.status.as_ref();
    let allocated = status.and_then(|s| s.allocated.as_deref());
    let ready = status.is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    });
    (allocated, ready)
}

/// Checks that the ledger holds exactly one address per family for each pod of
/// `attached`, and nothing else: the leak GC freed the leaked pods' records and none of a
/// live pod's.
async fn check_ledger(client: &Client, attached: &[DemoPod]) -> Result<(), SandboxError> {
    let blocks = Api::<IPBlock>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| SandboxError::Demo(format!("listing the blocks: {e}")))?
        .items;
    let mut held: BTreeMap<String, usize> = BTreeMap::new();
    for block in &blocks {
        for record in &block.spec.allocations {
            *held.entry(record.container_id.clone()).or_default() += 1;
        }
    }
    let expected: BTreeMap<String, usize> = attached
        .iter()
        .map(|p| (p.container_id(), POOLS.len()))
        .collect();
    if held != expected {
        return Err(SandboxError::Demo(format!(
            "the ledger's records per containerID are {held:?}, expected {expected:?}"
        )));
    }
    Ok(())
}

/// The pools as `kubectl get ippools` prints them: the CRD's additionalPrinterColumns
/// (`src/api/pool.rs`), left-aligned, three spaces apart, `<none>` for a missing value.
pub fn pool_table(pools: &[IPPool], now: jiff::Timestamp) -> String {
    let mut rows = vec![["NAME", "CIDR", "ALLOCATED", "FREE", "READY", "AGE"].map(String::from)];
    for pool in pools {
        let status = pool.status.as_ref();
        let none = || "<none>".to_string();
        let ready = status
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.clone());
        let age = pool
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| human_duration(now.duration_since(t.0)));
        rows.push([
            pool.name_any(),
            pool.spec.cidr.clone(),
            status
                .and_then(|s| s.allocated.clone())
                .unwrap_or_else(none),
            status.and_then(|s| s.free.clone()).unwrap_or_else(none),
            ready.unwrap_or_else(none),
            age.unwrap_or_else(none),
        ]);
    }
    let mut widths = [0; 6];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut table = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        table.push_str(line.join("   ").trim_end());
        table.push('\n');
    }
    table
}

/// An age as kubectl prints it (apimachinery's `duration.HumanDuration`): `42s`, `3m4s`,
/// `15m`, `5h3m`, `2d4h`, ...
fn human_duration(age: jiff::SignedDuration) -> String {
    let seconds = age.as_secs();
    if seconds < -1 {
        return "<invalid>".into();
    }
    let seconds = seconds.max(0);
    let (minutes, hours) = (seconds / 60, seconds / 3600);
    let with = |big: i64, unit: &str, small: i64, small_unit: &str| {
        if small == 0 {
            format!("{big}{unit}")
        } else {
            format!("{big}{unit}{small}{small_unit}")
        }
    };
    match () {
        _ if seconds < 120 => format!("{seconds}s"),
        _ if minutes < 10 => with(minutes, "m", seconds % 60, "s"),
        _ if minutes < 180 => format!("{minutes}m"),
        _ if hours < 8 => with(hours, "h", minutes % 60, "m"),
        _ if hours < 48 => format!("{hours}h"),
        _ if hours < 24 * 8 => with(hours / 24, "d", hours % 24, "h"),
        _ if hours < 24 * 365 * 2 => format!("{}d", hours / 24),
        _ if hours < 24 * 365 * 8 => with(hours / 24 / 365, "y", hours / 24 % 365, "d"),
        _ => format!("{}y", hours / 24 / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{IPPoolSpec, IPPoolStatus};

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        let age = |s: i64| human_duration(jiff::SignedDuration::from_secs(s));
        assert_eq!(age(0), "0s");
        assert_eq!(age(119), "119s");
        assert_eq!(age(184), "3m4s");
        assert_eq!(age(180), "3m");
        assert_eq!(age(15 * 60 + 7), "15m");
        assert_eq!(age(5 * 3600 + 3 * 60), "5h3m");
        assert_eq!(age(30 * 3600), "30h");
        assert_eq!(age(52 * 3600), "2d4h");
        assert_eq!(age(-5), "<invalid>");
    }

    #[test]
    fn the_table_has_the_printer_columns_aligned() {
        let created = jiff::Timestamp::from_second(1_000_000).unwrap();
        let mut counted = IPPool::new(
            "sandbox-v4",
            IPPoolSpec {
                cidr: "10.244.0.0/16".into(),
                ..Default::default()
            },
        );
        counted.metadata.creation_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(created),
        );
        counted.status = Some(IPPoolStatus {
            allocated: Some("20".into()),
            free: Some("65513".into()),
            ..Default::default()
        });
        let fresh = IPPool::new(
            "v6",
            IPPoolSpec {
                cidr: "fd00:10:244::/48".into(),
                ..Default::default()
            },
        );
        let now = jiff::Timestamp::from_second(1_000_042).unwrap();

        let table = pool_table(&[counted, fresh], now);

        assert_eq!(
            table,
            "NAME         CIDR               ALLOCATED   FREE     READY    AGE\n\
             sandbox-v4   10.244.0.0/16      20          65513    <none>   42s\n\
             v6           fd00:10:244::/48   <none>      <none>   <none>   <none>\n"
        );
    }
}
