//! ipledger: IP address management for Kubernetes.
#![forbid(unsafe_code)]

pub mod api;
pub mod emulator;
