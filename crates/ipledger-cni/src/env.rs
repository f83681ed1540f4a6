//! The `CNI_*` environment: command, attachment identity and `CNI_ARGS`.

use std::ffi::OsString;
use std::net::IpAddr;

use super::error::{CniError, ErrorCode};
use super::validate;
use crate::protocol::PodRef;

/// The CNI operation asked for in `CNI_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Allocate addresses for an attachment.
    Add,
    /// Release an attachment's addresses.
    Del,
    /// Verify an attachment's addresses.
    Check,
    /// Report supported versions.
    Version,
    /// Report whether ADD could succeed (CNI 1.1).
    Status,
    /// Release allocations of dead attachments (CNI 1.1).
    Gc,
}

impl Command {
    /// Parses `CNI_COMMAND`.
    pub fn parse(text: &str) -> Result<Command, CniError> {
        Ok(match text {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            other => {
                return Err(CniError::new(
                    ErrorCode::InvalidEnvironment,
                    format!(
                        "CNI_COMMAND: unknown command {other:?}; expected ADD, DEL, CHECK, VERSION, STATUS or GC"
                    ),
                ));
            }
        })
    }

    /// The spelling in `CNI_COMMAND`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }

    /// Whether the command acts on one attachment, so that `CNI_CONTAINERID` and
    /// `CNI_IFNAME` are required (the spec guarantees only `CNI_COMMAND` and
    /// `CNI_PATH` for GC and STATUS).
    fn names_an_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }

    /// Whether `CNI_NETNS` is required: DEL must work after the namespace is gone.
    fn needs_netns(self) -> bool {
        matches!(self, Command::Add | Command::Check)
    }
}

/// The validated `CNI_*` environment of one invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniEnv {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID`; present for ADD, DEL and CHECK.
    pub container_id: Option<String>,
    /// `CNI_IFNAME`; present for ADD, DEL and CHECK.
    pub if_name: Option<String>,
    /// `CNI_NETNS`; present for ADD and CHECK (DEL must work without it).
    pub netns: Option<String>,
    /// `CNI_ARGS`, parsed.
    pub args: CniArgs,
}

/// Longest `CNI_ARGS` accepted.
const MAX_CNI_ARGS_BYTES: usize = 64 * 1024;

/// Reads one variable; unset and empty are the same, as in the spec's reference
/// implementation.
fn var(lookup: &dyn Fn(&str) -> Option<OsString>, name: &str) -> Result<Option<String>, CniError> {
    match lookup(name) {
        None => Ok(None),
        Some(value) if value.is_empty() => Ok(None),
        Some(value) => value.into_string().map(Some).map_err(|_| {
            CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("{name}: value is not valid UTF-8"),
            )
        }),
    }
}

fn required(name: &str, value: Option<String>) -> Result<String, CniError> {
    value.ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidEnvironment,
            format!("{name}: missing; the runtime must set it"),
        )
    })
}

/// Reads `CNI_COMMAND` alone: VERSION needs nothing else.
pub fn read_command(lookup: &dyn Fn(&str) -> Option<OsString>) -> Result<Command, CniError> {
    Command::parse(&required("CNI_COMMAND", var(lookup, "CNI_COMMAND")?)?)
}

