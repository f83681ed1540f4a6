//! The ledger store: the only code that writes IPBlocks.
//!
//! Every write is a compare-and-swap on `metadata.resourceVersion` through
//! [`cas::update`]; a block is claimed by creating it, so the API server decides
//! which node owns it.

pub mod blocks;
pub mod cas;
pub mod reclaim;
pub mod writer;

pub use cas::{CasError, Decision, RetryPolicy, Written};
