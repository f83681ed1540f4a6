//! The `ipledger` CNI IPAM plugin: validates what the runtime passes, asks the node
//! agent once over its unix socket, and prints the CNI result or error.
//!
//! The plugin allocates nothing itself. [`plan`] (input → one agent request) and
//! [`finish`] (agent answer → stdout) are pure; [`run`] adds stdin and the socket.
//! [`protocol`] is the wire format both ends speak: the agent depends on this crate,
//! never the reverse.

#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod env;
pub mod error;
pub mod protocol;
pub mod result;
pub mod validate;
pub mod version;

use std::ffi::OsString;
use std::io::Read;

use serde::Serialize;
use serde_json::Value;

pub use config::NetworkConfig;
pub use env::{CniEnv, Command};
pub use error::{CniError, ErrorCode};
pub use version::CniVersion;

use crate::protocol::{
    ADD_PATH, AddRequest, AddResponse, Attachment, CHECK_PATH, CheckRequest, DEL_PATH, DelRequest,
    ErrorBody, GC_PATH, GcRequest, StatusQuery,
};
use client::{HttpReply, HttpRequest, TransportError};

/// Largest network configuration accepted on stdin.
pub const MAX_STDIN_BYTES: usize = 1 << 20;
/// Longest `cniVersion` echoed back; anything longer is not a version.
const MAX_ECHO_BYTES: usize = 32;

/// What the plugin prints on stdout and its exit status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The result, or the error result.
    pub stdout: String,
    /// 0 on success, 1 with an error result.
    pub exit_code: u8,
}

/// One request to the agent and what is needed to read its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentCall {
    /// The CNI command being served.
    pub command: Command,
    /// The validated network configuration.
    pub config: NetworkConfig,
    /// The HTTP request.
    pub request: HttpRequest,
}

/// Runs one plugin invocation: `lookup` reads environment variables, `stdin` holds the
/// network configuration.
pub fn run(lookup: &dyn Fn(&str) -> Option<OsString>, stdin: &mut dyn Read) -> Outcome {
    let mut echo = version::LATEST.as_str().to_owned();
    match invoke(lookup, stdin, &mut echo) {
        Ok(stdout) => Outcome {
            stdout,
            exit_code: 0,
        },
        Err(error) => {
            tracing::warn!(
                code = error.code,
                msg = %error.msg,
                details = error.details.as_deref().unwrap_or_default(),
                "CNI call failed"
            );
            Outcome {
                stdout: error.to_json(&echo),
                exit_code: 1,
            }
        }
    }
}

/// `echo` receives the config's `cniVersion` as soon as it is known, so that every
/// later error carries it.
fn invoke(
    lookup: &dyn Fn(&str) -> Option<OsString>,
    stdin: &mut dyn Read,
    echo: &mut String,
) -> Result<String, CniError> {
    let bytes = read_stdin(stdin)?;
    let doc = decode_stdin(&bytes)?;
    if let Some(Value::String(v)) = doc.as_ref().and_then(|d| d.get("cniVersion"))
        && !v.is_empty()
        && v.len() <= MAX_ECHO_BYTES
    {
        echo.clone_from(v);
    }
    if env::read_command(lookup)? == Command::Version {
        return Ok(version::version_result(echo));
    }
    let env = env::read_env(lookup)?;
    let doc = doc.ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidNetworkConfig,
            "stdin: empty; the runtime must pass the network configuration",
        )
    })?;
    let call = plan(&env, &doc)?;
    tracing::debug!(
        command = call.command.as_str(),
        path = %call.request.path,
        socket = %call.config.ipam.socket.display(),
        "asking the agent"
    );
    let reply = client::exchange(
        &call.config.ipam.socket,
        call.config.ipam.timeout,
        &call.request,
    );
    finish(&call, reply)
}

