//! Fuzzes one CNI plugin invocation: the `CNI_*` environment and stdin, through every
//! step the plugin takes before it would contact the agent socket, and the error path
//! it takes when the agent is unreachable. No I/O.
//!
//! Input format (human-readable, so seeds and crash files can be read and written by
//! hand): lines `NAME=VALUE` up to the first empty line are the environment (any bytes
//! but `\n`; non-UTF-8 is passed as is; a line without `=` is ignored; a later line for
//! the same name wins; `NAME=` is an empty variable, which CNI treats as unset), and
//! everything after that empty line is stdin. Without an empty line, all of the input
//! is environment and stdin is empty.
//!
//! Invariants checked:
//! - nothing panics;
//! - every error is a CNI error with a known, non-zero code and a message, and its
//!   error result (`to_json`) is a JSON object echoing the version, with that code;
//! - VERSION answers a JSON object with `cniVersion` and `supportedVersions`;
//! - every request the plugin would send is accepted by the agent's own validation
//!   (the agent re-checks at the socket; the plugin must never send what it refuses),
//!   names the attachment from the environment, and a STATUS query reads back as
//!   written;
//! - an unreachable agent is code 11 (50 for STATUS).

#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

// The crates under test.
use ipledger_cni as cni;
use ipledger_cni::protocol;

use cni::client::{HttpReply, TransportError};
use cni::env::{self, Command};
use cni::error::{CniError, ErrorCode};
use cni::version;
use protocol::{AddRequest, CheckRequest, DelRequest, ErrorBody, GcRequest, StatusQuery};

/// The six variables the plugin may read; others in the input are ignored.
const VARS: [&str; 6] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_IFNAME",
    "CNI_NETNS",
    "CNI_ARGS",
    "CNI_PATH",
];

/// Longest `cniVersion` the plugin echoes (`MAX_ECHO_BYTES` in `cni/mod.rs`).
const MAX_ECHO_BYTES: usize = 32;

struct Input<'a> {
    vars: Vec<(&'static str, &'a [u8])>,
    stdin: &'a [u8],
}

fn split(data: &[u8]) -> Input<'_> {
    let (env_part, stdin) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None if data.starts_with(b"\n") => (&data[..0], &data[1..]),
        None => (data, &data[data.len()..]),
    };
    let mut vars = Vec::new();
    for line in env_part.split(|b| *b == b'\n') {
        let Some(eq) = line.iter().position(|b| *b == b'=') else {
            continue;
        };
        if let Some(name) = VARS.iter().find(|n| n.as_bytes() == &line[..eq]) {
            vars.retain(|(n, _)| n != name);
            vars.push((*name, &line[eq + 1..]));
        }
    }
    Input { vars, stdin }
}

/// `FUZZ_DEBUG=1 target INPUT...` prints how far each input got (for seed writing).
fn debug(what: std::fmt::Arguments) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("FUZZ_DEBUG").is_some()) {
        eprintln!("cni_input: {what}");
    }
}

/// The error result must be what the runtime can read: a JSON object with the code.
fn check_error(error: &CniError, echo: &str, stage: &str) {
    debug(format_args!("{stage}: code {}: {}", error.code, error.msg));
    assert!(error.code > 0, "{stage}: error without a code: {error:?}");
    assert!(
        error.known_code().is_some(),
        "{stage}: the plugin made up code {}: {error:?}",
        error.code
    );
    assert!(!error.msg.is_empty(), "{stage}: error without a message");
    let json: Value = serde_json::from_str(&error.to_json(echo))
        .unwrap_or_else(|e| panic!("{stage}: error result is not JSON: {e}"));
    assert_eq!(
        json["code"].as_u64(),
        Some(u64::from(error.code)),
        "{stage}"
    );
    assert_eq!(json["cniVersion"].as_str(), Some(echo), "{stage}");
    assert!(
        json["msg"].as_str().is_some_and(|m| !m.is_empty()),
        "{stage}"
    );
}

