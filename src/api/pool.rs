//! `IPPool`: what an operator writes.

use ipledger_core::{Pool, PoolError, PoolSpec, RouteSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema, ResourceExt};
use serde::{Deserialize, Serialize};

/// A range of addresses that ipledger hands out to pods, block by block.
///
/// Addresses, CIDRs and ranges are kept as strings in the API so that a malformed
/// pool still deserializes: the pool is then reported `Ready=False` with an error
/// naming the field, instead of breaking every watcher of pools.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "ipledger.io",
    version = "v1alpha1",
    kind = "IPPool",
    plural = "ippools",
    doc = "An IPPool is a range of addresses that ipledger hands out to pods, in blocks claimed by nodes.",
    shortname = "ipp",
    category = "ipledger",
    status = "IPPoolStatus",
    printcolumn = r#"{"name":"CIDR","type":"string","jsonPath":".spec.cidr"}"#,
    printcolumn = r#"{"name":"Allocated","type":"string","jsonPath":".status.allocated"}"#,
    printcolumn = r#"{"name":"Free","type":"string","jsonPath":".status.free"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("(has(self.blockSize) ? self.blockSize : 0) == (has(oldSelf.blockSize) ? oldSelf.blockSize : 0)").message("blockSize is immutable").field_path(".blockSize"))]
#[x_kube(validation = Rule::new("!has(self.blockSize) || !isCIDR(self.cidr) || (cidr(self.cidr).ip().family() == 4 ? self.blockSize >= 22 && self.blockSize <= 32 : self.blockSize >= 118 && self.blockSize <= 128)").message("blockSize must be between 22 and 32 for an IPv4 pool, between 118 and 128 for an IPv6 pool").field_path(".blockSize"))]
#[x_kube(validation = Rule::new("!has(self.blockSize) || !isCIDR(self.cidr) || self.blockSize >= cidr(self.cidr).prefixLength()").message("blockSize must not be shorter than the prefix length of cidr").field_path(".blockSize"))]
#[x_kube(validation = Rule::new("!has(self.gateway) || !isCIDR(self.cidr) || (isIP(self.gateway) && cidr(self.cidr).containsIP(self.gateway))").message("gateway must be an IP address inside cidr").field_path(".gateway"))]
#[serde(rename_all = "camelCase")]
pub struct IPPoolSpec {
    /// The address range of the pool in CIDR notation, for example 10.244.0.0/16 or
    /// fd00:10:244::/48. The address must be the network address. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("cidr is immutable"))]
    #[x_kube(validation = Rule::new("isCIDR(self) && cidr(self) == cidr(self).masked()").message("cidr must be a network address in CIDR notation, such as 10.244.0.0/16"))]
    #[schemars(length(max = 43))]
    pub cidr: String,

    /// Prefix length of the blocks the pool is cut into; each node claims whole blocks.
    /// Defaults to 26 for IPv4 (64 addresses) and 122 for IPv6. At most 1024 addresses
    /// per block (22 for IPv4, 118 for IPv6) so that a full block stays a small object.
    /// Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i32>", range(min = 0, max = 128))]
    pub block_size: Option<u8>,

    /// Addresses never handed out: CIDRs (10.0.0.0/28), single addresses (10.0.0.7)
    /// or inclusive ranges (10.0.0.10-10.0.0.20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024), inner(length(max = 90)))]
    pub exclude: Vec<String>,

    /// The gateway returned to pods; never allocated to a pod. Must lie inside `cidr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 45))]
    pub gateway: Option<String>,

    /// Routes returned to pods in the CNI result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub routes: Vec<Route>,

    /// DNS settings returned to pods in the CNI result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,

    /// Nodes this pool serves when chosen as a default pool; all nodes when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,

    /// Namespaces this pool serves when chosen as a default pool; all namespaces when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Use this pool when neither the CNI configuration nor an annotation names a pool.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,

    /// A released address is not handed out again for this many seconds, so that
    /// stale connections and caches aimed at the old pod do not reach a new one.
    /// Defaults to 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i32>", range(min = 0, max = 86400))]
    pub reuse_cooldown_seconds: Option<u32>,

    /// No new allocations from this pool; existing ones stay.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,

    /// Choose addresses automatically only from blocks affine to the allocating node.
    /// When false (the default) a node whose blocks are full and that can claim no free
    /// block may borrow a free address from another node's block (the record names the
    /// borrowing node); when true it may not, and the pool is exhausted for that node.
    /// Requested addresses (CNI `ips`, `IP=`, the `ipledger.io/ips` annotation) are
    /// honoured in any node's block either way: a pod with a fixed address may move
    /// between nodes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strict_affinity: bool,
}

/// A route handed to pods: `dst` in CIDR notation, optional next hop `gw`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub struct Route {
    /// Destination in CIDR notation, for example 0.0.0.0/0.
    #[schemars(length(max = 43))]
    pub dst: String,
    /// Next hop; the interface's gateway when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 45))]
    pub gw: Option<String>,
}

/// DNS settings in the shape of the CNI result's `dns` section.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub struct Dns {
    /// Name server addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// The local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// What ipledger observes of a pool; written by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IPPoolStatus {
    /// Addresses that can be allocated: the pool's size less exclusions, the gateway
    /// and IPv4 network/broadcast addresses. A decimal string, because an IPv6 pool
    /// holds more addresses than a 64-bit integer counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<String>,
    /// Addresses currently allocated, as a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated: Option<String>,
    /// `capacity` less `allocated`, as a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free: Option<String>,
    /// Number of blocks claimed by nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i64>")]
    pub blocks: Option<u64>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Exhausted` and `Overlapping`, as the Kubernetes API conventions describe.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// What the core validates of a pool: the fields that decide addresses, unparsed.
impl From<&IPPoolSpec> for PoolSpec {
    fn from(spec: &IPPoolSpec) -> PoolSpec {
        PoolSpec {
            cidr: spec.cidr.clone(),
            block_size: spec.block_size,
            exclude: spec.exclude.clone(),
            gateway: spec.gateway.clone(),
            routes: spec
                .routes
                .iter()
                .map(|r| RouteSpec {
                    dst: r.dst.clone(),
                    gw: r.gw.clone(),
                })
                .collect(),
            nameservers: spec
                .dns
                .as_ref()
                .map(|d| d.nameservers.clone())
                .unwrap_or_default(),
            reuse_cooldown_seconds: spec.reuse_cooldown_seconds,
            disabled: spec.disabled,
            strict_affinity: spec.strict_affinity,
        }
    }
}

/// Validates an IPPool into the core's pool; the error lists every bad field.
impl TryFrom<&IPPool> for Pool {
    type Error = PoolError;

    fn try_from(pool: &IPPool) -> Result<Pool, PoolError> {
        Pool::parse(&pool.name_any(), &PoolSpec::from(&pool.spec))
    }
}
