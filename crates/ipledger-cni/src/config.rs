//! The network configuration on stdin: the fields ipledger reads, validated.
//!
//! Fields outside `ipam` that ipledger does not know are ignored, as the spec asks (the
//! config belongs to the main plugin, e.g. bridge). The `ipam` section is ipledger's
//! own, so an unknown key there is refused (code 2): a misspelt `pool` must not
//! silently fall back to the default pools.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::env::Command;
use super::error::{CniError, ErrorCode};
use super::validate;
use super::version::CniVersion;
use crate::protocol::{DEFAULT_SOCKET_PATH, Dns, LiveAttachment, MAX_CHECK_IPS, Route};

/// Agent timeout when `ipam.timeoutSeconds` is not set; runtimes wait minutes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest `ipam.timeoutSeconds` accepted.
pub const MAX_TIMEOUT_SECONDS: u64 = 300;
/// Longest socket path a unix socket address can hold (`sun_path` is 108 bytes).
const MAX_SOCKET_PATH_BYTES: usize = 107;

/// The validated network configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkConfig {
    /// `cniVersion`.
    pub cni_version: CniVersion,
    /// `name`: the network, part of every attachment's key.
    pub name: String,
    /// The `ipam` section.
    pub ipam: IpamConfig,
    /// ADD: `runtimeConfig.ips`, addresses only.
    pub runtime_config_ips: Vec<IpAddr>,
    /// ADD: `args.cni.ips`, addresses only.
    pub args_ips: Vec<IpAddr>,
    /// CHECK: the addresses of `prevResult.ips`.
    pub prev_result_ips: Vec<IpAddr>,
    /// GC: `cni.dev/valid-attachments`.
    pub valid_attachments: Vec<LiveAttachment>,
}

/// The `ipam` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpamConfig {
    /// `pools`: IPPool names, at most one per family; empty lets the agent choose.
    pub pools: Vec<String>,
    /// `socket`: the agent's unix socket.
    pub socket: PathBuf,
    /// `timeoutSeconds`: read/write timeout on the socket.
    pub timeout: Duration,
    /// `routes`: replaces the pools' routes in the result when set.
    pub routes: Option<Vec<Route>>,
    /// `dns`: replaces the pools' DNS settings in the result when set.
    pub dns: Option<Dns>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    name: Option<String>,
    ipam: Option<RawIpam>,
    // Read per command: a DEL must not fail on a malformed prevResult it does not use.
    args: Option<Value>,
    runtime_config: Option<Value>,
    prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Value>,
    /// The name an earlier 1.1 draft used; libcni sends both (containernetworking/cni#1101).
    #[serde(rename = "cni.dev/attachments")]
    attachments: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIpam {
    #[serde(rename = "type")]
    _plugin_type: Option<String>,
    #[serde(default)]
    pools: Vec<String>,
    socket: Option<String>,
    timeout_seconds: Option<u64>,
    routes: Option<Vec<Route>>,
    dns: Option<Dns>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
struct RawArgs {
    cni: Option<RawIps>,
}

#[derive(Deserialize)]
struct RawIps {
    #[serde(default)]
    ips: Vec<String>,
}

#[derive(Deserialize)]
struct RawPrevResult {
    #[serde(default)]
    ips: Vec<RawPrevIp>,
}

#[derive(Deserialize)]
struct RawPrevIp {
    address: String,
}

#[derive(Deserialize)]
struct RawValidAttachment {
    #[serde(rename = "containerID")]
    container_id: String,
    #[serde(rename = "ifname")]
    if_name: String,
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(ErrorCode::InvalidNetworkConfig, msg)
}

/// Deserializes `value`, naming the offending path in the error (`ipam.timeoutSeconds:
/// invalid type ...`). `prefix` is the path of `value` in the whole config.
fn decode<T: DeserializeOwned>(prefix: &str, value: &Value) -> Result<T, CniError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = match (prefix, inner.as_str()) {
            (p, ".") => p.to_owned(),
            ("", i) => i.to_owned(),
            (p, i) if i.starts_with('[') => format!("{p}{i}"),
            (p, i) => format!("{p}.{i}"),
        };
        let path = if path.is_empty() {
            "config".into()
        } else {
            path
        };
        invalid(format!("{path}: {}", e.inner()))
    })
}

