//! Runs the built `ipledger-cni` binary as a container runtime does: CNI env, the
//! network config on stdin, the result or error on stdout, the exit status.
//!
//! Where an agent is needed, `StandInAgent` answers on a unix socket in place of the
//! real ipledger agent: it speaks the real protocol types of [`ipledger_cni::protocol`]
//! but allocates nothing; each test scripts its answers.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use ipledger_cni::protocol::{
    AddRequest, AddResponse, AllocatedIp, CheckRequest, CheckResponse, DelRequest, DelResponse,
    Dns, ErrorBody, GcRequest, GcResponse, Route, StatusQuery, StatusResponse,
};
use serde_json::{Value, json};
use test_support::netns::{NetNs, reference_plugin_missing};

const PLUGIN: &str = env!("CARGO_BIN_EXE_ipledger-cni");
const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// What one plugin run produced.
struct Run {
    exit_code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The stdout as JSON; also checks the run did not panic.
    fn json(&self) -> Value {
        assert!(
            !self.stderr.contains("panicked"),
            "plugin panicked: {}",
            self.stderr
        );
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }

    /// Asserts a CNI error result with `code` echoing `version`, returns its `msg`.
    fn error(&self, code: u64, version: &str) -> String {
        let json = self.json();
        assert_ne!(self.exit_code, 0, "an error must exit non-zero: {json}");
        assert_eq!(json["code"], code, "{json}");
        assert_eq!(json["cniVersion"], version, "{json}");
        json["msg"].as_str().expect("msg is a string").to_owned()
    }

    /// Asserts success with nothing on stdout.
    fn silent_success(&self) {
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        assert_eq!(
            self.exit_code, 0,
            "stdout: {} stderr: {}",
            self.stdout, self.stderr
        );
        assert_eq!(self.stdout, "");
    }
}

/// Runs the plugin with exactly `env` (nothing inherited) and `stdin`.
fn run_plugin(env: &[(&str, &str)], stdin: &[u8]) -> Run {
    let mut child = Command::new(PLUGIN)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the plugin");
    let mut pipe = child.stdin.take().expect("stdin pipe");
    let input = stdin.to_vec();
    // Written from a thread: the plugin may stop reading early (oversized input).
    let writer = thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let output = child.wait_with_output().expect("wait for the plugin");
    writer.join().expect("stdin writer");
    Run {
        exit_code: output
            .status
            .code()
            .expect("exited, not killed by a signal"),
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A fresh directory for sockets, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ipledger-cni-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn socket(&self) -> PathBuf {
        self.0.join("agent.sock")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(version: &str, socket: &Path) -> Value {
    json!({
        "cniVersion": version,
        "name": "pods",
        "type": "bridge",
        "bridge": "cni0",
        "ipam": {"type": "ipledger", "socket": socket, "timeoutSeconds": 5},
    })
}

/// Environment variables of one run.
type Env = Vec<(&'static str, &'static str)>;

fn attachment_env(command: &'static str) -> Env {
    vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "0123abcd"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_NETNS", "/var/run/netns/test"),
        ("CNI_PATH", "/opt/cni/bin"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=5f0c1b2a-1111-2222-3333-444455556666;K8S_POD_INFRA_CONTAINER_ID=0123abcd",
        ),
    ]
}

fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("encode config")
}

// ---------------------------------------------------------------- no agent needed

#[test]
fn version_answers_every_supported_version() {
    for version in VERSIONS {
        let run = run_plugin(
            &[("CNI_COMMAND", "VERSION")],
            &bytes(&json!({"cniVersion": version})),
        );
        assert_eq!(run.exit_code, 0, "{}", run.stderr);
        assert_eq!(
            run.json(),
            json!({"cniVersion": version, "supportedVersions": VERSIONS})
        );
    }
    let run = run_plugin(&[("CNI_COMMAND", "VERSION")], b"");
    assert_eq!(run.exit_code, 0);
    assert_eq!(run.json()["supportedVersions"], json!(VERSIONS));
}

#[test]
fn malformed_stdin_is_a_decode_failure() {
    for garbage in [&b"{\"cniVersion\": \"1.0.0\""[..], b"not json", b"\xff\xfe"] {
        let run = run_plugin(&attachment_env("ADD"), garbage);
        let msg = run.error(6, "1.1.0");
        assert!(msg.starts_with("stdin: "), "{msg}");
    }
    // Valid JSON that is not an object is an invalid config.
    let run = run_plugin(&attachment_env("ADD"), b"[1]");
    run.error(7, "1.1.0");
    // Empty stdin for a command that needs a config.
    let run = run_plugin(&attachment_env("DEL"), b"");
    assert!(run.error(7, "1.1.0").starts_with("stdin: empty"));
}

#[test]
fn oversized_stdin_is_refused_clearly() {
    let mut big = bytes(&config("1.0.0", Path::new("/run/x.sock")));
    big.truncate(big.len() - 1);
    big.extend_from_slice(b",\"padding\":\"");
    big.resize(2 << 20, b'a');
    big.extend_from_slice(b"\"}");
    let run = run_plugin(&attachment_env("ADD"), &big);
    let msg = run.error(7, "1.1.0");
    assert!(msg.contains("larger than 1048576 bytes"), "{msg}");
}

#[test]
fn missing_or_unknown_command_and_missing_env_are_code_4() {
    let stdin = bytes(&config("1.0.0", Path::new("/run/x.sock")));
    let run = run_plugin(&[], &stdin);
    assert!(run.error(4, "1.0.0").starts_with("CNI_COMMAND: missing"));
    let run = run_plugin(&[("CNI_COMMAND", "FROB")], &stdin);
    assert!(run.error(4, "1.0.0").starts_with("CNI_COMMAND: unknown"));
    for missing in ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"] {
        let env: Vec<_> = attachment_env("ADD")
            .into_iter()
            .filter(|(k, _)| *k != missing)
            .collect();
        let run = run_plugin(&env, &stdin);
        let msg = run.error(4, "1.0.0");
        assert!(msg.starts_with(&format!("{missing}: missing")), "{msg}");
    }
}

