//! The load: concurrent flows per simulated node, each attaching pods and detaching them
//! as a kubelet and its container runtime would, recording every ADD result and DEL call.
//!
//! A flow first attaches `hold` pods (the fill), then churns: each operation detaches its
//! oldest pod and attaches a new one. A detach is a DEL and then the pod's deletion; for
//! a share of them (`vanish`) only the pod is deleted, as when a node dies, so that only
//! the controller's GC can give the address back. Each pod is created a step before its
//! ADD, so the agent's watch usually knows it by then, as it knows a pod that kubelet
//! starts.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::history::Held;
use super::report::{Failures, Figures, Latency};

/// The interface name of every attachment the load makes.
pub const IF_NAME: &str = "eth0";

/// How a CNI call reaches the IPAM.
#[derive(Clone, Debug)]
pub enum Caller {
    /// The plugin binary, run as a container runtime runs it (`--via cni`).
    Binary(PathBuf),
    /// The ipledger plugin's own code in this process, straight at the agent's socket
    /// (`--via socket`): the same requests without a process start.
    InProcess,
}

/// One simulated node: its name and the network configuration its calls carry.
#[derive(Debug)]
pub struct Target {
    pub node: String,
    pub config: Value,
}

/// A refused or failed call: its CNI error code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallError {
    pub code: u32,
    pub msg: String,
}

/// The identity of one attachment.
#[derive(Clone, Debug)]
pub struct PodId {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
}

impl PodId {
    /// The attachment's container ID: the pod's name, which the load never reuses.
    pub fn container_id(&self) -> &str {
        &self.name
    }
}

impl Caller {
    /// Runs `verb` (`ADD`, `DEL`) for `pod` on `target`; the addresses of an ADD result.
    pub async fn call(
        &self,
        verb: &str,
        target: &Target,
        pod: &PodId,
    ) -> Result<Vec<IpAddr>, CallError> {
        let cni_path = match self {
            Caller::Binary(binary) => binary
                .parent()
                .unwrap_or_else(|| Path::new("/"))
                .to_path_buf(),
            Caller::InProcess => PathBuf::from("/opt/cni/bin"),
        };
        let mut cni_args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
            pod.namespace, pod.name
        );
        if let Some(uid) = &pod.uid {
            cni_args.push_str(&format!(";K8S_POD_UID={uid}"));
        }
        let env: Vec<(&str, String)> = vec![
            ("CNI_COMMAND", verb.to_string()),
            ("CNI_CONTAINERID", pod.container_id().to_string()),
            (
                "CNI_NETNS",
                format!("/var/run/netns/{}", pod.container_id()),
            ),
            ("CNI_IFNAME", IF_NAME.to_string()),
            ("CNI_PATH", cni_path.display().to_string()),
            ("CNI_ARGS", cni_args),
        ];
        let stdin = target.config.to_string().into_bytes();
        let (stdout, success) = match self {
            Caller::Binary(binary) => run_binary(binary, &env, &stdin).await?,
            Caller::InProcess => {
                let env: Vec<(String, String)> =
                    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                let outcome = tokio::task::spawn_blocking(move || {
                    let lookup = |key: &str| {
                        env.iter()
                            .find(|(k, _)| k == key)
                            .map(|(_, v)| std::ffi::OsString::from(v))
                    };
                    ipledger_cni::run(&lookup, &mut stdin.as_slice())
                })
                .await
                .map_err(|e| CallError {
                    code: 5,
                    msg: format!("the in-process plugin call failed: {e}"),
                })?;
                (outcome.stdout.into_bytes(), outcome.exit_code == 0)
            }
        };
        parse_output(&stdout, success, verb)
    }
}

