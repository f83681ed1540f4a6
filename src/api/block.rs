//! `IPBlock`: the ledger. One object per claimed block of a pool; written only by ipledger.

use std::net::IpAddr;

use ipledger_core::{self as core, Block, BlockError, BlockRecord, ReleasedRecord};
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
    printcolumn = r#"{"name":"Pool","type":"string","jsonPath":".spec.pool"}"#,
    printcolumn = r#"{"name":"CIDR","type":"string","jsonPath":".spec.cidr"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.node"}"#,
    printcolumn = r#"{"name":"Allocated","type":"string","jsonPath":".metadata.annotations.ipledger\\.io/allocated"}"#,
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

impl From<&IPBlockSpec> for BlockRecord {
    fn from(spec: &IPBlockSpec) -> BlockRecord {
        BlockRecord {
            pool: spec.pool.clone(),
            cidr: spec.cidr,
            node: spec.node.clone(),
            last_allocated: spec.last_allocated,
            allocations: spec
                .allocations
                .iter()
                .map(|a| core::AllocationRecord {
                    address: a.address,
                    network: a.network.clone(),
                    container_id: a.container_id.clone(),
                    if_name: a.if_name.clone(),
                    pod: a.pod.clone().map(Into::into),
                    node: a.node.clone(),
                    allocated_at: a.allocated_at.0,
                })
                .collect(),
            released: spec
                .released
                .iter()
                .map(|r| ReleasedRecord {
                    address: r.address,
                    released_at: r.released_at.0,
                })
                .collect(),
        }
    }
}

impl From<BlockRecord> for IPBlockSpec {
    fn from(record: BlockRecord) -> IPBlockSpec {
        IPBlockSpec {
            pool: record.pool,
            cidr: record.cidr,
            node: record.node,
            last_allocated: record.last_allocated,
            allocations: record
                .allocations
                .into_iter()
                .map(|a| AllocationRecord {
                    address: a.address,
                    network: a.network,
                    container_id: a.container_id,
                    if_name: a.if_name,
                    pod: a.pod.map(Into::into),
                    node: a.node,
                    allocated_at: Time(a.allocated_at),
                })
                .collect(),
            released: record
                .released
                .into_iter()
                .map(|r| ReleasedAddress {
                    address: r.address,
                    released_at: Time(r.released_at),
                })
                .collect(),
        }
    }
}

/// Reads a ledger record into the core's block; the error lists every inconsistent field.
impl TryFrom<&IPBlockSpec> for Block {
    type Error = BlockError;

    fn try_from(spec: &IPBlockSpec) -> Result<Block, BlockError> {
        Block::from_record(&spec.into())
    }
}

/// The ledger record of `block`, allocations and releases in address order.
impl From<&Block> for IPBlockSpec {
    fn from(block: &Block) -> IPBlockSpec {
        block.to_record().into()
    }
}

impl From<PodRef> for core::PodRef {
    fn from(pod: PodRef) -> core::PodRef {
        core::PodRef {
            namespace: pod.namespace,
            name: pod.name,
            uid: pod.uid,
        }
    }
}

impl From<core::PodRef> for PodRef {
    fn from(pod: core::PodRef) -> PodRef {
        PodRef {
            namespace: pod.namespace,
            name: pod.name,
            uid: pod.uid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipledger_core::{
        Attachment, MAX_CONTAINER_ID, MAX_IF_NAME, MAX_NETWORK, MAX_POD_NAME, MAX_POD_NAMESPACE,
        MAX_POD_UID, Pool, PoolSpec,
    };
    use jiff::Timestamp;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn att(id: &str) -> Attachment {
        Attachment::new("net", id, "eth0").unwrap()
    }

    /// What the API server stores is what the core reads back: times at the ledger's
    /// whole seconds, pods, borrowers and releases included.
    #[test]
    fn a_block_survives_the_ledger_round_trip_through_json() {
        let spec = PoolSpec {
            cidr: "10.0.0.0/24".into(),
            block_size: Some(26),
            ..Default::default()
        };
        let pool = Pool::parse("p", &spec).unwrap();
        let mut block = Block::new(&pool, net("10.0.0.0/26"), "n1").unwrap();
        let half = at(0)
            .checked_add(jiff::SignedDuration::from_millis(500))
            .unwrap();
        let pod = core::PodRef {
            namespace: "ns".into(),
            name: "pod".into(),
            uid: Some("u-1".into()),
        };
        block.allocate(&pool, &att("a"), Some(&pod), half).unwrap();
        block.allocate(&pool, &att("b"), None, half).unwrap();
        block.release(&att("b"), half);
        let json = serde_json::to_string(&IPBlockSpec::from(&block)).unwrap();
        let back: IPBlockSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(Block::try_from(&back).unwrap(), block);
        assert_eq!(
            back.allocations[0].pod.as_ref().unwrap().uid.as_deref(),
            Some("u-1")
        );
        assert_eq!(back.released.len(), 1);
    }

    /// The API server refuses objects over about 1.5 MiB; the ledger's limits (1024
    /// addresses per block, schema maxLength on every string) keep a completely full
    /// block under 1 MiB of JSON. Released addresses never coexist with allocations
    /// of the same address and are far smaller, so a full block is the largest record.
    #[test]
    fn a_full_block_at_every_max_length_serializes_under_one_mebibyte() {
        for (cidr, block_cidr, prefix) in [
            ("10.0.0.0/16", "10.0.4.0/22", 22),
            (
                "fd12:3456:789a:bcde:f012:3456:789a:0/112",
                "fd12:3456:789a:bcde:f012:3456:789a:fc00/118",
                118,
            ),
        ] {
            let spec = PoolSpec {
                cidr: cidr.into(),
                block_size: Some(prefix),
                ..Default::default()
            };
            let pool = Pool::parse(&"p".repeat(253), &spec).unwrap();
            let mut block = Block::new(&pool, net(block_cidr), &"n".repeat(253)).unwrap();
            let pod = core::PodRef {
                namespace: "s".repeat(MAX_POD_NAMESPACE),
                name: "p".repeat(MAX_POD_NAME),
                uid: Some("u".repeat(MAX_POD_UID)),
            };
            for i in 0..1024 {
                let attachment = Attachment::new(
                    "w".repeat(MAX_NETWORK),
                    format!("{i:0>width$}", width = MAX_CONTAINER_ID),
                    format!("{i:e>width$}", width = MAX_IF_NAME),
                )
                .unwrap();
                block
                    .allocate(&pool, &attachment, Some(&pod), at(i))
                    .unwrap();
            }
            assert!(
                block
                    .allocate(&pool, &att("one-more"), None, at(0))
                    .is_err()
            );
            let spec = IPBlockSpec::from(&block);
            assert_eq!(spec.allocations.len(), 1024);
            let json = serde_json::to_vec(&spec).unwrap();
            println!(
                "full /{prefix} block at max lengths: {} bytes of JSON",
                json.len()
            );
            assert!(json.len() < 1024 * 1024, "{} bytes", json.len());
        }
    }
}