/// Reads stdin, refusing more than [`MAX_STDIN_BYTES`].
fn read_stdin(stdin: &mut dyn Read) -> Result<Vec<u8>, CniError> {
    let mut bytes = Vec::new();
    stdin
        .take(MAX_STDIN_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CniError::new(ErrorCode::IoFailure, format!("stdin: cannot read: {e}")))?;
    if bytes.len() > MAX_STDIN_BYTES {
        return Err(CniError::new(
            ErrorCode::InvalidNetworkConfig,
            format!("stdin: the network configuration is larger than {MAX_STDIN_BYTES} bytes"),
        ));
    }
    Ok(bytes)
}

/// Parses stdin as JSON; `None` when it is empty (VERSION may come without config).
fn decode_stdin(bytes: &[u8]) -> Result<Option<Value>, CniError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(bytes).map(Some).map_err(|e| {
        CniError::new(
            ErrorCode::DecodeFailure,
            format!("stdin: the network configuration is not valid JSON: {e}"),
        )
    })
}

fn json_body<T: Serialize>(value: &T) -> Option<Vec<u8>> {
    // Plain structs of strings and addresses always serialize.
    Some(serde_json::to_vec(value).unwrap_or_default())
}

/// Turns a validated environment and the config into the one request to the agent.
pub fn plan(env: &CniEnv, doc: &Value) -> Result<AgentCall, CniError> {
    let command = env.command;
    let config = NetworkConfig::parse(doc, command)?;
    let attachment = || Attachment {
        network: config.name.clone(),
        container_id: env.container_id.clone().unwrap_or_default(),
        if_name: env.if_name.clone().unwrap_or_default(),
    };
    let post = |path: &str, body| HttpRequest {
        method: "POST",
        path: path.to_owned(),
        body,
    };
    let request = match command {
        Command::Add => post(
            ADD_PATH,
            json_body(&AddRequest {
                attachment: attachment(),
                pod: env.args.pod(),
                pools: config.ipam.pools.clone(),
                requested_ips: config.requested_ips(&env.args.ips),
                netns: env.netns.clone(),
            }),
        ),
        Command::Del => post(
            DEL_PATH,
            json_body(&DelRequest {
                attachment: attachment(),
                pod: env.args.pod(),
            }),
        ),
        Command::Check => post(
            CHECK_PATH,
            json_body(&CheckRequest {
                attachment: attachment(),
                pod: env.args.pod(),
                pools: config.ipam.pools.clone(),
                ips: config.prev_result_ips.clone(),
            }),
        ),
        Command::Gc => post(
            GC_PATH,
            json_body(&GcRequest {
                network: config.name.clone(),
                valid_attachments: config.valid_attachments.clone(),
            }),
        ),
        Command::Status => HttpRequest {
            method: "GET",
            path: StatusQuery::new(&config.name, &config.ipam.pools).to_path(),
            body: None,
        },
        // VERSION is answered before any config is read.
        Command::Version => {
            return Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                "CNI_COMMAND: VERSION needs no agent",
            ));
        }
    };
    Ok(AgentCall {
        command,
        config,
        request,
    })
}

/// Turns the agent's answer (or the failure to get one) into stdout.
pub fn finish(
    call: &AgentCall,
    reply: Result<HttpReply, TransportError>,
) -> Result<String, CniError> {
    let socket = call.config.ipam.socket.display();
    let reply = reply.map_err(|error| {
        let hint = match &error {
            TransportError::Connect(_) => "; is the ipledger agent running on this node?",
            _ => "",
        };
        for_command(
            call.command,
            CniError::new(
                ErrorCode::TryAgainLater,
                format!("agent socket {socket}: {error}{hint}"),
            ),
        )
    })?;
    if !(200..300).contains(&reply.status) {
        let error = match serde_json::from_slice::<ErrorBody>(&reply.body) {
            Ok(body) => CniError::from(body),
            Err(_) if reply.status >= 500 => CniError::new(
                ErrorCode::TryAgainLater,
                format!(
                    "agent socket {socket}: HTTP {} without an error body",
                    reply.status
                ),
            ),
            Err(_) => CniError::new(
                ErrorCode::AgentProtocol,
                format!(
                    "agent socket {socket}: HTTP {} without an error body; do the plugin and agent versions match?",
                    reply.status
                ),
            )
            .with_details(String::from_utf8_lossy(&reply.body[..reply.body.len().min(512)])),
        };
        return Err(for_command(call.command, error));
    }
    match call.command {
        Command::Add => {
            let response: AddResponse = serde_json::from_slice(&reply.body).map_err(|e| {
                CniError::new(
                    ErrorCode::AgentProtocol,
                    format!("agent socket {socket}: the ADD answer does not decode: {e}"),
                )
            })?;
            result::add_result(
                call.config.cni_version,
                &response,
                result::Overrides {
                    routes: call.config.ipam.routes.as_deref(),
                    dns: call.config.ipam.dns.as_ref(),
                },
            )
        }
        // DEL, CHECK, GC and STATUS print nothing on success.
        _ => Ok(String::new()),
    }
}