async fn run_binary(
    binary: &Path,
    env: &[(&str, String)],
    stdin: &[u8],
) -> Result<(Vec<u8>, bool), CallError> {
    let failed = |msg: String| CallError { code: 5, msg };
    let mut child = tokio::process::Command::new(binary)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(format!("cannot run {}: {e}", binary.display())))?;
    let mut pipe = child.stdin.take().expect("piped stdin");
    pipe.write_all(stdin)
        .await
        .map_err(|e| failed(format!("writing the network config: {e}")))?;
    drop(pipe);
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .map_err(|_| failed(format!("{} did not exit within 60 s", binary.display())))?
        .map_err(|e| failed(e.to_string()))?;
    Ok((output.stdout, output.status.success()))
}

/// Reads a plugin's stdout: the addresses of an ADD result, or the error result.
fn parse_output(stdout: &[u8], success: bool, verb: &str) -> Result<Vec<IpAddr>, CallError> {
    let text = String::from_utf8_lossy(stdout);
    if success && (verb != "ADD" || !text.trim().is_empty()) {
        if verb != "ADD" {
            return Ok(Vec::new());
        }
        let result: Value = serde_json::from_str(&text).map_err(|e| CallError {
            code: 6,
            msg: format!("the ADD result is not JSON: {e}"),
        })?;
        let addresses: Option<Vec<IpAddr>> = result["ips"]
            .as_array()
            .map(|ips| {
                ips.iter()
                    .map(|ip| {
                        ip["address"]
                            .as_str()
                            .and_then(|a| a.split('/').next())
                            .and_then(|a| a.parse().ok())
                    })
                    .collect::<Option<Vec<IpAddr>>>()
            })
            .unwrap_or(None);
        return match addresses {
            Some(addresses) if !addresses.is_empty() => Ok(addresses),
            _ => Err(CallError {
                code: 6,
                msg: format!("the ADD result has no addresses: {}", text.trim()),
            }),
        };
    }
    let error: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    Err(CallError {
        code: error["code"].as_u64().unwrap_or(0) as u32,
        msg: error["msg"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("failed without an error result: {}", text.trim())),
    })
}

/// What every flow records, shared.
pub struct Recorder {
    started: Instant,
    log: Mutex<Log>,
    /// Calls done so far, for the progress line.
    pub adds: AtomicU64,
    pub dels: AtomicU64,
}

#[derive(Default)]
struct Log {
    held: Vec<Held>,
    add_ms: Vec<f64>,
    del_ms: Vec<f64>,
    errors: BTreeMap<String, Failures>,
    vanished: u64,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            started: Instant::now(),
            log: Mutex::new(Log::default()),
            adds: AtomicU64::new(0),
            dels: AtomicU64::new(0),
        })
    }

    /// Time since the run started.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn added(&self, ms: f64, pod: &PodId, addresses: Vec<IpAddr>) -> usize {
        let from = self.now();
        self.adds.fetch_add(1, Ordering::Relaxed);
        let mut log = self.log();
        log.add_ms.push(ms);
        log.held.push(Held {
            container_id: pod.container_id().to_string(),
            addresses,
            from,
            until: None,
        });
        log.held.len() - 1
    }

    fn ended(&self, held: usize, at: Duration) {
        self.log().held[held].until = Some(at);
    }

    fn deleted(&self, ms: f64) {
        self.dels.fetch_add(1, Ordering::Relaxed);
        self.log().del_ms.push(ms);
    }

    fn vanished(&self) {
        self.log().vanished += 1;
    }

    /// Counts a failure under its CNI code (`what` for one that is not a CNI call's).
    pub fn failed(&self, what: &str, error: &CallError) {
        let key = if error.code == 0 {
            what.to_string()
        } else {
            error.code.to_string()
        };
        let mut log = self.log();
        let entry = log.errors.entry(key).or_default();
        entry.count += 1;
        if entry.example.is_empty() {
            entry.example = format!("{what}: {}", error.msg);
        }
    }

    /// Every attachment's record so far.
    pub fn history(&self) -> Vec<Held> {
        self.log().held.clone()
    }

    /// The latency figures and failures so far, under `plugin`'s name.
    pub fn figures(&self, plugin: &str) -> Figures {
        let log = self.log();
        Figures {
            plugin: plugin.into(),
            add: Latency::of(&log.add_ms),
            del: Latency::of(&log.del_ms),
            vanished: log.vanished,
            errors: log.errors.clone(),
            ..Default::default()
        }
    }
}

