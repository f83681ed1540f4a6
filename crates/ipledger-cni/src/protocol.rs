//! The versioned JSON API between the CNI plugin and the node agent.
//!
//! HTTP/1.1 over the agent's root-only unix socket. Every verb of the plugin is one
//! request: `POST` [`ADD_PATH`], [`DEL_PATH`], [`CHECK_PATH`], [`GC_PATH`] with a JSON
//! body, and `GET` [`STATUS_PATH`] with a [`StatusQuery`]. A 2xx answer carries the
//! verb's response type; any other status carries an [`ErrorBody`], which the plugin
//! prints unchanged as the CNI error (so an agent-side "pool exhausted" reaches the
//! runtime with its own code and message).
//!
//! Both sides serialize exactly these types; a breaking change gets a new path prefix
//! (`/v2/...`) so that a plugin and an agent of different releases fail loudly rather
//! than misread each other. Fields added later must be optional (`#[serde(default)]`).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::{CniError, ErrorCode};
use crate::validate;

/// `POST`: allocate addresses for an attachment ([`AddRequest`] → [`AddResponse`]).
pub const ADD_PATH: &str = "/v1/add";
/// `POST`: release an attachment's addresses ([`DelRequest`] → [`DelResponse`]).
pub const DEL_PATH: &str = "/v1/del";
/// `POST`: verify an attachment still holds its addresses ([`CheckRequest`] → [`CheckResponse`]).
pub const CHECK_PATH: &str = "/v1/check";
/// `POST`: release allocations not in the runtime's list ([`GcRequest`] → [`GcResponse`]).
pub const GC_PATH: &str = "/v1/gc";
/// `GET` with a [`StatusQuery`]: can the agent allocate now ([`StatusResponse`])?
pub const STATUS_PATH: &str = "/v1/status";
/// Where the agent listens unless the CNI config's `ipam.socket` says otherwise.
pub const DEFAULT_SOCKET_PATH: &str = "/run/ipledger/agent.sock";
/// Largest request or response body either side accepts, in bytes.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// One network attachment of a container: the key every allocation is recorded under.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// The CNI network name (`name` of the network configuration).
    pub network: String,
    /// `CNI_CONTAINERID`: the runtime's id of the sandbox.
    pub container_id: String,
    /// `CNI_IFNAME`: the interface name inside the sandbox.
    pub if_name: String,
}

/// The pod behind an attachment, as kubelet's runtime passes it in `CNI_ARGS`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    /// `K8S_POD_NAMESPACE`.
    pub namespace: String,
    /// `K8S_POD_NAME`.
    pub name: String,
    /// `K8S_POD_UID`, when the runtime passes it (containerd and CRI-O do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// `K8S_POD_INFRA_CONTAINER_ID`: the sandbox ("pause") container id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infra_container_id: Option<String>,
}

/// `POST /v1/add`: allocate one address per IP family for an attachment.
///
/// The agent answers idempotently: an allocation already held by the same attachment
/// is returned as is.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AddRequest {
    /// Who the addresses are for.
    pub attachment: Attachment,
    /// The pod, when known; used for pool choice by annotation and for the ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    /// Pools named in the CNI config's `ipam.pools` (at most one per IP family);
    /// empty means the agent chooses (pod, namespace annotations, default pools).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<String>,
    /// Specific addresses asked for (`runtimeConfig.ips`, `args.cni.ips` or `IP=`);
    /// the agent honours each or refuses the whole request with a precise error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requested_ips: Vec<IpAddr>,
    /// `CNI_NETNS`, for the agent's logs only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

/// The answer to an [`AddRequest`]: what the plugin turns into the CNI result.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AddResponse {
    /// One entry per IP family; never empty on success.
    pub ips: Vec<AllocatedIp>,
    /// Routes of the pools the addresses came from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// DNS settings of the pools the addresses came from.
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