#[test]
fn unsupported_versions_are_code_1_and_echoed() {
    for version in ["0.1.0", "0.2.0", "2.0.0"] {
        let run = run_plugin(
            &attachment_env("ADD"),
            &bytes(&config(version, Path::new("/run/x.sock"))),
        );
        let msg = run.error(1, version);
        assert!(msg.starts_with("cniVersion: "), "{msg}");
    }
    // Commands newer than the config's version.
    let run = run_plugin(
        &attachment_env("CHECK"),
        &bytes(&config("0.3.1", Path::new("/run/x.sock"))),
    );
    run.error(1, "0.3.1");
    let run = run_plugin(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
        &bytes(&config("1.0.0", Path::new("/run/x.sock"))),
    );
    run.error(1, "1.0.0");
}

#[test]
fn invalid_ifname_and_container_id_are_refused_by_name() {
    let stdin = bytes(&config("0.4.0", Path::new("/run/x.sock")));
    let too_long = "a".repeat(129);
    for (var, value) in [
        ("CNI_IFNAME", "eth0123456789012"),
        ("CNI_IFNAME", ".."),
        ("CNI_IFNAME", "a/b"),
        ("CNI_IFNAME", "eth 0"),
        ("CNI_IFNAME", "eth0:1"),
        ("CNI_CONTAINERID", "-abc"),
        ("CNI_CONTAINERID", "abc$def"),
        ("CNI_CONTAINERID", too_long.as_str()),
    ] {
        let mut env = attachment_env("ADD");
        env.retain(|(k, _)| *k != var);
        env.push((var, value));
        let run = run_plugin(&env, &stdin);
        let msg = run.error(4, "0.4.0");
        assert!(msg.starts_with(&format!("{var}: ")), "{value:?}: {msg}");
    }
}