/// How many churn operations are left, or until when the churn runs; and the stop flag
/// (Ctrl-C) every phase checks.
pub struct Budget {
    left: Option<AtomicI64>,
    until: Option<Instant>,
    stopped: Arc<AtomicBool>,
    taken: AtomicUsize,
}

impl Budget {
    /// No limit: only the stop flag ends it.
    pub fn never() -> Budget {
        Budget {
            left: None,
            until: None,
            stopped: Arc::new(AtomicBool::new(false)),
            taken: AtomicUsize::new(0),
        }
    }

    /// `n` operations, or until `stopped`.
    pub fn operations(n: i64, stopped: Arc<AtomicBool>) -> Budget {
        Budget {
            left: Some(AtomicI64::new(n)),
            stopped,
            ..Budget::never()
        }
    }

    /// Until `deadline`, or until `stopped`.
    pub fn until(deadline: Instant, stopped: Arc<AtomicBool>) -> Budget {
        Budget {
            until: Some(deadline),
            stopped,
            ..Budget::never()
        }
    }

    /// The stop flag: set, it ends every budget sharing it.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.stopped.clone()
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Takes one operation; false once the budget is spent.
    fn take(&self) -> bool {
        let granted = !self.is_stopped()
            && self.until.is_none_or(|deadline| Instant::now() < deadline)
            && self
                .left
                .as_ref()
                .is_none_or(|left| left.fetch_sub(1, Ordering::Relaxed) > 0);
        if granted {
            self.taken.fetch_add(1, Ordering::Relaxed);
        }
        granted
    }

    /// Operations taken so far.
    pub fn taken(&self) -> usize {
        self.taken.load(Ordering::Relaxed)
    }
}

/// Where a flow's pods live: `None` for an IPAM that reads no API (host-local).
#[derive(Clone)]
pub struct Pods {
    pub api: Api<Pod>,
    pub namespace: String,
}

/// One attached pod of a flow.
pub struct Live {
    pub pod: PodId,
    /// Its entry in the recorder's history.
    held: usize,
    /// The addresses its ADD returned.
    pub addresses: Vec<IpAddr>,
}

/// One concurrent attach/detach flow of a simulated node.
pub struct Flow {
    pub target: Arc<Target>,
    caller: Arc<Caller>,
    recorder: Arc<Recorder>,
    pods: Option<Pods>,
    /// Pod names are `{prefix}-{seq}`.
    prefix: String,
    seq: u64,
    hold: usize,
    vanish: f64,
    rng: fastrand::Rng,
    pub live: VecDeque<Live>,
    next: Option<tokio::task::JoinHandle<Result<PodId, CallError>>>,
}