/// Reads `cniVersion`, the first thing checked: every later error echoes it.
pub fn cni_version(doc: &Value) -> Result<CniVersion, CniError> {
    let supported = super::version::SUPPORTED.map(CniVersion::as_str).join(", ");
    match doc.get("cniVersion") {
        None => Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!("cniVersion: missing; ipledger supports {supported}"),
        )),
        Some(Value::String(text)) => CniVersion::parse(text).ok_or_else(|| {
            CniError::new(
                ErrorCode::IncompatibleVersion,
                format!("cniVersion: {text:?} is not supported; ipledger supports {supported}"),
            )
        }),
        Some(other) => Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!("cniVersion: expected a string such as \"1.1.0\", got {other}"),
        )),
    }
}

impl NetworkConfig {
    /// Validates the config for `command`, reading only the fields that command uses.
    pub fn parse(doc: &Value, command: Command) -> Result<NetworkConfig, CniError> {
        if !doc.is_object() {
            return Err(invalid("config: expected a JSON object"));
        }
        let cni_version = cni_version(doc)?;
        let needed = CniVersion::introducing(command);
        if cni_version < needed {
            return Err(CniError::new(
                ErrorCode::IncompatibleVersion,
                format!(
                    "cniVersion: {} needs {} or later; the config says {}",
                    command.as_str(),
                    needed.as_str(),
                    cni_version.as_str()
                ),
            ));
        }
        let raw: RawConfig = decode("", doc)?;

        let name = raw.name.ok_or_else(|| invalid("name: missing"))?;
        validate::network_name("name", &name).map_err(invalid)?;
        let ipam = raw.ipam.ok_or_else(|| {
            invalid("ipam: missing; the ipledger plugin reads its settings from the ipam section")
        })?;
        let ipam = IpamConfig::validate(ipam)?;

        let mut config = NetworkConfig {
            cni_version,
            name,
            ipam,
            runtime_config_ips: Vec::new(),
            args_ips: Vec::new(),
            prev_result_ips: Vec::new(),
            valid_attachments: Vec::new(),
        };
        match command {
            Command::Add => {
                if let Some(runtime_config) = &raw.runtime_config {
                    let ips: RawIps = decode("runtimeConfig", runtime_config)?;
                    config.runtime_config_ips = validate::requested_ips(
                        "runtimeConfig.ips",
                        ips.ips.iter().map(String::as_str),
                    )
                    .map_err(invalid)?;
                }
                if let Some(args) = &raw.args {
                    let args: RawArgs = decode("args", args)?;
                    if let Some(cni) = args.cni {
                        config.args_ips = validate::requested_ips(
                            "args.cni.ips",
                            cni.ips.iter().map(String::as_str),
                        )
                        .map_err(invalid)?;
                    }
                }
            }
            Command::Check => {
                let prev = raw.prev_result.as_ref().ok_or_else(|| {
                    invalid("prevResult: missing; CHECK needs the result of the ADD to verify")
                })?;
                let prev: RawPrevResult = decode("prevResult", prev)?;
                // The agent's limit: a CHECK it would refuse is refused here, by name.
                if prev.ips.len() > MAX_CHECK_IPS {
                    return Err(invalid(format!(
                        "prevResult.ips: {} addresses; at most {MAX_CHECK_IPS}",
                        prev.ips.len()
                    )));
                }
                config.prev_result_ips = prev
                    .ips
                    .iter()
                    .enumerate()
                    .map(|(i, ip)| {
                        ip.address
                            .parse::<IpNet>()
                            .map(|net| net.addr())
                            .or_else(|_| ip.address.parse::<IpAddr>())
                            .map_err(|_| {
                                invalid(format!(
                                    "prevResult.ips[{i}].address: {:?} is not an address in CIDR form",
                                    ip.address
                                ))
                            })
                    })
                    .collect::<Result<_, _>>()?;
            }
            Command::Gc => {
                let (key, list) = match (&raw.valid_attachments, &raw.attachments) {
                    (Some(list), _) => ("cni.dev/valid-attachments", list),
                    (None, Some(list)) => ("cni.dev/attachments", list),
                    (None, None) => {
                        return Err(invalid(
                            "cni.dev/valid-attachments: missing; GC without the runtime's list of live attachments would release every allocation",
                        ));
                    }
                };
                let list: Vec<RawValidAttachment> = decode(key, list)?;
                config.valid_attachments = list
                    .into_iter()
                    .enumerate()
                    .map(|(i, a)| {
                        let field = format!("{key}[{i}]");
                        validate::container_id(&format!("{field}.containerID"), &a.container_id)
                            .and_then(|()| {
                                validate::if_name(&format!("{field}.ifname"), &a.if_name)
                            })
                            .map_err(invalid)?;
                        Ok(LiveAttachment {
                            container_id: a.container_id,
                            if_name: a.if_name,
                        })
                    })
                    .collect::<Result<_, CniError>>()?;
            }
            Command::Del | Command::Status | Command::Version => {}
        }
        Ok(config)
    }

