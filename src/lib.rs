//! ipledger: IP address management for Kubernetes.
#![forbid(unsafe_code)]

pub mod agent;
pub mod api;
#[cfg(feature = "emulator")]
pub mod bench;
pub mod cluster;
pub mod controller;
pub mod http;
pub mod ledger;
pub mod metrics;
#[cfg(feature = "emulator")]
pub mod sandbox;
