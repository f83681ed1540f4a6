//! ipledger's allocation core: plain functions over plain data, no I/O, no async, no
//! clock (every `now` is passed in), and no Kubernetes types.
//!
//! The shell reads pools and blocks from the API, converts them into a [`PoolSpec`] and
//! [`BlockRecord`]s, lets [`Pool`] and [`Block`] decide, and writes the changed block
//! back with a compare-and-swap. Addresses are handled as integers, so nothing walks an address
//! space: cost and memory follow the number of blocks and allocations only.

#![forbid(unsafe_code)]

mod addr;
mod attachment;
mod block;
mod change;
mod claim;
mod error;
mod gc;
mod lease;
mod naming;
mod overlap;
mod pool;
mod record;
mod room;
mod status;

pub use attachment::{
    Attachment, MAX_CONTAINER_ID, MAX_IF_NAME, MAX_NETWORK, MAX_POD_NAME, MAX_POD_NAMESPACE,
    MAX_POD_UID, is_cni_identifier,
};
pub use block::{Allocation, Block};
pub use change::{Change, NeedsPool, Outcome};
pub use error::{AllocError, BlockError, FieldError, PoolError};
pub use gc::{
    BlockFacts, BlockFate, DeleteReason, PoolState, ReclaimRules, block_fates, leaked, pod_gone,
};
pub use lease::{LeaseRecord, LeaseStep, TimingError, check_timings, lease_step};
pub use naming::{block_name, is_dns1123_subdomain};
pub use overlap::{PoolAge, shadowed_by};
pub use pool::{
    BLOCK_V4, BLOCK_V6, DEFAULT_BLOCK_V4, DEFAULT_BLOCK_V6, DEFAULT_COOLDOWN_SECONDS,
    MAX_COOLDOWN_SECONDS, Pool, Route, overlaps,
};
pub use record::{AllocationRecord, BlockRecord, PodRef, PoolSpec, ReleasedRecord, RouteSpec};
pub use room::{BlockSummary, NextStep};
pub use status::{Alarms, ConditionReport, PoolEvent, PoolReport, PoolView, nearly_full};