/// One allocated address.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AllocatedIp {
    /// The address with its pool's prefix length, e.g. `10.244.1.7/16`.
    pub address: IpNet,
    /// The pool's gateway, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Name of the IPPool the address belongs to.
    pub pool: String,
}

/// A route for the CNI result (`routes[]`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Destination network.
    pub dst: IpNet,
    /// Next hop; absent means the interface's default gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// DNS settings for the CNI result (`dns`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Dns {
    /// Name servers, in priority order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<IpAddr>,
    /// Local domain for short names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains, in priority order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// True when no field is set, so the result can leave `dns` out.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// `POST /v1/del`: release whatever the attachment holds; success when it holds nothing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DelRequest {
    /// Whose addresses to release.
    pub attachment: Attachment,
    /// The pod, when known; for the agent's logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
}

/// The answer to a [`DelRequest`].
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DelResponse {
    /// Addresses released by this call; empty when nothing was held (a repeated DEL).
    #[serde(default)]
    pub released: Vec<IpAddr>,
}

/// `POST /v1/check`: verify the attachment still holds the addresses of its ADD result.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CheckRequest {
    /// Whose allocation to verify.
    pub attachment: Attachment,
    /// The pod, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    /// Pools named in the CNI config's `ipam.pools`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<String>,
    /// The addresses of `prevResult.ips`: each must be allocated to this attachment.
    pub ips: Vec<IpAddr>,
}

/// The answer to a [`CheckRequest`] that found everything in place.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CheckResponse {
    /// The addresses verified.
    #[serde(default)]
    pub verified: Vec<IpAddr>,
}

/// An attachment the runtime still considers alive (an entry of the CNI 1.1 GC list).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct LiveAttachment {
    /// `containerID` of the entry of `cni.dev/valid-attachments`.
    pub container_id: String,
    /// `ifname` of the entry of `cni.dev/valid-attachments`.
    pub if_name: String,
}

/// `POST /v1/gc`: release this node's allocations of `network` whose attachment is not
/// in `valid_attachments`. The agent carries on past single failures and reports them
/// together in one error at the end.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GcRequest {
    /// The CNI network being collected.
    pub network: String,
    /// Every attachment of that network the runtime still knows about.
    pub valid_attachments: Vec<LiveAttachment>,
}

/// The answer to a [`GcRequest`] that released everything it had to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GcResponse {
    /// The attachments whose allocations were released.
    #[serde(default)]
    pub released: Vec<Attachment>,
}

/// Query of `GET /v1/status`: `?network=NAME&pools=a,b` (both optional).
///
/// Names are restricted (CNI network names, Kubernetes object names) to characters
/// that need no percent-encoding, so the query is written and read as is.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StatusQuery {
    /// The CNI network asking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Comma-separated pools named in the config; absent means the default pools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pools: Option<String>,
}

impl StatusQuery {
    /// The query for a network and its configured pools.
    pub fn new(network: &str, pools: &[String]) -> Self {
        StatusQuery {
            network: Some(network.to_owned()),
            pools: (!pools.is_empty()).then(|| pools.join(",")),
        }
    }

    /// The pool names of `pools`, split.
    pub fn pool_names(&self) -> Vec<&str> {
        self.pools
            .as_deref()
            .map(|p| p.split(',').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    }

    /// The path and query string to request, e.g. `/v1/status?network=pods&pools=a,b`.
    pub fn to_path(&self) -> String {
        let mut params = Vec::new();
        if let Some(network) = &self.network {
            params.push(format!("network={network}"));
        }
        if let Some(pools) = &self.pools {
            params.push(format!("pools={pools}"));
        }
        if params.is_empty() {
            STATUS_PATH.to_owned()
        } else {
            format!("{STATUS_PATH}?{}", params.join("&"))
        }
    }

    /// Reads the query string part of a request target (without the `?`); unknown keys
    /// are ignored so that later plugins may send more.
    pub fn from_query(query: &str) -> Self {
        let mut parsed = StatusQuery::default();
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("network", v)) => parsed.network = Some(v.to_owned()),
                Some(("pools", v)) => parsed.pools = Some(v.to_owned()),
                _ => {}
            }
        }
        parsed
    }
}