#[test]
fn config_errors_name_the_field() {
    let mut doc = config("1.0.0", Path::new("/run/x.sock"));
    doc["ipam"]["timeoutSeconds"] = json!(-1);
    let msg = run_plugin(&attachment_env("ADD"), &bytes(&doc)).error(7, "1.0.0");
    assert!(msg.starts_with("ipam.timeoutSeconds: "), "{msg}");
    let mut doc = config("1.0.0", Path::new("/run/x.sock"));
    doc["ipam"]["pool"] = json!("v4");
    let msg = run_plugin(&attachment_env("ADD"), &bytes(&doc)).error(2, "1.0.0");
    assert!(msg.starts_with("ipam.pool: unknown field"), "{msg}");
}

// ---------------------------------------------------------------- no agent listening

fn gc_config(socket: &Path) -> Value {
    let mut doc = config("1.1.0", socket);
    doc["cni.dev/valid-attachments"] = json!([{"containerID": "0123abcd", "ifname": "eth0"}]);
    doc["prevResult"] = json!({"cniVersion": "1.1.0", "ips": [{"address": "10.244.1.7/24"}]});
    doc
}

/// Every command that talks to the agent, its env, and the code for "no agent".
fn agent_commands() -> Vec<(&'static str, Env, u64)> {
    vec![
        ("ADD", attachment_env("ADD"), 11),
        (
            "DEL",
            attachment_env("DEL")
                .into_iter()
                .filter(|(k, _)| *k != "CNI_NETNS")
                .collect(),
            11,
        ),
        ("CHECK", attachment_env("CHECK"), 11),
        (
            "GC",
            vec![("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
            11,
        ),
        (
            "STATUS",
            vec![("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/opt/cni/bin")],
            50,
        ),
    ]
}

#[test]
fn missing_socket_is_try_again_later_naming_the_path() {
    let dir = TempDir::new();
    let socket = dir.socket();
    for (command, env, code) in agent_commands() {
        let run = run_plugin(&env, &bytes(&gc_config(&socket)));
        let msg = run.error(code, "1.1.0");
        assert!(
            msg.contains(&socket.display().to_string()),
            "{command}: {msg}"
        );
        assert!(msg.contains("agent"), "{command}: {msg}");
    }
}

#[test]
fn refused_connection_is_try_again_later() {
    let dir = TempDir::new();
    let socket = dir.socket();
    // A socket file nobody listens on any more: connect is refused.
    drop(UnixListener::bind(&socket).expect("bind"));
    for (command, env, code) in agent_commands() {
        let run = run_plugin(&env, &bytes(&gc_config(&socket)));
        let msg = run.error(code, "1.1.0");
        assert!(msg.contains("refused"), "{command}: {msg}");
    }
}

#[test]
fn silent_agent_times_out_with_try_again_later() {
    let dir = TempDir::new();
    let socket = dir.socket();
    let listener = UnixListener::bind(&socket).expect("bind");
    // Accepts and reads, never answers; the connections stay open until the test ends.
    let held = thread::spawn(move || {
        let mut streams = Vec::new();
        for stream in listener.incoming().take(1) {
            streams.push(stream.expect("accept"));
        }
        thread::sleep(std::time::Duration::from_secs(2));
    });
    let mut doc = config("1.0.0", &socket);
    doc["ipam"]["timeoutSeconds"] = json!(1);
    let run = run_plugin(&attachment_env("ADD"), &bytes(&doc));
    let msg = run.error(11, "1.0.0");
    assert!(msg.contains("no answer within 1 s"), "{msg}");
    held.join().expect("listener thread");
}

// ---------------------------------------------------------------- stand-in agent

/// One request the stand-in agent received.
#[derive(Clone, Debug)]
struct Received {
    method: String,
    path: String,
    body: Vec<u8>,
}

type Answer = fn(&Received) -> (u16, Value);

/// Stands in for the ipledger agent in these tests: serves HTTP/1.1 on a unix socket,
/// decodes requests into the real protocol types and answers with `answer`. It is not
/// the agent and allocates nothing.
struct StandInAgent {
    dir: TempDir,
    received: Arc<Mutex<Vec<Received>>>,
}

impl StandInAgent {
    fn start(answer: Answer) -> StandInAgent {
        let dir = TempDir::new();
        let listener = UnixListener::bind(dir.socket()).expect("bind the stand-in agent");
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        // Detached: it blocks in accept until the test process exits.
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                serve(stream, answer, &log);
            }
        });
        StandInAgent { dir, received }
    }

    fn socket(&self) -> PathBuf {
        self.dir.socket()
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }
}

