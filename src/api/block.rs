//! `IPBlock`: the ledger. One object per claimed block of a pool; written only by ipledger.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A block of a pool, affine to one node, with the record of every address allocated
/// from it.
///
/// Every change is a replace carrying the `metadata.resourceVersion` that was read: the
/// API server's compare-and-swap is what keeps two nodes from handing out one address.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ipledger.io",
    version = "v1alpha1",
    kind = "IPBlock",
    plural = "ipblocks",
    doc = "An IPBlock is one block of an IPPool, affine to a node, holding the record of every address allocated from it. Written only by ipledger.",
    shortname = "ipb",
    category = "ipledger",
    status = "IPBlockStatus",
    printcolumn = r#"{"name":"Pool","type":"string","jsonPath":".spec.pool"}"#,
    printcolumn = r#"{"name":"CIDR","type":"string","jsonPath":".spec.cidr"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.node"}"#,
    printcolumn = r#"{"name":"Allocated","type":"integer","jsonPath":".status.allocated"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IPBlockSpec {
    /// Name of the IPPool this block is cut from.
    pub pool: String,
    /// The block's range; inside the pool's `cidr`, with the pool's `blockSize`.
    #[schemars(with = "String", length(max = 43))]
    pub cidr: IpNet,
    /// The node this block is affine to: only that node's agent allocates from it,
    /// except when borrowing from a pool without `strictAffinity`.
    pub node: String,
    /// The last address handed out; the next search starts after it (round-robin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>", length(max = 45))]
    pub last_allocated: Option<IpAddr>,
    /// Every address currently held, with the attachment that holds it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub allocations: Vec<AllocationRecord>,
    /// Recently released addresses, not handed out again until the pool's
    /// `reuseCooldownSeconds` has passed since `releasedAt`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub released: Vec<ReleasedAddress>,
}

/// One allocated address and the attachment (network, containerID, ifName) holding it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllocationRecord {
    /// The allocated address.
    #[schemars(with = "String", length(max = 45))]
    pub address: IpAddr,
    /// Name of the CNI network (`name` in the network configuration).
    #[schemars(length(max = 253))]
    pub network: String,
    /// The container runtime's ID of the sandbox (`CNI_CONTAINERID`).
    #[serde(rename = "containerID")]
    #[schemars(length(max = 128))]
    pub container_id: String,
    /// The interface inside the container (`CNI_IFNAME`).
    #[schemars(length(max = 15))]
    pub if_name: String,
    /// The pod, when the runtime named it in `CNI_ARGS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    /// The node whose pod holds the address, when it is not the block's node: an address
    /// borrowed from this block by a node that had no room of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub node: Option<String>,
    /// When the address was allocated.
    pub allocated_at: Time,
}

/// The pod an allocation belongs to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct PodRef {
    /// Namespace of the pod.
    #[schemars(length(max = 63))]
    pub namespace: String,
    /// Name of the pod.
    #[schemars(length(max = 253))]
    pub name: String,
    /// UID of the pod; tells a pod from a later one of the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 36))]
    pub uid: Option<String>,
}

/// An address released recently, still cooling down before reuse.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleasedAddress {
    /// The released address.
    #[schemars(with = "String", length(max = 45))]
    pub address: IpAddr,
    /// When it was released.
    pub released_at: Time,
}

/// What ipledger observes of a block; written by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IPBlockStatus {
    /// Number of allocated addresses, as of the controller's last look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i32>")]
    pub allocated: Option<u32>,
}
