//! The node agent: serves the CNI plugin on a root-only unix socket and allocates from
//! blocks affine to its node.

pub mod cache;
pub mod config;
pub mod error;
pub mod install;
pub mod pool_choice;
pub mod protocol;
pub mod socket;
pub mod writer;