/// The answer to a STATUS query when the agent can allocate.
///
/// When it cannot, the agent answers 503 with an [`ErrorBody`] of code 50 (or 51 when
/// existing pods are affected too), which the plugin prints unchanged.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StatusResponse {}

/// Body of every non-2xx answer: the CNI error the plugin prints, minus `cniVersion`
/// (the plugin echoes the one of its config).
///
/// `code` stays a plain number so that a code added to a newer agent still reaches the
/// runtime through an older plugin; see `cni::ErrorCode` for the known ones.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// CNI error code: 1–99 well-known, 100 and above ipledger's own.
    pub code: u32,
    /// Short message, one line.
    pub msg: String,
    /// Longer explanation, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// The agent's error, as the plugin prints it.
impl From<ErrorBody> for CniError {
    fn from(body: ErrorBody) -> Self {
        CniError {
            code: body.code,
            msg: body.msg,
            details: body.details,
        }
    }
}

/// The plugin's own error, as the agent would answer it.
impl From<CniError> for ErrorBody {
    fn from(error: CniError) -> Self {
        ErrorBody {
            code: error.code,
            msg: error.msg,
            details: error.details,
        }
    }
}

/// Most addresses a CHECK may ask about (the plugin refuses more itself).
pub const MAX_CHECK_IPS: usize = 64;

/// An [`ErrorBody`] refusing a request, with the message of a field check.
fn refuse(code: ErrorCode) -> impl Fn(String) -> ErrorBody {
    move |msg| ErrorBody {
        code: code.as_u32(),
        msg,
        details: None,
    }
}

// The plugin checks all of this before sending; the agent checks again because the
// socket is its trust boundary. Codes are those the plugin would have used.

impl Attachment {
    /// Checks every field with the plugin's rules; messages name the JSON field.
    pub fn validate(&self) -> Result<(), ErrorBody> {
        validate::network_name("attachment.network", &self.network)
            .map_err(refuse(ErrorCode::InvalidNetworkConfig))?;
        validate::container_id("attachment.containerId", &self.container_id)
            .map_err(refuse(ErrorCode::InvalidEnvironment))?;
        validate::if_name("attachment.ifName", &self.if_name)
            .map_err(refuse(ErrorCode::InvalidEnvironment))
    }
}

impl PodRef {
    /// Checks the pod's names and ids.
    pub fn validate(&self) -> Result<(), ErrorBody> {
        let invalid = refuse(ErrorCode::InvalidEnvironment);
        validate::dns_label("pod.namespace", &self.namespace).map_err(&invalid)?;
        validate::dns_subdomain("pod.name", &self.name).map_err(&invalid)?;
        if let Some(uid) = &self.uid {
            validate::pod_uid("pod.uid", uid).map_err(&invalid)?;
        }
        if let Some(id) = &self.infra_container_id {
            validate::container_id("pod.infraContainerId", id).map_err(&invalid)?;
        }
        Ok(())
    }
}

/// The attachment as the core keys allocations.
impl TryFrom<&Attachment> for ipledger_core::Attachment {
    type Error = ipledger_core::FieldError;

    fn try_from(wire: &Attachment) -> Result<Self, Self::Error> {
        ipledger_core::Attachment::new(&wire.network, &wire.container_id, &wire.if_name)
    }
}

/// The pod as the ledger records it.
impl From<&PodRef> for ipledger_core::PodRef {
    fn from(wire: &PodRef) -> Self {
        ipledger_core::PodRef {
            namespace: wire.namespace.clone(),
            name: wire.name.clone(),
            uid: wire.uid.clone(),
        }
    }
}

fn validate_pod(pod: &Option<PodRef>) -> Result<(), ErrorBody> {
    pod.as_ref().map_or(Ok(()), PodRef::validate)
}