impl Flow {
    /// Flow `index` of `target`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        target: Arc<Target>,
        index: usize,
        caller: Arc<Caller>,
        recorder: Arc<Recorder>,
        pods: Option<Pods>,
        hold: usize,
        vanish: f64,
        seed: u64,
    ) -> Flow {
        let prefix = format!("{}-f{index}", target.node);
        let rng = fastrand::Rng::with_seed(seed ^ fxhash(&prefix));
        Flow {
            target,
            caller,
            recorder,
            pods,
            prefix,
            seq: 0,
            hold,
            vanish,
            rng,
            live: VecDeque::new(),
            next: None,
        }
    }

    /// Attaches pods until the flow holds `hold`, or `stop` is set.
    pub async fn fill(mut self, stop: Arc<Budget>) -> Flow {
        while self.live.len() < self.hold && !stop.is_stopped() {
            if !self.attach().await {
                // A refusal (exhaustion, say) would repeat: count it once per slot.
                self.hold -= 1;
            }
        }
        self
    }

    /// Detaches the oldest pod and attaches a new one, while `budget` lasts.
    pub async fn churn(mut self, budget: Arc<Budget>) -> Flow {
        while budget.take() {
            if !self.live.is_empty() {
                let vanish = self.rng.f64() < self.vanish;
                self.detach(vanish).await;
            }
            self.attach().await;
        }
        self
    }

    /// Deletes `count` of the flow's live pods without DEL, the oldest first.
    pub async fn vanish(mut self, count: usize) -> Flow {
        for _ in 0..count {
            self.detach(true).await;
        }
        self
    }

    /// Detaches every live pod by DEL (the end of a run on a cluster).
    pub async fn detach_all(mut self) -> Flow {
        while !self.live.is_empty() {
            self.detach(false).await;
        }
        self
    }

    /// The next pod, created (for an IPAM that reads the API) one step ahead.
    async fn next_pod(&mut self) -> Result<PodId, CallError> {
        let pending = match self.next.take() {
            Some(pending) => pending,
            None => self.create_ahead(),
        };
        self.next = Some(self.create_ahead());
        pending.await.unwrap_or_else(|e| {
            Err(CallError {
                code: 0,
                msg: e.to_string(),
            })
        })
    }

    fn create_ahead(&mut self) -> tokio::task::JoinHandle<Result<PodId, CallError>> {
        let name = format!("{}-{}", self.prefix, self.seq);
        self.seq += 1;
        let pods = self.pods.clone();
        let node = self.target.node.clone();
        tokio::spawn(async move {
            match pods {
                None => Ok(PodId {
                    namespace: "bench".into(),
                    name,
                    uid: None,
                }),
                Some(pods) => create_pod(&pods, &name, &node).await,
            }
        })
    }

    /// Attaches one new pod; false when its ADD failed.
    pub async fn attach(&mut self) -> bool {
        let pod = match self.next_pod().await {
            Ok(pod) => pod,
            Err(error) => {
                self.recorder.failed("creating a pod", &error);
                return false;
            }
        };
        let started = Instant::now();
        match self.caller.call("ADD", &self.target, &pod).await {
            Ok(addresses) => {
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                let held = self.recorder.added(ms, &pod, addresses.clone());
                self.live.push_back(Live {
                    pod,
                    held,
                    addresses,
                });
                true
            }
            Err(error) => {
                self.recorder.failed("ADD", &error);
                // A runtime whose ADD failed tears the sandbox down with a DEL.
                if let Err(error) = self.caller.call("DEL", &self.target, &pod).await {
                    self.recorder.failed("DEL after a failed ADD", &error);
                }
                self.delete_pod(&pod).await;
                false
            }
        }
    }

    /// Adds an attachment made outside the flow (the duplicate fault's) to its live pods.
    pub fn adopt(&mut self, pod: PodId, addresses: Vec<IpAddr>) {
        let held = self.recorder.added(0.0, &pod, addresses.clone());
        self.live.push_back(Live {
            pod,
            held,
            addresses,
        });
    }

    /// Detaches the oldest pod: DEL then delete, or (`vanish`) only delete.
    async fn detach(&mut self, vanish: bool) {
        let Some(live) = self.live.pop_front() else {
            return;
        };
        self.recorder.ended(live.held, self.recorder.now());
        if vanish {
            self.recorder.vanished();
        } else {
            let started = Instant::now();
            match self.caller.call("DEL", &self.target, &live.pod).await {
                Ok(_) => self
                    .recorder
                    .deleted(started.elapsed().as_secs_f64() * 1000.0),
                Err(error) => self.recorder.failed("DEL", &error),
            }
        }
        self.delete_pod(&live.pod).await;
    }

    async fn delete_pod(&self, pod: &PodId) {
        let Some(pods) = &self.pods else {
            return;
        };
        match pods.api.delete(&pod.name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => self.recorder.failed(
                "deleting a pod",
                &CallError {
                    code: 0,
                    msg: error.to_string(),
                },
            ),
        }
    }

    /// Stops creating pods ahead; the one created last is deleted.
    pub async fn finish(&mut self) {
        if let Some(pending) = self.next.take()
            && let Ok(Ok(pod)) = pending.await
        {
            self.delete_pod(&pod).await;
        }
    }
}