/// STATUS reports unavailability as 50, which is what "try again later" means there.
fn for_command(command: Command, error: CniError) -> CniError {
    if command == Command::Status && error.known_code() == Some(ErrorCode::TryAgainLater) {
        CniError {
            code: ErrorCode::PluginNotAvailable.as_u32(),
            ..error
        }
    } else {
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{AllocatedIp, Dns, GcRequest};
    use serde_json::json;
    use std::collections::HashMap;
    use std::io;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn cni_env(command: &str) -> CniEnv {
        env::read_env(&env_of(&[
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/var/run/netns/x"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0;IP=10.0.0.9",
            ),
        ]))
        .unwrap()
    }

    fn config(version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "pods",
            "type": "bridge",
            "ipam": {"type": "ipledger", "pools": ["v4"], "socket": "/run/test.sock"},
            "prevResult": {"ips": [{"address": "10.0.0.9/24"}]},
            "cni.dev/valid-attachments": [{"containerID": "abc", "ifname": "eth0"}],
        })
    }

    fn body_json(call: &AgentCall) -> Value {
        serde_json::from_slice(call.request.body.as_ref().unwrap()).unwrap()
    }

    #[test]
    fn add_plans_one_post_with_attachment_pod_pools_and_requested_ips() {
        let call = plan(&cni_env("ADD"), &config("1.0.0")).unwrap();
        assert_eq!(call.request.method, "POST");
        assert_eq!(call.request.path, "/v1/add");
        let request: AddRequest = serde_json::from_value(body_json(&call)).unwrap();
        assert_eq!(request.attachment.network, "pods");
        assert_eq!(request.attachment.container_id, "abc");
        assert_eq!(request.attachment.if_name, "eth0");
        assert_eq!(request.pod.unwrap().name, "web-0");
        assert_eq!(request.pools, vec!["v4"]);
        assert_eq!(
            request.requested_ips,
            vec!["10.0.0.9".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(request.netns.as_deref(), Some("/var/run/netns/x"));
    }

    #[test]
    fn other_commands_plan_their_paths() {
        let del = plan(&cni_env("DEL"), &config("0.3.1")).unwrap();
        assert_eq!(del.request.path, "/v1/del");
        let check = plan(&cni_env("CHECK"), &config("0.4.0")).unwrap();
        assert_eq!(check.request.path, "/v1/check");
        assert_eq!(body_json(&check)["ips"], json!(["10.0.0.9"]));
        let gc = plan(&cni_env("GC"), &config("1.1.0")).unwrap();
        let request: GcRequest = serde_json::from_value(body_json(&gc)).unwrap();
        assert_eq!(request.network, "pods");
        assert_eq!(request.valid_attachments[0].container_id, "abc");
        let status = plan(&cni_env("STATUS"), &config("1.1.0")).unwrap();
        assert_eq!(status.request.method, "GET");
        assert_eq!(status.request.path, "/v1/status?network=pods&pools=v4");
        assert_eq!(status.request.body, None);
    }

    #[test]
    fn commands_newer_than_the_config_version_are_incompatible() {
        for (command, version) in [("CHECK", "0.3.1"), ("GC", "1.0.0"), ("STATUS", "0.4.0")] {
            let error = plan(&cni_env(command), &config(version)).unwrap_err();
            assert_eq!(error.code, 1, "{command} {version}");
            assert!(error.msg.contains(command), "{}", error.msg);
        }
    }

    fn reply(status: u16, body: Value) -> Result<HttpReply, TransportError> {
        Ok(HttpReply {
            status,
            body: serde_json::to_vec(&body).unwrap(),
        })
    }

    #[test]
    fn add_answer_becomes_the_versioned_result() {
        let call = plan(&cni_env("ADD"), &config("0.3.1")).unwrap();
        let answer = AddResponse {
            ips: vec![AllocatedIp {
                address: "10.0.0.9/24".parse().unwrap(),
                gateway: Some("10.0.0.1".parse().unwrap()),
                pool: "v4".into(),
            }],
            routes: vec![],
            dns: Dns::default(),
        };
        let stdout = finish(&call, reply(200, serde_json::to_value(answer).unwrap())).unwrap();
        let json: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(
            json,
            json!({"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "10.0.0.9/24", "gateway": "10.0.0.1"}]})
        );
    }

    #[test]
    fn agent_errors_pass_through_and_unreadable_answers_are_classified() {
        let call = plan(&cni_env("ADD"), &config("1.0.0")).unwrap();
        let error = finish(
            &call,
            reply(
                409,
                json!({"code": 100, "msg": "pool v4 is exhausted", "details": "254 of 254 in use"}),
            ),
        )
        .unwrap_err();
        assert_eq!(
            error,
            CniError::new(ErrorCode::PoolExhausted, "pool v4 is exhausted")
                .with_details("254 of 254 in use")
        );
        let garbage = |status| {
            finish(
                &call,
                Ok(HttpReply {
                    status,
                    body: b"<html>".to_vec(),
                }),
            )
            .unwrap_err()
        };
        assert_eq!(garbage(502).code, 11);
        assert_eq!(garbage(404).code, 109);
        assert_eq!(garbage(200).code, 109);
        let empty = finish(&call, reply(200, json!({"ips": []}))).unwrap_err();
        assert_eq!(empty.code, 109);
    }

    #[test]
    fn unreachable_agent_is_try_again_later_naming_the_socket_and_50_for_status() {
        let refused = || {
            Err(TransportError::Connect(io::Error::from(
                io::ErrorKind::ConnectionRefused,
            )))
        };
        let add = plan(&cni_env("ADD"), &config("1.0.0")).unwrap();
        let error = finish(&add, refused()).unwrap_err();
        assert_eq!(error.code, 11);
        assert!(
            error.msg.starts_with("agent socket /run/test.sock: "),
            "{}",
            error.msg
        );
        let status = plan(&cni_env("STATUS"), &config("1.1.0")).unwrap();
        assert_eq!(finish(&status, refused()).unwrap_err().code, 50);
        let timeout = finish(
            &status,
            Err(TransportError::Timeout(std::time::Duration::from_secs(3))),
        )
        .unwrap_err();
        assert_eq!(timeout.code, 50);
        assert!(timeout.msg.contains("3 s"), "{}", timeout.msg);
        // An agent's own 51 for STATUS passes through.
        let limited =
            finish(&status, reply(503, json!({"code": 51, "msg": "api down"}))).unwrap_err();
        assert_eq!(limited.code, 51);
    }

    #[test]
    fn success_of_other_commands_prints_nothing() {
        for (command, version) in [
            ("DEL", "1.0.0"),
            ("CHECK", "1.0.0"),
            ("GC", "1.1.0"),
            ("STATUS", "1.1.0"),
        ] {
            let call = plan(&cni_env(command), &config(version)).unwrap();
            assert_eq!(
                finish(&call, reply(200, json!({}))).unwrap(),
                "",
                "{command}"
            );
        }
    }

    #[test]
    fn run_echoes_the_config_version_in_errors() {
        let outcome = run(
            &env_of(&[("CNI_COMMAND", "ADD")]),
            &mut config("0.4.0").to_string().as_bytes(),
        );
        assert_eq!(outcome.exit_code, 1);
        let json: Value = serde_json::from_str(&outcome.stdout).unwrap();
        assert_eq!(json["cniVersion"], "0.4.0");
        assert_eq!(json["code"], 4);
        assert!(
            json["msg"]
                .as_str()
                .unwrap()
                .starts_with("CNI_CONTAINERID: missing")
        );
    }

    #[test]
    fn run_answers_version_with_or_without_stdin() {
        let outcome = run(&env_of(&[("CNI_COMMAND", "VERSION")]), &mut &b""[..]);
        assert_eq!(outcome.exit_code, 0);
        let json: Value = serde_json::from_str(&outcome.stdout).unwrap();
        assert_eq!(json["cniVersion"], "1.1.0");
        let outcome = run(
            &env_of(&[("CNI_COMMAND", "VERSION")]),
            &mut &br#"{"cniVersion":"0.3.0"}"#[..],
        );
        let json: Value = serde_json::from_str(&outcome.stdout).unwrap();
        assert_eq!(json["cniVersion"], "0.3.0");
        assert_eq!(json["supportedVersions"].as_array().unwrap().len(), 5);
    }

    proptest::proptest! {
        /// Whatever the runtime passes, the plugin answers with one JSON document and
        /// never panics; every failure is a CNI error with a code.
        #[test]
        fn any_input_gets_a_json_answer(
            command in proptest::sample::select(vec!["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION", "", "BOGUS"]),
            container in "[ -~]{0,40}",
            ifname in "[ -~]{0,20}",
            cni_args in "[ -~]{0,80}",
            stdin in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
        ) {
            let vars = [
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", container.as_str()),
                ("CNI_IFNAME", ifname.as_str()),
                ("CNI_NETNS", "/var/run/netns/x"),
                ("CNI_ARGS", cni_args.as_str()),
            ];
            let outcome = run(&env_of(&vars), &mut &stdin[..]);
            let json: Value = serde_json::from_str(&outcome.stdout).unwrap();
            if outcome.exit_code == 0 {
                proptest::prop_assert!(json.get("supportedVersions").is_some());
            } else {
                proptest::prop_assert!(json["code"].as_u64().is_some_and(|c| c > 0));
                proptest::prop_assert!(json["cniVersion"].is_string());
                proptest::prop_assert!(json["msg"].as_str().is_some_and(|m| !m.is_empty()));
            }
        }
    }

    #[test]
    fn unreadable_stdin_is_an_io_failure() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("pipe broke"))
            }
        }
        let outcome = run(&env_of(&[("CNI_COMMAND", "ADD")]), &mut Broken);
        let json: Value = serde_json::from_str(&outcome.stdout).unwrap();
        assert_eq!(outcome.exit_code, 1);
        assert_eq!(json["code"], 5);
        assert_eq!(json["msg"], "stdin: cannot read: pipe broke");
    }

    #[test]
    fn non_utf8_variables_are_named() {
        use std::os::unix::ffi::OsStringExt;
        let lookup = |name: &str| match name {
            "CNI_COMMAND" => Some(OsString::from("ADD")),
            "CNI_CONTAINERID" => Some(OsString::from_vec(vec![b'a', 0xff])),
            _ => None,
        };
        let outcome = run(&lookup, &mut config("1.0.0").to_string().as_bytes());
        let json: Value = serde_json::from_str(&outcome.stdout).unwrap();
        assert_eq!(json["code"], 4);
        assert_eq!(json["msg"], "CNI_CONTAINERID: value is not valid UTF-8");
    }

    #[test]
    fn run_refuses_oversized_and_undecodable_stdin() {
        let big = vec![b' '; MAX_STDIN_BYTES + 1];
        let outcome = run(&env_of(&[("CNI_COMMAND", "ADD")]), &mut &big[..]);
        let json: Value = serde_json::from_str(&outcome.stdout).unwrap();
        assert_eq!(json["code"], 7);
        assert!(json["msg"].as_str().unwrap().starts_with("stdin: "));
        let outcome = run(&env_of(&[("CNI_COMMAND", "ADD")]), &mut &b"{nope"[..]);
        let json: Value = serde_json::from_str(&outcome.stdout).unwrap();
        assert_eq!(json["code"], 6);
        assert_eq!(json["cniVersion"], "1.1.0");
    }
}