/// Reads and validates the environment a command needs; variables a command does not
/// use are not read at all (GC and STATUS get only `CNI_COMMAND` and `CNI_PATH`).
///
/// For DEL, a `CNI_ARGS` that does not parse is dropped rather than refused: the pod
/// identity is informational there, and a DEL that fails keeps the runtime retrying.
pub fn read_env(lookup: &dyn Fn(&str) -> Option<OsString>) -> Result<CniEnv, CniError> {
    let command = read_command(lookup)?;
    let mut env = CniEnv {
        command,
        container_id: None,
        if_name: None,
        netns: None,
        args: CniArgs::default(),
    };
    if !command.names_an_attachment() {
        return Ok(env);
    }
    let invalid = |msg: String| CniError::new(ErrorCode::InvalidEnvironment, msg);
    let container_id = required("CNI_CONTAINERID", var(lookup, "CNI_CONTAINERID")?)?;
    validate::container_id("CNI_CONTAINERID", &container_id).map_err(invalid)?;
    let if_name = required("CNI_IFNAME", var(lookup, "CNI_IFNAME")?)?;
    validate::if_name("CNI_IFNAME", &if_name).map_err(invalid)?;
    env.container_id = Some(container_id);
    env.if_name = Some(if_name);
    if command.needs_netns() {
        let netns = required("CNI_NETNS", var(lookup, "CNI_NETNS")?)?;
        validate::netns("CNI_NETNS", &netns).map_err(invalid)?;
        env.netns = Some(netns);
    }
    let raw_args = var(lookup, "CNI_ARGS")?.unwrap_or_default();
    env.args = match CniArgs::parse(&raw_args) {
        Ok(args) => args,
        Err(error) if command == Command::Del => {
            tracing::warn!(%error, "ignoring CNI_ARGS on DEL");
            CniArgs::default()
        }
        Err(error) => return Err(error),
    };
    Ok(env)
}

/// `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`, as kubelet's runtimes pass them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniArgs {
    /// `K8S_POD_NAMESPACE`.
    pub pod_namespace: Option<String>,
    /// `K8S_POD_NAME`.
    pub pod_name: Option<String>,
    /// `K8S_POD_UID`.
    pub pod_uid: Option<String>,
    /// `K8S_POD_INFRA_CONTAINER_ID`.
    pub infra_container_id: Option<String>,
    /// Legacy `IP=`: requested addresses, comma-separated.
    pub ips: Vec<IpAddr>,
}