fn serve(mut stream: UnixStream, answer: Answer, log: &Mutex<Vec<Received>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let request = loop {
        let n = stream.read(&mut chunk).expect("read request");
        assert!(n > 0, "plugin closed before a full request");
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(head) = parsed.parse(&buf).expect("valid HTTP request") {
            let length = parsed
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| {
                    std::str::from_utf8(h.value)
                        .unwrap()
                        .parse::<usize>()
                        .unwrap()
                })
                .unwrap_or(0);
            if buf.len() >= head + length {
                break Received {
                    method: parsed.method.unwrap().to_owned(),
                    path: parsed.path.unwrap().to_owned(),
                    body: buf[head..head + length].to_vec(),
                };
            }
        }
    };
    let (status, body) = answer(&request);
    log.lock().expect("lock").push(request);
    let body = serde_json::to_vec(&body).unwrap();
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

fn to_value<T: serde::Serialize>(value: T) -> Value {
    serde_json::to_value(value).unwrap()
}

fn error_answer(status: u16, code: u32, msg: &str, details: Option<&str>) -> (u16, Value) {
    (
        status,
        to_value(ErrorBody {
            code,
            msg: msg.into(),
            details: details.map(str::to_owned),
        }),
    )
}

/// Answers like an agent with two pools, `v4` and `v6`, and a third, `full`, that is
/// exhausted. ADD allocates from both families unless the config names only `v4`.
fn scripted_agent(request: &Received) -> (u16, Value) {
    let (path, query) = request
        .path
        .split_once('?')
        .unwrap_or((request.path.as_str(), ""));
    match (request.method.as_str(), path) {
        ("POST", "/v1/add") => {
            let add: AddRequest = serde_json::from_slice(&request.body).expect("AddRequest");
            add.validate()
                .expect("the plugin sends only valid requests");
            if add.pools.iter().any(|p| p == "full") {
                return error_answer(
                    409,
                    100,
                    "pool full is exhausted",
                    Some("all 254 addresses of 10.9.0.0/24 are in use"),
                );
            }
            let v4 = add
                .requested_ips
                .iter()
                .find(|ip| ip.is_ipv4())
                .map(|ip| format!("{ip}/24"))
                .unwrap_or_else(|| "10.244.1.7/24".into());
            let mut ips = vec![AllocatedIp {
                address: v4.parse().unwrap(),
                gateway: Some("10.244.1.1".parse().unwrap()),
                pool: "v4".into(),
            }];
            if add.pools != ["v4"] {
                ips.push(AllocatedIp {
                    address: "fd00:10:244::7/64".parse().unwrap(),
                    gateway: Some("fd00:10:244::1".parse().unwrap()),
                    pool: "v6".into(),
                });
            }
            (
                200,
                to_value(AddResponse {
                    ips,
                    routes: vec![Route {
                        dst: "0.0.0.0/0".parse().unwrap(),
                        gw: None,
                    }],
                    dns: Dns {
                        nameservers: vec!["10.96.0.10".parse().unwrap()],
                        ..Dns::default()
                    },
                }),
            )
        }
        ("POST", "/v1/del") => {
            let del: DelRequest = serde_json::from_slice(&request.body).expect("DelRequest");
            del.validate()
                .expect("the plugin sends only valid requests");
            (200, to_value(DelResponse::default()))
        }
        ("POST", "/v1/check") => {
            let check: CheckRequest = serde_json::from_slice(&request.body).expect("CheckRequest");
            check
                .validate()
                .expect("the plugin sends only valid requests");
            if check.ips.iter().all(|ip| ip.to_string() == "10.244.1.7") {
                (
                    200,
                    to_value(CheckResponse {
                        verified: check.ips,
                    }),
                )
            } else {
                error_answer(404, 107, "address not allocated to this attachment", None)
            }
        }
        ("POST", "/v1/gc") => {
            let gc: GcRequest = serde_json::from_slice(&request.body).expect("GcRequest");
            gc.validate().expect("the plugin sends only valid requests");
            (200, to_value(GcResponse::default()))
        }
        ("GET", "/v1/status") => {
            if StatusQuery::from_query(query)
                .pool_names()
                .contains(&"full")
            {
                error_answer(503, 50, "pool full is exhausted", None)
            } else {
                (200, to_value(StatusResponse {}))
            }
        }
        _ => error_answer(404, 109, "no such path", None),
    }
}