/// Decodes a body the plugin would POST and runs the agent's check on it.
fn agent_accepts<T: serde::de::DeserializeOwned>(
    body: &Option<Vec<u8>>,
    validate: fn(&T) -> Result<(), ErrorBody>,
    what: &str,
) -> T {
    let body = body
        .as_deref()
        .unwrap_or_else(|| panic!("{what}: POST without a body"));
    let request: T = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "{what}: the agent cannot decode the plugin's body: {e}: {}",
            String::from_utf8_lossy(body)
        )
    });
    if let Err(refusal) = validate(&request) {
        panic!(
            "{what}: the plugin sent what the agent refuses: {refusal:?}; body {}",
            String::from_utf8_lossy(body)
        );
    }
    request
}

fuzz_target!(|data: &[u8]| {
    let input = split(data);
    let lookup = |name: &str| -> Option<OsString> {
        input
            .vars
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| OsString::from_vec(v.to_vec()))
    };
    invoke(&lookup, input.stdin);
});

/// `cni::invoke` up to the socket: the same steps in the same order.
fn invoke(lookup: &dyn Fn(&str) -> Option<OsString>, stdin: &[u8]) {
    let mut echo = version::LATEST.as_str().to_owned();
    if stdin.len() > cni::MAX_STDIN_BYTES {
        return;
    }
    // decode_stdin: all-whitespace is no config.
    let doc: Option<Value> = if stdin.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice(stdin) {
            Ok(doc) => Some(doc),
            Err(e) => {
                let error = CniError::new(ErrorCode::DecodeFailure, format!("stdin: {e}"));
                check_error(&error, &echo, "decode");
                return;
            }
        }
    };
    if let Some(Value::String(v)) = doc.as_ref().and_then(|d| d.get("cniVersion"))
        && !v.is_empty()
        && v.len() <= MAX_ECHO_BYTES
    {
        echo.clone_from(v);
    }

    let command = match env::read_command(lookup) {
        Ok(command) => command,
        Err(error) => {
            assert_eq!(error.known_code(), Some(ErrorCode::InvalidEnvironment));
            check_error(&error, &echo, "read_command");
            return;
        }
    };
    if command == Command::Version {
        let json: Value = serde_json::from_str(&version::version_result(&echo))
            .expect("VERSION result is not JSON");
        assert_eq!(json["cniVersion"].as_str(), Some(echo.as_str()));
        assert!(
            json["supportedVersions"]
                .as_array()
                .is_some_and(|v| !v.is_empty())
        );
        return;
    }

    let env = match env::read_env(lookup) {
        Ok(env) => env,
        Err(error) => {
            check_error(&error, &echo, "read_env");
            return;
        }
    };
    assert_eq!(env.command, command);
    // CNI_ARGS alone, as read_env would parse it: must not panic either way.
    if let Some(raw) = lookup("CNI_ARGS").and_then(|v| v.into_string().ok()) {
        if let Err(error) = env::CniArgs::parse(&raw) {
            check_error(&error, &echo, "CniArgs::parse");
        }
    }

    let Some(doc) = doc else {
        return; // "stdin: empty" (code 7)
    };
    // NetworkConfig::parse alone, for every command: a config that one verb accepts
    // must not make another panic.
    for other in [
        Command::Add,
        Command::Del,
        Command::Check,
        Command::Gc,
        Command::Status,
    ] {
        if let Err(error) = cni::NetworkConfig::parse(&doc, other) {
            check_error(&error, &echo, "NetworkConfig::parse");
        }
    }

    let call = match cni::plan(&env, &doc) {
        Ok(call) => call,
        Err(error) => {
            check_error(&error, &echo, "plan");
            return;
        }
    };
    debug(format_args!(
        "planned {} {} {}",
        call.request.method,
        call.request.path,
        String::from_utf8_lossy(call.request.body.as_deref().unwrap_or_default())
    ));
    assert_eq!(call.command, command);
    assert_eq!(
        echo,
        call.config.cni_version.as_str(),
        "the echo is the config's version"
    );
    let container_id = env.container_id.clone().unwrap_or_default();
    let if_name = env.if_name.clone().unwrap_or_default();
    match command {
        Command::Add => {
            let r: AddRequest = agent_accepts(&call.request.body, AddRequest::validate, "ADD");
            assert_eq!(
                (
                    r.attachment.container_id.as_str(),
                    r.attachment.if_name.as_str()
                ),
                (container_id.as_str(), if_name.as_str())
            );
            assert_eq!(r.attachment.network, call.config.name);
        }
        Command::Del => {
            let r: DelRequest = agent_accepts(&call.request.body, DelRequest::validate, "DEL");
            assert_eq!(
                (
                    r.attachment.container_id.as_str(),
                    r.attachment.if_name.as_str()
                ),
                (container_id.as_str(), if_name.as_str())
            );
        }
        Command::Check => {
            let r: CheckRequest =
                agent_accepts(&call.request.body, CheckRequest::validate, "CHECK");
            assert_eq!(r.ips, call.config.prev_result_ips);
        }
        Command::Gc => {
            let r: GcRequest = agent_accepts(&call.request.body, GcRequest::validate, "GC");
            assert_eq!(r.network, call.config.name);
        }
        Command::Status => {
            assert_eq!(call.request.method, "GET");
            let (path, query) = call
                .request
                .path
                .split_once('?')
                .unwrap_or((call.request.path.as_str(), ""));
            assert_eq!(path, protocol::STATUS_PATH);
            let q = StatusQuery::from_query(query);
            assert_eq!(q.network.as_deref(), Some(call.config.name.as_str()));
            assert_eq!(
                q.pool_names(),
                call.config.ipam.pools,
                "STATUS query reads back"
            );
        }
        Command::Version => unreachable!(),
    }

    // The agent is down: code 11, or 50 for STATUS; the result still echoes the version.
    let refused = Err(TransportError::Connect(std::io::Error::from(
        std::io::ErrorKind::ConnectionRefused,
    )));
    let error = cni::finish(&call, refused).expect_err("no agent is no success");
    let expected = if command == Command::Status { 50 } else { 11 };
    assert_eq!(error.code, expected, "{error:?}");
    check_error(&error, &echo, "finish");
    // An agent answer without a body the plugin understands.
    let garbage: Result<HttpReply, TransportError> = Ok(HttpReply {
        status: 500,
        body: b"<html>".to_vec(),
    });
    let error = cni::finish(&call, garbage).expect_err("HTTP 500 is no success");
    check_error(&error, &echo, "finish 500");

    // ADD answered: the result is rendered in the config's version, with the config's
    // routes and dns replacing the agent's.
    if command == Command::Add {
        let requested = call.config.requested_ips(&env.args.ips);
        let ips = if requested.is_empty() {
            vec!["10.244.1.7".parse().unwrap()]
        } else {
            requested
        };
        let answer = protocol::AddResponse {
            ips: ips
                .iter()
                .map(|ip| protocol::AllocatedIp {
                    address: host_net(*ip),
                    gateway: Some(*ip),
                    pool: "p".into(),
                })
                .collect(),
            routes: Vec::new(),
            dns: protocol::Dns::default(),
        };
        let reply = Ok(HttpReply {
            status: 200,
            body: serde_json::to_vec(&answer).expect("AddResponse serializes"),
        });
        let stdout = cni::finish(&call, reply).unwrap_or_else(|e| panic!("ADD result: {e:?}"));
        let json: Value = serde_json::from_str(&stdout).expect("ADD result is not JSON");
        assert_eq!(json["cniVersion"].as_str(), Some(echo.as_str()));
        assert_eq!(json["ips"].as_array().map(Vec::len), Some(ips.len()));
        if let Some(routes) = &call.config.ipam.routes {
            let shown = json
                .get("routes")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            assert_eq!(shown, routes.len(), "ipam.routes replace the agent's");
        }
    }
}

/// A host address with the family's longest prefix, as an allocated address.
fn host_net(ip: std::net::IpAddr) -> ipnet::IpNet {
    let len = if ip.is_ipv4() { 32 } else { 128 };
    ipnet::IpNet::new(ip, len).expect("full-length prefix is valid")
}
