//! The ledger store: the only code that writes IPBlocks.
//!
//! Every write is a compare-and-swap on `metadata.resourceVersion` through
//! [`cas::update`]; a block is claimed by creating it, so the API server decides
//! which node owns it.

pub mod blocks;
pub mod cas;

pub use cas::{CasError, Decision, RetryPolicy, Written};

/// Whether an API error is worth retrying later rather than a final answer: the server
/// could not be reached, timed out, was overloaded, or failed internally.
pub fn is_transient(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => matches!(status.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}