/// Creates the pod `name` bound to `node`, as the scheduler leaves it for kubelet.
pub async fn create_pod(pods: &Pods, name: &str, node: &str) -> Result<PodId, CallError> {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "ipledger-bench"}},
        "spec": {"nodeName": node, "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}]},
    }))
    .expect("a Pod");
    let created = pods
        .api
        .create(&PostParams::default(), &pod)
        .await
        .map_err(|e| CallError {
            code: 0,
            msg: format!("pod {}/{name}: {e}", pods.namespace),
        })?;
    Ok(PodId {
        namespace: pods.namespace.clone(),
        name: name.into(),
        uid: created.metadata.uid,
    })
}

/// A stable 64-bit hash of `text` (FNV-1a), so that a seed gives the same run again.
fn fxhash(text: &str) -> u64 {
    text.bytes().fold(0xcbf29ce484222325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x100000001b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_add_result_gives_its_addresses() {
        let stdout = br#"{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.5/26","gateway":"10.1.0.1"},{"address":"fd00::5/122"}]}"#;
        assert_eq!(
            parse_output(stdout, true, "ADD"),
            Ok(vec![
                "10.1.0.5".parse().unwrap(),
                "fd00::5".parse().unwrap()
            ])
        );
    }

    #[test]
    fn an_error_result_gives_its_code_and_message() {
        let stdout = br#"{"cniVersion":"1.0.0","code":110,"msg":"pool p is exhausted"}"#;
        assert_eq!(
            parse_output(stdout, false, "ADD"),
            Err(CallError {
                code: 110,
                msg: "pool p is exhausted".into()
            })
        );
        assert_eq!(parse_output(b"", true, "DEL"), Ok(vec![]));
        let empty = parse_output(br#"{"ips":[]}"#, true, "ADD").unwrap_err();
        assert_eq!(empty.code, 6);
        let silent = parse_output(b"", false, "DEL").unwrap_err();
        assert_eq!(silent.code, 0);
    }

    #[tokio::test]
    async fn a_flow_fills_churns_and_vanishes_in_its_history() {
        // host-local-like: no API; the "plugin" is a script answering every ADD with a
        // new address, so the flow's bookkeeping is what is checked.
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("fake");
        std::fs::write(
            &plugin,
            "#!/bin/sh\ncat >/dev/null\nif [ \"$CNI_COMMAND\" = ADD ]; then n=$(echo \"$CNI_CONTAINERID\" | sed 's/.*-//'); echo \"{\\\"ips\\\":[{\\\"address\\\":\\\"10.0.0.$n/24\\\"}]}\"; fi\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let recorder = Recorder::new();
        let target = Arc::new(Target {
            node: "n".into(),
            config: serde_json::json!({"cniVersion": "1.0.0", "name": "x"}),
        });
        let flow = Flow::new(
            target,
            0,
            Arc::new(Caller::Binary(plugin)),
            recorder.clone(),
            None,
            3,
            1.0,
            1,
        );
        let flow = flow.fill(Arc::new(Budget::never())).await;
        assert_eq!(flow.live.len(), 3);
        let budget = Arc::new(Budget::operations(2, Budget::never().flag()));
        let flow = flow.churn(budget.clone()).await;
        assert_eq!(budget.taken(), 2);
        // Every detach vanished (vanish = 1.0): no DEL was called.
        let figures = recorder.figures("fake");
        assert_eq!(
            (figures.add.count, figures.del.count, figures.vanished),
            (5, 0, 2)
        );
        let mut flow = flow.vanish(1).await;
        flow.finish().await;
        let history = recorder.history();
        let live: Vec<&str> = super::super::history::live(&history).into_iter().collect();
        assert_eq!(live, vec!["n-f0-3", "n-f0-4"]);
        assert_eq!(
            history[0].addresses,
            vec!["10.0.0.0".parse::<IpAddr>().unwrap()]
        );
        assert!(history[0].until.unwrap() >= history[0].from);
    }
}
