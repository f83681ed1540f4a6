//! The core's inputs and outputs as plain data: what an IPPool's spec says and what an
//! IPBlock's ledger record holds, without the API's types.
//!
//! The shell converts the custom resources into these (and a [`BlockRecord`] back into
//! an IPBlock spec); the core never sees a Kubernetes type, so its tests need none.

use std::net::IpAddr;

use ipnet::IpNet;
use jiff::Timestamp;

/// An IPPool's spec as the operator wrote it: strings unparsed, so that
/// [`Pool::parse`](crate::Pool::parse) can name every malformed field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolSpec {
    /// `cidr`.
    pub cidr: String,
    /// `blockSize`.
    pub block_size: Option<u8>,
    /// `exclude`: CIDRs, single addresses or `a-b` ranges.
    pub exclude: Vec<String>,
    /// `gateway`.
    pub gateway: Option<String>,
    /// `routes`.
    pub routes: Vec<RouteSpec>,
    /// `dns.nameservers`.
    pub nameservers: Vec<String>,
    /// `reuseCooldownSeconds`.
    pub reuse_cooldown_seconds: Option<u32>,
    /// `disabled`.
    pub disabled: bool,
    /// `strictAffinity`.
    pub strict_affinity: bool,
}

/// One of a pool's `routes`, unparsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteSpec {
    /// `dst`.
    pub dst: String,
    /// `gw`.
    pub gw: Option<String>,
}

/// The ledger record of one block, as an IPBlock's spec stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRecord {
    /// Name of the pool the block is cut from.
    pub pool: String,
    /// The block's range.
    pub cidr: IpNet,
    /// The node the block is affine to.
    pub node: String,
    /// The last address handed out (round-robin).
    pub last_allocated: Option<IpAddr>,
    /// Every address held.
    pub allocations: Vec<AllocationRecord>,
    /// Recently released addresses, cooling down.
    pub released: Vec<ReleasedRecord>,
}

/// One allocation as the ledger stores it, strings unvalidated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocationRecord {
    /// The allocated address.
    pub address: IpAddr,
    /// CNI network name.
    pub network: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub if_name: String,
    /// The pod, when the runtime named it.
    pub pod: Option<PodRef>,
    /// The borrowing node, when it is not the block's node.
    pub node: Option<String>,
    /// When it was allocated.
    pub allocated_at: Timestamp,
}

/// An address released recently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleasedRecord {
    /// The released address.
    pub address: IpAddr,
    /// When it was released.
    pub released_at: Timestamp,
}

/// The pod an allocation belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PodRef {
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub name: String,
    /// UID of the pod; tells a pod from a later one of the same name.
    pub uid: Option<String>,
}
