//! ipledger: IP address management for Kubernetes.
#![forbid(unsafe_code)]

pub mod agent;
pub mod api;
pub mod cni;
pub mod emulator;
pub mod ipam;
pub mod ledger;
pub mod metrics;
pub mod sandbox;