#[test]
fn add_round_trip_in_every_version_format() {
    let agent = StandInAgent::start(scripted_agent);
    for version in VERSIONS {
        let mut doc = config(version, &agent.socket());
        doc["ipam"]["pools"] = json!(["v4", "v6"]);
        let run = run_plugin(&attachment_env("ADD"), &bytes(&doc));
        assert_eq!(run.exit_code, 0, "{} {}", run.stdout, run.stderr);
        let result = run.json();
        assert_eq!(result["cniVersion"], version);
        let legacy = version < "1.0.0";
        let expected_ips = if legacy {
            json!([
                {"version": "4", "address": "10.244.1.7/24", "gateway": "10.244.1.1"},
                {"version": "6", "address": "fd00:10:244::7/64", "gateway": "fd00:10:244::1"},
            ])
        } else {
            json!([
                {"address": "10.244.1.7/24", "gateway": "10.244.1.1"},
                {"address": "fd00:10:244::7/64", "gateway": "fd00:10:244::1"},
            ])
        };
        assert_eq!(result["ips"], expected_ips, "{version}");
        assert_eq!(result["routes"], json!([{"dst": "0.0.0.0/0"}]));
        assert_eq!(result["dns"], json!({"nameservers": ["10.96.0.10"]}));
        assert!(result.get("interfaces").is_none());
    }

    let received = agent.received();
    assert_eq!(received.len(), VERSIONS.len(), "one request per run");
    let first = &received[0];
    assert_eq!(
        (first.method.as_str(), first.path.as_str()),
        ("POST", "/v1/add")
    );
    let add: AddRequest = serde_json::from_slice(&first.body).unwrap();
    assert_eq!(add.attachment.network, "pods");
    assert_eq!(add.attachment.container_id, "0123abcd");
    assert_eq!(add.attachment.if_name, "eth0");
    assert_eq!(add.pools, vec!["v4", "v6"]);
    let pod = add.pod.expect("pod identity from CNI_ARGS");
    assert_eq!(
        (pod.namespace.as_str(), pod.name.as_str()),
        ("default", "web-0")
    );
    assert_eq!(
        pod.uid.as_deref(),
        Some("5f0c1b2a-1111-2222-3333-444455556666")
    );
    assert_eq!(add.netns.as_deref(), Some("/var/run/netns/test"));
}

#[test]
fn requested_address_and_config_overrides_reach_the_result() {
    let agent = StandInAgent::start(scripted_agent);
    let mut doc = config("1.0.0", &agent.socket());
    doc["runtimeConfig"] = json!({"ips": ["10.244.1.50/24"]});
    doc["ipam"]["routes"] = json!([{"dst": "10.0.0.0/8", "gw": "10.244.1.1"}]);
    doc["ipam"]["dns"] = json!({"search": ["example.org"]});
    let run = run_plugin(&attachment_env("ADD"), &bytes(&doc));
    assert_eq!(run.exit_code, 0, "{}", run.stdout);
    let result = run.json();
    assert_eq!(result["ips"][0]["address"], "10.244.1.50/24");
    assert_eq!(
        result["routes"],
        json!([{"dst": "10.0.0.0/8", "gw": "10.244.1.1"}])
    );
    assert_eq!(result["dns"], json!({"search": ["example.org"]}));
    let add: AddRequest = serde_json::from_slice(&agent.received()[0].body).unwrap();
    assert_eq!(
        add.requested_ips,
        vec!["10.244.1.50".parse::<std::net::IpAddr>().unwrap()]
    );
}