    /// The addresses the pod asked for: `runtimeConfig.ips` first, then `args.cni.ips`,
    /// then `IP=` of `CNI_ARGS`; the first source that names any wins.
    pub fn requested_ips(&self, cni_args_ips: &[IpAddr]) -> Vec<IpAddr> {
        [
            &self.runtime_config_ips[..],
            &self.args_ips[..],
            cni_args_ips,
        ]
        .into_iter()
        .find(|ips| !ips.is_empty())
        .unwrap_or_default()
        .to_vec()
    }
}

impl IpamConfig {
    fn validate(raw: RawIpam) -> Result<IpamConfig, CniError> {
        if let Some(key) = raw.unknown.keys().next() {
            return Err(CniError::new(
                ErrorCode::UnsupportedField,
                format!(
                    "ipam.{key}: unknown field; ipledger reads type, pools, socket, timeoutSeconds, routes and dns"
                ),
            ));
        }
        validate::pool_names("ipam.pools", &raw.pools).map_err(invalid)?;
        let socket = raw.socket.unwrap_or_else(|| DEFAULT_SOCKET_PATH.to_owned());
        if !socket.starts_with('/') {
            return Err(invalid(format!(
                "ipam.socket: {socket:?} must be an absolute path"
            )));
        }
        if socket.len() > MAX_SOCKET_PATH_BYTES {
            return Err(invalid(format!(
                "ipam.socket: longer than {MAX_SOCKET_PATH_BYTES} bytes, the limit of a unix socket path"
            )));
        }
        let timeout = match raw.timeout_seconds {
            None => DEFAULT_TIMEOUT,
            Some(s) if (1..=MAX_TIMEOUT_SECONDS).contains(&s) => Duration::from_secs(s),
            Some(s) => {
                return Err(invalid(format!(
                    "ipam.timeoutSeconds: {s} is out of range 1..={MAX_TIMEOUT_SECONDS}"
                )));
            }
        };
        Ok(IpamConfig {
            pools: raw.pools,
            socket: PathBuf::from(socket),
            timeout,
            routes: raw.routes,
            dns: raw.dns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": "pods",
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            "ipam": {"type": "ipledger"},
        })
    }

    fn parse(doc: Value, command: Command) -> Result<NetworkConfig, CniError> {
        NetworkConfig::parse(&doc, command)
    }

    fn error(doc: Value, command: Command) -> CniError {
        parse(doc, command).unwrap_err()
    }

    #[test]
    fn defaults_and_ignored_foreign_fields() {
        let config = parse(base(), Command::Add).unwrap();
        assert_eq!(config.cni_version, CniVersion::V1_0_0);
        assert_eq!(config.name, "pods");
        assert_eq!(config.ipam.pools, Vec::<String>::new());
        assert_eq!(config.ipam.socket, PathBuf::from(DEFAULT_SOCKET_PATH));
        assert_eq!(config.ipam.timeout, DEFAULT_TIMEOUT);
        assert_eq!(config.ipam.routes, None);
        assert_eq!(config.ipam.dns, None);
    }

