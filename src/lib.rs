//! ipledger: IP address management for Kubernetes.
#![forbid(unsafe_code)]

pub mod agent;
pub mod api;
pub mod cni;