#[test]
fn agent_errors_pass_through_unchanged() {
    let agent = StandInAgent::start(scripted_agent);
    let mut doc = config("0.4.0", &agent.socket());
    doc["ipam"]["pools"] = json!(["full"]);
    let run = run_plugin(&attachment_env("ADD"), &bytes(&doc));
    assert_eq!(run.error(100, "0.4.0"), "pool full is exhausted");
    assert_eq!(
        run.json()["details"],
        "all 254 addresses of 10.9.0.0/24 are in use"
    );

    let mut doc = gc_config(&agent.socket());
    doc["ipam"]["pools"] = json!(["full"]);
    let env = [("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/opt/cni/bin")];
    let run = run_plugin(&env, &bytes(&doc));
    assert_eq!(run.error(50, "1.1.0"), "pool full is exhausted");
    let status = agent.received().pop().unwrap();
    assert_eq!(status.method, "GET");
    assert_eq!(status.path, "/v1/status?network=pods&pools=full");
}

#[test]
fn del_check_gc_status_round_trips() {
    let agent = StandInAgent::start(scripted_agent);
    let doc = gc_config(&agent.socket());

    // DEL needs neither CNI_NETNS nor prevResult, and may repeat.
    let mut del_doc = doc.clone();
    del_doc.as_object_mut().unwrap().remove("prevResult");
    let del_env: Vec<_> = attachment_env("DEL")
        .into_iter()
        .filter(|(k, _)| *k != "CNI_NETNS")
        .collect();
    run_plugin(&del_env, &bytes(&del_doc)).silent_success();
    run_plugin(&del_env, &bytes(&del_doc)).silent_success();

    run_plugin(&attachment_env("CHECK"), &bytes(&doc)).silent_success();
    let mut stale = doc.clone();
    stale["prevResult"]["ips"][0]["address"] = json!("10.244.1.99/24");
    let run = run_plugin(&attachment_env("CHECK"), &bytes(&stale));
    assert_eq!(
        run.error(107, "1.1.0"),
        "address not allocated to this attachment"
    );

    let gc_env = [("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")];
    run_plugin(&gc_env, &bytes(&doc)).silent_success();
    let status_env = [("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/opt/cni/bin")];
    run_plugin(&status_env, &bytes(&doc)).silent_success();

    let received = agent.received();
    let paths: Vec<&str> = received.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/v1/del",
            "/v1/del",
            "/v1/check",
            "/v1/check",
            "/v1/gc",
            "/v1/status?network=pods"
        ]
    );
    let del: DelRequest = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(del.attachment.container_id, "0123abcd");
    let check: CheckRequest = serde_json::from_slice(&received[2].body).unwrap();
    assert_eq!(
        check.ips,
        vec!["10.244.1.7".parse::<std::net::IpAddr>().unwrap()]
    );
    let gc: GcRequest = serde_json::from_slice(&received[4].body).unwrap();
    assert_eq!(gc.network, "pods");
    assert_eq!(gc.valid_attachments.len(), 1);
    assert_eq!(gc.valid_attachments[0].container_id, "0123abcd");
    assert_eq!(gc.valid_attachments[0].if_name, "eth0");
}

#[test]
fn an_agent_speaking_another_protocol_is_code_109() {
    fn nonsense(_: &Received) -> (u16, Value) {
        (200, json!({"addresses": "10.0.0.1"}))
    }
    let agent = StandInAgent::start(nonsense);
    let run = run_plugin(
        &attachment_env("ADD"),
        &bytes(&config("1.0.0", &agent.socket())),
    );
    let msg = run.error(109, "1.0.0");
    assert!(msg.contains("does not decode"), "{msg}");
}

// ---------------------------------------------------------------- through bridge

const BRIDGE: &str = "/usr/lib/cni/bridge";