    #[test]
    fn full_ipam_section() {
        let mut doc = base();
        doc["ipam"] = json!({
            "type": "ipledger",
            "pools": ["v4", "v6"],
            "socket": "/run/other.sock",
            "timeoutSeconds": 5,
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}],
            "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
        });
        let config = parse(doc, Command::Add).unwrap();
        assert_eq!(config.ipam.pools, vec!["v4", "v6"]);
        assert_eq!(config.ipam.socket, PathBuf::from("/run/other.sock"));
        assert_eq!(config.ipam.timeout, Duration::from_secs(5));
        let routes = config.ipam.routes.unwrap();
        assert_eq!(routes[0].dst, "0.0.0.0/0".parse::<IpNet>().unwrap());
        assert_eq!(routes[0].gw, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(config.ipam.dns.unwrap().search, vec!["svc.cluster.local"]);
    }

    #[test]
    fn version_errors_come_first_with_code_1() {
        let mut doc = base();
        doc["cniVersion"] = json!("0.2.0");
        doc["name"] = json!("-bad");
        let e = error(doc, Command::Add);
        assert_eq!(e.code, 1);
        assert!(
            e.msg.starts_with("cniVersion: \"0.2.0\" is not supported"),
            "{}",
            e.msg
        );
        let mut doc = base();
        doc.as_object_mut().unwrap().remove("cniVersion");
        assert!(
            error(doc, Command::Add)
                .msg
                .starts_with("cniVersion: missing")
        );
        let mut doc = base();
        doc["cniVersion"] = json!(1);
        assert_eq!(error(doc, Command::Add).code, 1);
    }

    #[test]
    fn a_command_newer_than_the_version_is_refused_before_its_fields_are_read() {
        let mut doc = base();
        doc["cniVersion"] = json!("0.3.1");
        let e = error(doc, Command::Check);
        assert_eq!(e.code, 1);
        assert_eq!(
            e.msg,
            "cniVersion: CHECK needs 0.4.0 or later; the config says 0.3.1"
        );
        let e = error(base(), Command::Gc);
        assert_eq!(e.code, 1);
        assert!(e.msg.starts_with("cniVersion: GC needs 1.1.0"), "{}", e.msg);
    }

    #[test]
    fn config_errors_name_the_field() {
        let cases: Vec<(Value, u32, &str)> = vec![
            (json!({"name": null}), 7, "name: missing"),
            (json!({"name": "-x"}), 7, "name: "),
            (json!({"name": 5}), 7, "name: invalid type"),
            (json!({"ipam": null}), 7, "ipam: missing"),
            (
                json!({"ipam": {"pool": "v4"}}),
                2,
                "ipam.pool: unknown field",
            ),
            (
                json!({"ipam": {"pools": "v4"}}),
                7,
                "ipam.pools: invalid type",
            ),
            (json!({"ipam": {"pools": ["V4"]}}), 7, "ipam.pools[0]: "),
            (
                json!({"ipam": {"pools": ["a", "b", "c"]}}),
                7,
                "ipam.pools: 3 pools",
            ),
            (
                json!({"ipam": {"pools": ["a", "a"]}}),
                7,
                "ipam.pools: \"a\" is named twice",
            ),
            (
                json!({"ipam": {"socket": "agent.sock"}}),
                7,
                "ipam.socket: ",
            ),
            (
                json!({"ipam": {"socket": format!("/{}", "s".repeat(200))}}),
                7,
                "ipam.socket: longer",
            ),
            (
                json!({"ipam": {"timeoutSeconds": 0}}),
                7,
                "ipam.timeoutSeconds: 0 is out of range",
            ),
            (
                json!({"ipam": {"timeoutSeconds": "5"}}),
                7,
                "ipam.timeoutSeconds: invalid type",
            ),
            (
                json!({"ipam": {"routes": [{"dst": "10.0.0.0"}]}}),
                7,
                "ipam.routes[0].dst: ",
            ),
            (
                json!({"ipam": {"dns": {"nameservers": ["x"]}}}),
                7,
                "ipam.dns.nameservers[0]: ",
            ),
            (
                json!({"runtimeConfig": {"ips": ["10.0.0.1", "10.0.0.2"]}}),
                7,
                "runtimeConfig.ips: ",
            ),
            (
                json!({"runtimeConfig": {"ips": [1]}}),
                7,
                "runtimeConfig.ips[0]: invalid type",
            ),
            (
                json!({"args": {"cni": {"ips": ["nope"]}}}),
                7,
                "args.cni.ips: \"nope\"",
            ),
        ];
        for (patch, code, prefix) in cases {
            let mut doc = base();
            for (key, value) in patch.as_object().unwrap() {
                if key == "ipam" && value.is_object() {
                    for (k, v) in value.as_object().unwrap() {
                        doc["ipam"][k] = v.clone();
                    }
                } else if value.is_null() {
                    doc.as_object_mut().unwrap().remove(key);
                } else {
                    doc[key] = value.clone();
                }
            }
            let e = error(doc, Command::Add);
            assert_eq!(e.code, code, "{patch}: {}", e.msg);
            assert!(e.msg.starts_with(prefix), "{patch}: {}", e.msg);
        }
    }

    #[test]
    fn requested_ips_take_the_first_source_that_names_any() {
        let mut doc = base();
        doc["args"] = json!({"cni": {"ips": ["10.0.0.7"]}, "labels": {"x": "y"}});
        let config = parse(doc.clone(), Command::Add).unwrap();
        let from_cni_args: Vec<IpAddr> = vec!["10.0.0.9".parse().unwrap()];
        assert_eq!(
            config.requested_ips(&from_cni_args),
            vec!["10.0.0.7".parse::<IpAddr>().unwrap()]
        );

        doc["runtimeConfig"] = json!({"ips": ["10.0.0.8/24", "fd00::8/64"], "portMappings": []});
        let config = parse(doc, Command::Add).unwrap();
        assert_eq!(
            config.requested_ips(&from_cni_args),
            vec![
                "10.0.0.8".parse::<IpAddr>().unwrap(),
                "fd00::8".parse().unwrap()
            ]
        );

        let config = parse(base(), Command::Add).unwrap();
        assert_eq!(config.requested_ips(&from_cni_args), from_cni_args);
        assert!(config.requested_ips(&[]).is_empty());
    }

    /// Found by the `cni_input` fuzz target: the plugin sent the agent a CHECK the agent
    /// refuses. The plugin refuses it itself, naming the field.
    #[test]
    fn check_refuses_more_prev_result_ips_than_the_agent_takes() {
        let ips = |n: usize| -> Vec<Value> {
            (1..=n)
                .map(|i| json!({"address": format!("10.0.0.{i}/16")}))
                .collect()
        };
        let mut doc = base();
        doc["prevResult"] = json!({ "ips": ips(crate::protocol::MAX_CHECK_IPS) });
        assert!(parse(doc, Command::Check).is_ok());
        let mut doc = base();
        doc["prevResult"] = json!({ "ips": ips(crate::protocol::MAX_CHECK_IPS + 1) });
        let e = error(doc, Command::Check);
        assert_eq!(e.code, ErrorCode::InvalidNetworkConfig.as_u32());
        assert_eq!(e.msg, "prevResult.ips: 65 addresses; at most 64");
    }

    #[test]
    fn check_reads_prev_result_ips_in_any_version_format() {
        let mut doc = base();
        doc["prevResult"] = json!({
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "eth0"}],
            "ips": [
                {"version": "4", "address": "10.0.0.5/24", "gateway": "10.0.0.1", "interface": 0},
                {"address": "fd00::5/64"},
            ],
        });
        let config = parse(doc, Command::Check).unwrap();
        assert_eq!(
            config.prev_result_ips,
            vec![
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        let e = error(base(), Command::Check);
        assert!(e.msg.starts_with("prevResult: missing"), "{}", e.msg);
        let mut doc = base();
        doc["prevResult"] = json!({"ips": [{"address": "garbage"}]});
        let e = error(doc, Command::Check);
        assert!(
            e.msg.starts_with("prevResult.ips[0].address: "),
            "{}",
            e.msg
        );
    }

    #[test]
    fn del_ignores_fields_it_does_not_use() {
        let mut doc = base();
        doc["prevResult"] = json!("not a result");
        doc["runtimeConfig"] = json!({"ips": ["bad"]});
        assert!(parse(doc, Command::Del).is_ok());
    }

    #[test]
    fn gc_reads_and_validates_valid_attachments() {
        let mut doc = base();
        doc["cniVersion"] = json!("1.1.0");
        doc["cni.dev/valid-attachments"] = json!([
            {"containerID": "abc", "ifname": "eth0"},
            {"containerID": "def", "ifname": "net1"},
        ]);
        let config = parse(doc.clone(), Command::Gc).unwrap();
        assert_eq!(config.valid_attachments.len(), 2);
        assert_eq!(config.valid_attachments[1].container_id, "def");
        assert_eq!(config.valid_attachments[1].if_name, "net1");

        doc["cni.dev/valid-attachments"] = json!([{"containerID": "abc", "ifname": "a/b"}]);
        let e = error(doc.clone(), Command::Gc);
        assert!(
            e.msg.starts_with("cni.dev/valid-attachments[0].ifname: "),
            "{}",
            e.msg
        );
        doc["cni.dev/valid-attachments"] = json!([{"containerID": "abc"}]);
        let e = error(doc.clone(), Command::Gc);
        assert!(
            e.msg
                .starts_with("cni.dev/valid-attachments[0]: missing field `ifname`"),
            "{}",
            e.msg
        );
        doc.as_object_mut()
            .unwrap()
            .remove("cni.dev/valid-attachments");
        doc["cni.dev/attachments"] = json!([{"containerID": "old", "ifname": "eth0"}]);
        let config = parse(doc.clone(), Command::Gc).unwrap();
        assert_eq!(config.valid_attachments[0].container_id, "old");
        doc.as_object_mut().unwrap().remove("cni.dev/attachments");
        let e = error(doc, Command::Gc);
        assert!(
            e.msg.starts_with("cni.dev/valid-attachments: missing"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn non_object_config_is_refused() {
        let e = NetworkConfig::parse(&json!([1, 2]), Command::Add).unwrap_err();
        assert_eq!(e.code, 7);
    }
}