impl AddRequest {
    /// Checks the whole request.
    pub fn validate(&self) -> Result<(), ErrorBody> {
        self.attachment.validate()?;
        validate_pod(&self.pod)?;
        validate::pool_names("pools", &self.pools)
            .map_err(refuse(ErrorCode::InvalidNetworkConfig))?;
        validate::one_address_per_family("requestedIps", &self.requested_ips)
            .map_err(refuse(ErrorCode::InvalidNetworkConfig))?;
        match &self.netns {
            Some(netns) => {
                validate::netns("netns", netns).map_err(refuse(ErrorCode::InvalidEnvironment))
            }
            None => Ok(()),
        }
    }
}

impl DelRequest {
    /// Checks the whole request.
    pub fn validate(&self) -> Result<(), ErrorBody> {
        self.attachment.validate()?;
        validate_pod(&self.pod)
    }
}

impl CheckRequest {
    /// Checks the whole request.
    pub fn validate(&self) -> Result<(), ErrorBody> {
        self.attachment.validate()?;
        validate_pod(&self.pod)?;
        validate::pool_names("pools", &self.pools)
            .map_err(refuse(ErrorCode::InvalidNetworkConfig))?;
        if self.ips.len() > MAX_CHECK_IPS {
            return Err(refuse(ErrorCode::InvalidNetworkConfig)(format!(
                "ips: {} addresses; at most {MAX_CHECK_IPS}",
                self.ips.len()
            )));
        }
        Ok(())
    }
}

