//! The ADD result, in the layout of the config's CNI version.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use super::error::{CniError, ErrorCode};
use super::version::CniVersion;
use crate::protocol::{AddResponse, Dns, Route};

/// An IPAM result: no `interfaces`, and so no `ips[].interface` (the main plugin fills
/// those in).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IpamResult<'a> {
    cni_version: &'static str,
    ips: Vec<ResultIp>,
    #[serde(skip_serializing_if = "<[Route]>::is_empty")]
    routes: &'a [Route],
    #[serde(skip_serializing_if = "Dns::is_empty")]
    dns: &'a Dns,
}

#[derive(Serialize)]
struct ResultIp {
    /// "4" or "6"; only in 0.3.x and 0.4.0 results.
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    address: IpNet,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
}

/// Settings of the CNI config that replace what the agent returned.
#[derive(Clone, Copy, Debug, Default)]
pub struct Overrides<'a> {
    /// `ipam.routes`.
    pub routes: Option<&'a [Route]>,
    /// `ipam.dns`.
    pub dns: Option<&'a Dns>,
}

/// The ADD result JSON for `version`.
///
/// An answer without addresses is refused (code 109): the spec forbids an empty `ips`
/// and bridge rejects it, so it is better reported as the agent's fault here.
pub fn add_result(
    version: CniVersion,
    response: &AddResponse,
    overrides: Overrides<'_>,
) -> Result<String, CniError> {
    let protocol_error = |msg: String| CniError::new(ErrorCode::AgentProtocol, msg);
    if response.ips.is_empty() {
        return Err(protocol_error(
            "the agent answered ADD without any address".into(),
        ));
    }
    let ips = response
        .ips
        .iter()
        .map(|ip| {
            if let Some(gateway) = ip.gateway
                && gateway.is_ipv4() != ip.address.addr().is_ipv4()
            {
                return Err(protocol_error(format!(
                    "the agent answered ADD with gateway {gateway} for address {}, of another IP family",
                    ip.address
                )));
            }
            Ok(ResultIp {
                version: version.has_ip_version_field().then_some(match ip.address {
                    IpNet::V4(_) => "4",
                    IpNet::V6(_) => "6",
                }),
                address: ip.address,
                gateway: ip.gateway,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let result = IpamResult {
        cni_version: version.as_str(),
        ips,
        routes: overrides.routes.unwrap_or(&response.routes),
        dns: overrides.dns.unwrap_or(&response.dns),
    };
    serde_json::to_string(&result).map_err(|e| {
        CniError::new(
            ErrorCode::IoFailure,
            format!("stdout: cannot encode the result: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::AllocatedIp;
    use crate::version::SUPPORTED;
    use serde_json::{Value, json};

    fn dual_stack() -> AddResponse {
        AddResponse {
            ips: vec![
                AllocatedIp {
                    address: "10.244.1.7/24".parse().unwrap(),
                    gateway: Some("10.244.1.1".parse().unwrap()),
                    pool: "v4".into(),
                },
                AllocatedIp {
                    address: "fd00:10:244::7/64".parse().unwrap(),
                    gateway: Some("fd00:10:244::1".parse().unwrap()),
                    pool: "v6".into(),
                },
            ],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: None,
            }],
            dns: Dns {
                nameservers: vec!["10.96.0.10".parse().unwrap()],
                ..Dns::default()
            },
        }
    }

    fn render(version: CniVersion, response: &AddResponse, overrides: Overrides<'_>) -> Value {
        serde_json::from_str(&add_result(version, response, overrides).unwrap()).unwrap()
    }

    #[test]
    fn legacy_versions_tag_each_ip_with_its_family() {
        for version in [CniVersion::V0_3_0, CniVersion::V0_3_1, CniVersion::V0_4_0] {
            let json = render(version, &dual_stack(), Overrides::default());
            assert_eq!(
                json,
                json!({
                    "cniVersion": version.as_str(),
                    "ips": [
                        {"version": "4", "address": "10.244.1.7/24", "gateway": "10.244.1.1"},
                        {"version": "6", "address": "fd00:10:244::7/64", "gateway": "fd00:10:244::1"},
                    ],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dns": {"nameservers": ["10.96.0.10"]},
                })
            );
        }
    }

    #[test]
    fn current_versions_have_no_ip_version_field() {
        for version in [CniVersion::V1_0_0, CniVersion::V1_1_0] {
            let json = render(version, &dual_stack(), Overrides::default());
            assert_eq!(
                json,
                json!({
                    "cniVersion": version.as_str(),
                    "ips": [
                        {"address": "10.244.1.7/24", "gateway": "10.244.1.1"},
                        {"address": "fd00:10:244::7/64", "gateway": "fd00:10:244::1"},
                    ],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dns": {"nameservers": ["10.96.0.10"]},
                })
            );
        }
    }

    #[test]
    fn no_version_emits_interfaces_and_empty_parts_are_left_out() {
        let response = AddResponse {
            ips: vec![AllocatedIp {
                address: "10.0.0.2/24".parse().unwrap(),
                gateway: None,
                pool: "v4".into(),
            }],
            routes: vec![],
            dns: Dns::default(),
        };
        for version in SUPPORTED {
            let json = render(version, &response, Overrides::default());
            let object = json.as_object().unwrap();
            assert!(!object.contains_key("interfaces"));
            assert!(!object.contains_key("routes"));
            assert!(!object.contains_key("dns"));
            assert!(
                !json["ips"][0]
                    .as_object()
                    .unwrap()
                    .contains_key("interface")
            );
            assert!(!json["ips"][0].as_object().unwrap().contains_key("gateway"));
        }
    }

    #[test]
    fn config_routes_and_dns_replace_the_agents() {
        let routes = vec![Route {
            dst: "10.0.0.0/8".parse().unwrap(),
            gw: Some("10.244.1.1".parse().unwrap()),
        }];
        let dns = Dns {
            domain: Some("example.org".into()),
            ..Dns::default()
        };
        let json = render(
            CniVersion::V1_0_0,
            &dual_stack(),
            Overrides {
                routes: Some(&routes),
                dns: Some(&dns),
            },
        );
        assert_eq!(
            json["routes"],
            json!([{"dst": "10.0.0.0/8", "gw": "10.244.1.1"}])
        );
        assert_eq!(json["dns"], json!({"domain": "example.org"}));

        // An explicitly empty list removes the pool's routes.
        let json = render(
            CniVersion::V1_0_0,
            &dual_stack(),
            Overrides {
                routes: Some(&[]),
                dns: None,
            },
        );
        assert!(json.get("routes").is_none());
        assert_eq!(json["dns"], json!({"nameservers": ["10.96.0.10"]}));
    }

    #[test]
    fn an_answer_without_ips_or_with_a_foreign_gateway_is_refused() {
        let empty = AddResponse {
            ips: vec![],
            routes: vec![],
            dns: Dns::default(),
        };
        let error = add_result(CniVersion::V1_1_0, &empty, Overrides::default()).unwrap_err();
        assert_eq!(error.code, 109);
        let mut mixed = dual_stack();
        mixed.ips[0].gateway = Some("fd00::1".parse().unwrap());
        let error = add_result(CniVersion::V1_1_0, &mixed, Overrides::default()).unwrap_err();
        assert_eq!(error.code, 109);
        assert!(error.msg.contains("fd00::1"), "{}", error.msg);
    }
}
