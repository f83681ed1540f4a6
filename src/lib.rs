//! ipledger: IP address management for Kubernetes.
#![forbid(unsafe_code)]

/// The node agent; so far the protocol its socket speaks to the CNI plugin.
pub mod agent;
pub mod api;
pub mod cni;
pub mod ipam;
pub mod ledger;
pub mod metrics;