impl GcRequest {
    /// Checks the whole request.
    pub fn validate(&self) -> Result<(), ErrorBody> {
        let invalid = refuse(ErrorCode::InvalidNetworkConfig);
        validate::network_name("network", &self.network).map_err(&invalid)?;
        for (i, live) in self.valid_attachments.iter().enumerate() {
            validate::container_id(
                &format!("validAttachments[{i}].containerId"),
                &live.container_id,
            )
            .map_err(&invalid)?;
            validate::if_name(&format!("validAttachments[{i}].ifName"), &live.if_name)
                .map_err(&invalid)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;
    use serde_json::json;

    /// Serializes, checks the JSON shape, and deserializes back to the same value.
    fn round_trip<T>(value: &T, expected: serde_json::Value)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let json = serde_json::to_value(value).unwrap();
        assert_eq!(json, expected);
        let back: T = serde_json::from_value(json).unwrap();
        assert_eq!(&back, value);
    }

    fn attachment() -> Attachment {
        Attachment {
            network: "pods".into(),
            container_id: "c0ffee".into(),
            if_name: "eth0".into(),
        }
    }

    #[test]
    fn add_request_round_trips_with_camel_case_fields() {
        let request = AddRequest {
            attachment: attachment(),
            pod: Some(PodRef {
                namespace: "default".into(),
                name: "web-0".into(),
                uid: Some("0b7d4c9e-7f1a-4c2b-9d55-0f9e1c2d3a4b".into()),
                infra_container_id: None,
            }),
            pools: vec!["v4".into(), "v6".into()],
            requested_ips: vec!["10.0.0.9".parse().unwrap()],
            netns: Some("/var/run/netns/x".into()),
        };
        round_trip(
            &request,
            json!({
                "attachment": {"network": "pods", "containerId": "c0ffee", "ifName": "eth0"},
                "pod": {"namespace": "default", "name": "web-0",
                        "uid": "0b7d4c9e-7f1a-4c2b-9d55-0f9e1c2d3a4b"},
                "pools": ["v4", "v6"],
                "requestedIps": ["10.0.0.9"],
                "netns": "/var/run/netns/x",
            }),
        );
    }

    #[test]
    fn add_request_leaves_out_empty_optional_fields() {
        let request = AddRequest {
            attachment: attachment(),
            pod: None,
            pools: vec![],
            requested_ips: vec![],
            netns: None,
        };
        round_trip(
            &request,
            json!({"attachment": {"network": "pods", "containerId": "c0ffee", "ifName": "eth0"}}),
        );
    }

    #[test]
    fn add_response_round_trips_addresses_in_cidr_form() {
        let response = AddResponse {
            ips: vec![
                AllocatedIp {
                    address: "10.244.1.7/16".parse().unwrap(),
                    gateway: Some("10.244.0.1".parse().unwrap()),
                    pool: "v4".into(),
                },
                AllocatedIp {
                    address: "fd00::7/64".parse().unwrap(),
                    gateway: None,
                    pool: "v6".into(),
                },
            ],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: None,
            }],
            dns: Dns {
                nameservers: vec!["10.96.0.10".parse().unwrap()],
                domain: None,
                search: vec!["svc.cluster.local".into()],
                options: vec![],
            },
        };
        round_trip(
            &response,
            json!({
                "ips": [
                    {"address": "10.244.1.7/16", "gateway": "10.244.0.1", "pool": "v4"},
                    {"address": "fd00::7/64", "pool": "v6"},
                ],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
            }),
        );
    }

    #[test]
    fn add_response_rejects_an_address_without_prefix_length() {
        let bad = json!({"ips": [{"address": "10.0.0.1", "pool": "v4"}]});
        assert!(serde_json::from_value::<AddResponse>(bad).is_err());
    }

    #[test]
    fn del_check_gc_round_trip() {
        round_trip(
            &DelRequest {
                attachment: attachment(),
                pod: None,
            },
            json!({"attachment": {"network": "pods", "containerId": "c0ffee", "ifName": "eth0"}}),
        );
        round_trip(
            &DelResponse {
                released: vec!["10.0.0.9".parse().unwrap()],
            },
            json!({"released": ["10.0.0.9"]}),
        );
        round_trip(
            &CheckRequest {
                attachment: attachment(),
                pod: None,
                pools: vec!["v4".into()],
                ips: vec!["fd00::7".parse().unwrap()],
            },
            json!({
                "attachment": {"network": "pods", "containerId": "c0ffee", "ifName": "eth0"},
                "pools": ["v4"],
                "ips": ["fd00::7"],
            }),
        );
        round_trip(
            &CheckResponse {
                verified: vec!["fd00::7".parse().unwrap()],
            },
            json!({"verified": ["fd00::7"]}),
        );
        round_trip(
            &GcRequest {
                network: "pods".into(),
                valid_attachments: vec![LiveAttachment {
                    container_id: "c0ffee".into(),
                    if_name: "eth0".into(),
                }],
            },
            json!({"network": "pods", "validAttachments": [{"containerId": "c0ffee", "ifName": "eth0"}]}),
        );
        round_trip(
            &GcResponse {
                released: vec![attachment()],
            },
            json!({"released": [{"network": "pods", "containerId": "c0ffee", "ifName": "eth0"}]}),
        );
        round_trip(&StatusResponse {}, json!({}));
    }

    #[test]
    fn responses_accept_an_empty_object_from_a_terser_agent() {
        assert_eq!(
            serde_json::from_str::<DelResponse>("{}").unwrap(),
            DelResponse::default()
        );
        assert_eq!(
            serde_json::from_str::<GcResponse>("{}").unwrap(),
            GcResponse::default()
        );
        assert_eq!(
            serde_json::from_str::<CheckResponse>("{}").unwrap(),
            CheckResponse::default()
        );
    }

    #[test]
    fn error_body_round_trips_and_omits_absent_details() {
        round_trip(
            &ErrorBody {
                code: 100,
                msg: "pool v4 is exhausted".into(),
                details: Some("all 254 addresses are in use".into()),
            },
            json!({"code": 100, "msg": "pool v4 is exhausted", "details": "all 254 addresses are in use"}),
        );
        round_trip(
            &ErrorBody {
                code: 11,
                msg: "API unreachable".into(),
                details: None,
            },
            json!({"code": 11, "msg": "API unreachable"}),
        );
    }

    #[test]
    fn requests_are_validated_field_by_field() {
        let good = AddRequest {
            attachment: attachment(),
            pod: Some(PodRef {
                namespace: "default".into(),
                name: "web-0".into(),
                uid: Some("0b7d4c9e-7f1a-4c2b-9d55-0f9e1c2d3a4b".into()),
                infra_container_id: Some("c0ffee".into()),
            }),
            pools: vec!["v4".into(), "v6".into()],
            requested_ips: vec!["10.0.0.9".parse().unwrap(), "fd00::9".parse().unwrap()],
            netns: Some("/var/run/netns/x".into()),
        };
        assert_eq!(good.validate(), Ok(()));

        let refused = |request: AddRequest, code: u32, prefix: &str| {
            let error = request.validate().unwrap_err();
            assert_eq!(error.code, code, "{}", error.msg);
            assert!(error.msg.starts_with(prefix), "{}", error.msg);
        };
        let mut bad = good.clone();
        bad.attachment.if_name = "eth0:1".into();
        refused(bad, 4, "attachment.ifName: ");
        let mut bad = good.clone();
        bad.attachment.container_id = "../x".into();
        refused(bad, 4, "attachment.containerId: ");
        let mut bad = good.clone();
        bad.attachment.network = "".into();
        refused(bad, 7, "attachment.network: ");
        let mut bad = good.clone();
        bad.pod.as_mut().unwrap().namespace = "Default".into();
        refused(bad, 4, "pod.namespace: ");
        let mut bad = good.clone();
        bad.pools = vec!["v4".into(), "v4".into()];
        refused(bad, 7, "pools: ");
        let mut bad = good.clone();
        bad.requested_ips = vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        refused(bad, 7, "requestedIps: ");
        let mut bad = good;
        bad.netns = Some("n".repeat(5000));
        refused(bad, 4, "netns: ");

        let gc = GcRequest {
            network: "pods".into(),
            valid_attachments: vec![LiveAttachment {
                container_id: "c0ffee".into(),
                if_name: "a/b".into(),
            }],
        };
        assert!(
            gc.validate()
                .unwrap_err()
                .msg
                .starts_with("validAttachments[0].ifName: ")
        );
        let del = DelRequest {
            attachment: attachment(),
            pod: None,
        };
        assert_eq!(del.validate(), Ok(()));
        let check = CheckRequest {
            attachment: attachment(),
            pod: None,
            pools: vec![],
            ips: vec!["10.0.0.1".parse().unwrap(); 65],
        };
        assert!(
            check
                .validate()
                .unwrap_err()
                .msg
                .starts_with("ips: 65 addresses")
        );
    }

    #[test]
    fn status_query_round_trips_through_its_path() {
        let query = StatusQuery::new("pods", &["v4".into(), "v6".into()]);
        let path = query.to_path();
        assert_eq!(path, "/v1/status?network=pods&pools=v4,v6");
        let (_, qs) = path.split_once('?').unwrap();
        let parsed = StatusQuery::from_query(qs);
        assert_eq!(parsed, query);
        assert_eq!(parsed.pool_names(), vec!["v4", "v6"]);
    }

    #[test]
    fn status_query_without_pools_has_no_pools_parameter() {
        let query = StatusQuery::new("pods", &[]);
        assert_eq!(query.to_path(), "/v1/status?network=pods");
        assert!(query.pool_names().is_empty());
        assert_eq!(StatusQuery::default().to_path(), STATUS_PATH);
        assert_eq!(
            StatusQuery::from_query("later=1&network=n"),
            StatusQuery {
                network: Some("n".into()),
                pools: None
            }
        );
    }

    #[test]
    fn agent_error_bodies_pass_through_unchanged_even_with_unknown_codes() {
        let body = ErrorBody {
            code: 142,
            msg: "something newer".into(),
            details: Some("d".into()),
        };
        let error = CniError::from(body.clone());
        assert_eq!(error.code, 142);
        assert_eq!(error.known_code(), None);
        assert_eq!(ErrorBody::from(error), body);
    }
}