/// Runs the reference bridge plugin inside `host` (a namespace standing in for the
/// node, so no device is made in the real host namespace).
fn run_bridge(host: &NetNs, env: &[(&str, &str)], stdin: &[u8]) -> Run {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &host.0, BRIDGE])
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bridge");
    child
        .stdin
        .take()
        .expect("stdin pipe")
        .write_all(stdin)
        .expect("write bridge stdin");
    let output = child.wait_with_output().expect("wait for bridge");
    Run {
        exit_code: output.status.code().expect("bridge exited"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn bridge_delegates_to_ipledger_in_a_network_namespace() {
    if let Some(why) = reference_plugin_missing("bridge") {
        test_support::skip(&why);
        return;
    }
    let agent = StandInAgent::start(scripted_agent);
    let host = NetNs::new("node");
    let bin = TempDir::new();
    std::os::unix::fs::symlink(PLUGIN, bin.0.join("ipledger")).expect("symlink the plugin");
    let cni_path = bin.0.display().to_string();
    let config = |version: &str, socket: &Path| {
        json!({
            "cniVersion": version,
            "name": "ipledger-e2e",
            "type": "bridge",
            "bridge": "ipl0",
            "isGateway": true,
            "ipam": {"type": "ipledger", "pools": ["v4"], "socket": socket},
        })
    };
    let env = |command: &'static str, container: String, netns: String| {
        [
            ("CNI_COMMAND", command.to_owned()),
            ("CNI_CONTAINERID", container),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", "eth0".to_owned()),
            ("CNI_PATH", cni_path.clone()),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=e2e".to_owned(),
            ),
        ]
    };
    let bridge = |command: &'static str, container: &str, pod: &NetNs, stdin: &Value| {
        let env = env(command, container.to_owned(), pod.path());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_bridge(&host, &env, &bytes(stdin))
    };

    // bridge 1.1.1 speaks CNI up to 1.0.0; each version gets its own pod namespace.
    for version in ["0.3.1", "0.4.0", "1.0.0"] {
        let pod = NetNs::new("pod");
        let container = format!("e2e-{version}");
        let doc = config(version, &agent.socket());
        let add = bridge("ADD", &container, &pod, &doc);
        assert_eq!(add.exit_code, 0, "{version}: {} {}", add.stdout, add.stderr);
        let result = add.json();
        assert_eq!(result["cniVersion"], version, "{result}");
        assert_eq!(result["ips"][0]["address"], "10.244.1.7/24", "{result}");
        let addr = Command::new("ip")
            .args(["-n", &pod.0, "-o", "addr", "show", "dev", "eth0"])
            .output()
            .expect("ip addr");
        let addr = String::from_utf8_lossy(&addr.stdout);
        assert!(
            addr.contains("inet 10.244.1.7/24"),
            "{version}: pod eth0: {addr}"
        );

        if version != "0.3.1" {
            let mut check = doc.clone();
            check["prevResult"] = result.clone();
            let run = bridge("CHECK", &container, &pod, &check);
            assert_eq!(
                run.exit_code, 0,
                "{version} CHECK: {} {}",
                run.stdout, run.stderr
            );
        }
        for _ in 0..2 {
            let del = bridge("DEL", &container, &pod, &doc);
            assert_eq!(
                del.exit_code, 0,
                "{version} DEL: {} {}",
                del.stdout, del.stderr
            );
        }
    }
    let paths: Vec<String> = agent.received().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            // 0.3.1: no CHECK before 0.4.0
            "/v1/add",
            "/v1/del",
            "/v1/del",
            // 0.4.0
            "/v1/add",
            "/v1/check",
            "/v1/del",
            "/v1/del",
            // 1.0.0
            "/v1/add",
            "/v1/check",
            "/v1/del",
            "/v1/del",
        ]
    );

    // With no agent, bridge passes ipledger's "try again later" through unchanged.
    let pod = NetNs::new("pod");
    let gone = bin.0.join("no-agent.sock");
    let add = bridge("ADD", "e2e-gone", &pod, &config("1.0.0", &gone));
    let json = add.json();
    assert_ne!(add.exit_code, 0);
    assert_eq!(json["code"], 11, "{json}");
    assert!(
        json["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("no-agent.sock"),
        "{json}"
    );
}