impl CniArgs {
    /// Parses `CNI_ARGS`.
    ///
    /// Unknown keys are an error unless `IgnoreUnknown` is true, as the CNI conventions
    /// ask (kubelet's runtimes always set it).
    pub fn parse(raw: &str) -> Result<CniArgs, CniError> {
        let invalid =
            |msg: String| CniError::new(ErrorCode::InvalidEnvironment, format!("CNI_ARGS: {msg}"));
        if raw.len() > MAX_CNI_ARGS_BYTES {
            return Err(invalid(format!("longer than {MAX_CNI_ARGS_BYTES} bytes")));
        }
        let mut args = CniArgs::default();
        let mut ignore_unknown = false;
        let mut unknown = Vec::new();
        let mut seen = Vec::new();
        for pair in raw.split(';').filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(invalid(format!("{pair:?} is not KEY=VALUE")));
            };
            // A repeat is harmless; two different values leave the pod ambiguous.
            match seen.iter().find(|(k, _)| *k == key) {
                Some((_, earlier)) if *earlier == value => continue,
                Some(_) => {
                    return Err(invalid(format!(
                        "{key} is given twice with different values"
                    )));
                }
                None => seen.push((key, value)),
            }
            let field = format!("CNI_ARGS {key}");
            let checked = |check: fn(&str, &str) -> Result<(), String>| {
                check(&field, value)
                    .map(|()| Some(value.to_owned()))
                    .map_err(|e| CniError::new(ErrorCode::InvalidEnvironment, e))
            };
            match key {
                "IgnoreUnknown" => {
                    ignore_unknown = match value.to_ascii_lowercase().as_str() {
                        "1" | "true" => true,
                        "0" | "false" => false,
                        _ => {
                            return Err(invalid(format!(
                                "IgnoreUnknown: {value:?} is not a boolean (1, 0, true, false)"
                            )));
                        }
                    }
                }
                "K8S_POD_NAMESPACE" => args.pod_namespace = checked(validate::dns_label)?,
                "K8S_POD_NAME" => args.pod_name = checked(validate::dns_subdomain)?,
                "K8S_POD_UID" => args.pod_uid = checked(validate::pod_uid)?,
                "K8S_POD_INFRA_CONTAINER_ID" => {
                    args.infra_container_id = checked(validate::container_id)?
                }
                "IP" => {
                    args.ips = validate::requested_ips(
                        "CNI_ARGS IP",
                        value.split(',').map(str::trim).filter(|s| !s.is_empty()),
                    )
                    .map_err(|e| CniError::new(ErrorCode::InvalidEnvironment, e))?
                }
                other => unknown.push(other.to_owned()),
            }
        }
        if !ignore_unknown && !unknown.is_empty() {
            return Err(CniError::new(
                ErrorCode::UnsupportedField,
                format!(
                    "CNI_ARGS: unknown key {}; set IgnoreUnknown=1 to ignore unknown keys",
                    unknown.join(", ")
                ),
            ));
        }
        if args.pod_name.is_some() != args.pod_namespace.is_some() {
            return Err(invalid(
                "K8S_POD_NAME and K8S_POD_NAMESPACE must be given together".into(),
            ));
        }
        Ok(args)
    }

    /// The pod these args name, when namespace and name are known.
    pub fn pod(&self) -> Option<PodRef> {
        Some(PodRef {
            namespace: self.pod_namespace.clone()?,
            name: self.pod_name.clone()?,
            uid: self.pod_uid.clone(),
            infra_container_id: self.infra_container_id.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn add_env() -> Vec<(&'static str, &'static str)> {
        vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_PATH", "/opt/cni/bin"),
        ]
    }

    fn with(
        mut env: Vec<(&'static str, &'static str)>,
        key: &'static str,
        value: &'static str,
    ) -> Vec<(&'static str, &'static str)> {
        env.retain(|(k, _)| *k != key);
        env.push((key, value));
        env
    }

    fn error_of(vars: &[(&str, &str)]) -> CniError {
        read_env(&lookup(vars)).unwrap_err()
    }

    #[test]
    fn parses_every_command_and_refuses_others() {
        for command in [
            Command::Add,
            Command::Del,
            Command::Check,
            Command::Version,
            Command::Status,
            Command::Gc,
        ] {
            assert_eq!(Command::parse(command.as_str()).unwrap(), command);
        }
        let error = Command::parse("add").unwrap_err();
        assert_eq!(error.code, 4);
        assert!(error.msg.starts_with("CNI_COMMAND:"), "{}", error.msg);
    }

    #[test]
    fn add_reads_the_attachment() {
        let env = read_env(&lookup(&add_env())).unwrap();
        assert_eq!(env.command, Command::Add);
        assert_eq!(env.container_id.as_deref(), Some("abc123"));
        assert_eq!(env.if_name.as_deref(), Some("eth0"));
        assert_eq!(env.netns.as_deref(), Some("/var/run/netns/x"));
        assert_eq!(env.args, CniArgs::default());
    }

    #[test]
    fn missing_variables_are_named() {
        for name in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"] {
            let vars: Vec<_> = add_env().into_iter().filter(|(k, _)| *k != name).collect();
            let error = error_of(&vars);
            assert_eq!(error.code, 4, "{name}");
            assert!(
                error.msg.starts_with(&format!("{name}: missing")),
                "{}",
                error.msg
            );
        }
        // Empty is the same as unset.
        let error = error_of(&with(add_env(), "CNI_IFNAME", ""));
        assert!(
            error.msg.starts_with("CNI_IFNAME: missing"),
            "{}",
            error.msg
        );
    }

    #[test]
    fn del_needs_no_netns_and_status_gc_need_no_attachment() {
        let del = read_env(&lookup(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .unwrap();
        assert_eq!(del.netns, None);
        for command in ["STATUS", "GC", "VERSION"] {
            // Leftover garbage in variables these commands do not use is not read.
            let env = read_env(&lookup(&[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", "-bad"),
                ("CNI_ARGS", "garbage"),
            ]))
            .unwrap();
            assert_eq!(env.container_id, None);
            assert_eq!(env.if_name, None);
            assert_eq!(env.args, CniArgs::default());
        }
    }

    #[test]
    fn invalid_container_id_and_ifname_are_refused_by_name() {
        for bad in ["-abc", "a b", "a/b", "ab;c"] {
            let error = error_of(&with(add_env(), "CNI_CONTAINERID", bad));
            assert_eq!(error.code, 4);
            assert!(error.msg.starts_with("CNI_CONTAINERID:"), "{}", error.msg);
        }
        let long = "a".repeat(129);
        let error = read_env(&lookup(
            &with(add_env(), "CNI_CONTAINERID", "x")
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        if k == "CNI_CONTAINERID" {
                            long.as_str()
                        } else {
                            v
                        },
                    )
                })
                .collect::<Vec<_>>(),
        ))
        .unwrap_err();
        assert!(error.msg.contains("128"), "{}", error.msg);
        for bad in ["0123456789abcdef", ".", "..", "a/b", "a:b", "a b", "a\tb"] {
            let error = error_of(&with(add_env(), "CNI_IFNAME", bad));
            assert_eq!(error.code, 4, "{bad:?}");
            assert!(error.msg.starts_with("CNI_IFNAME:"), "{}", error.msg);
        }
    }

    #[test]
    fn cni_args_from_kubelet_runtimes() {
        let args = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=0b7d4c9e-7f1a-4c2b-9d55-0f9e1c2d3a4b;MAC=aa",
        )
        .unwrap();
        let pod = args.pod().unwrap();
        assert_eq!(pod.namespace, "default");
        assert_eq!(pod.name, "web-0");
        assert_eq!(
            pod.uid.as_deref(),
            Some("0b7d4c9e-7f1a-4c2b-9d55-0f9e1c2d3a4b")
        );
        assert_eq!(pod.infra_container_id.as_deref(), Some("abc123"));
        assert!(args.ips.is_empty());
    }

    #[test]
    fn cni_args_legacy_ip_list() {
        let args = CniArgs::parse("IP=10.0.0.5, fd00::5").unwrap();
        assert_eq!(
            args.ips,
            vec![
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        let error = CniArgs::parse("IP=10.0.0.300").unwrap_err();
        assert_eq!(error.code, 4);
        assert!(error.msg.starts_with("CNI_ARGS IP:"), "{}", error.msg);
    }

    #[test]
    fn cni_args_errors_name_the_key() {
        let cases = [
            (
                "K8S_POD_NAME",
                4,
                "CNI_ARGS: \"K8S_POD_NAME\" is not KEY=VALUE",
            ),
            ("FOO=1", 2, "CNI_ARGS: unknown key FOO"),
            ("IgnoreUnknown=maybe", 4, "CNI_ARGS: IgnoreUnknown:"),
            (
                "K8S_POD_NAMESPACE=Bad_NS;K8S_POD_NAME=a",
                4,
                "CNI_ARGS K8S_POD_NAMESPACE:",
            ),
            (
                "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=-a",
                4,
                "CNI_ARGS K8S_POD_NAME:",
            ),
            ("K8S_POD_UID=a b", 4, "CNI_ARGS K8S_POD_UID:"),
            (
                "K8S_POD_NAMESPACE=ns",
                4,
                "CNI_ARGS: K8S_POD_NAME and K8S_POD_NAMESPACE",
            ),
            (
                "IP=1.2.3.4;IP=1.2.3.5",
                4,
                "CNI_ARGS: IP is given twice with different values",
            ),
        ];
        for (raw, code, prefix) in cases {
            let error = CniArgs::parse(raw).unwrap_err();
            assert_eq!(error.code, code, "{raw}");
            assert!(error.msg.starts_with(prefix), "{raw}: {}", error.msg);
        }
        let repeated =
            CniArgs::parse("K8S_POD_NAMESPACE=ns;K8S_POD_NAME=a;K8S_POD_NAME=a").unwrap();
        assert_eq!(repeated.pod_name.as_deref(), Some("a"));
        // IgnoreUnknown applies wherever it appears in the list.
        assert!(CniArgs::parse("FOO=1;IgnoreUnknown=true").is_ok());
        assert!(CniArgs::parse("").unwrap().pod().is_none());
    }

    #[test]
    fn del_tolerates_unparseable_cni_args_but_add_does_not() {
        let del = read_env(&lookup(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "garbage"),
        ]))
        .unwrap();
        assert_eq!(del.args, CniArgs::default());
        let error = error_of(&with(add_env(), "CNI_ARGS", "garbage"));
        assert_eq!(error.code, 4);
    }
}
