//! The errors of the allocation core: what is wrong with a pool, a ledger record or a
//! request, in words that name the field and the problem.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use jiff::Timestamp;
use thiserror::Error;

use crate::Attachment;

/// One field that is wrong, with the problem in words: `spec.gateway: ... is outside ...`.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{field}: {problem}")]
pub struct FieldError {
    /// Path of the field in the object, such as `spec.exclude[2]`.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl FieldError {
    /// A field error for `field` saying `problem`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// Every problem found in one pool's spec; a pool with any of them is not used.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("IPPool {pool} is invalid: {}", Joined(.errors))]
pub struct PoolError {
    /// Name of the pool.
    pub pool: String,
    /// The problems, in the order of the spec's fields.
    pub errors: Vec<FieldError>,
}

/// Every problem found in one IPBlock's ledger record.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("IPBlock {block} is invalid: {}", Joined(.errors))]
pub struct BlockError {
    /// The block's CIDR.
    pub block: IpNet,
    /// The problems, in the order of the record's fields.
    pub errors: Vec<FieldError>,
}

/// Why an address was not allocated.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum AllocError {
    /// The pool takes no new allocations (`spec.disabled`).
    #[error("IPPool {pool} is disabled: it takes no new allocations")]
    PoolDisabled {
        /// Name of the pool.
        pool: String,
    },
    /// The pool is being deleted: it takes no new allocations, and goes once its
    /// last address is released.
    #[error("IPPool {pool} is being deleted: it takes no new allocations")]
    PoolDeleting {
        /// Name of the pool.
        pool: String,
    },
    /// The block is not a block of the pool it was used with.
    #[error("block {block} is not a block of IPPool {pool}")]
    WrongPool {
        /// The block's CIDR.
        block: IpNet,
        /// Name of the pool.
        pool: String,
    },
    /// Every allocatable address of the block is held or cooling down.
    #[error(
        "block {block} is full: {in_use} of its {capacity} addresses are in use, {cooling} more are cooling down"
    )]
    BlockFull {
        /// The block's CIDR.
        block: IpNet,
        /// Allocatable addresses of the block.
        capacity: u128,
        /// Addresses held.
        in_use: u128,
        /// Free addresses not yet reusable.
        cooling: u128,
    },
    /// Every allocatable address of the pool is in use or cooling down after release.
    #[error("IPPool {pool} is exhausted: {}", exhaustion(*in_use, *cooling, *capacity))]
    PoolExhausted {
        /// Name of the pool.
        pool: String,
        /// Allocatable addresses of the pool.
        capacity: u128,
        /// Addresses held.
        in_use: u128,
        /// Released addresses not handed out again before their cooldown ends.
        cooling: u128,
    },
    /// The requested address is written as an IPv4-mapped IPv6 address.
    #[error("requested address {address} is an IPv4-mapped IPv6 address; request {v4} instead")]
    Ipv4Mapped {
        /// The address as requested.
        address: IpAddr,
        /// The IPv4 address it maps.
        v4: IpAddr,
    },
    /// The requested address is not in the pool's CIDR (or of the other family).
    #[error("requested address {address} is outside IPPool {pool} ({cidr})")]
    OutsidePool {
        /// The requested address.
        address: IpAddr,
        /// Name of the pool.
        pool: String,
        /// The pool's CIDR.
        cidr: IpNet,
    },
    /// The requested address is in the pool but not in this block.
    #[error("requested address {address} is outside block {block}")]
    OutsideBlock {
        /// The requested address.
        address: IpAddr,
        /// The block's CIDR.
        block: IpNet,
    },
    /// The requested address is excluded by the pool's `spec.exclude`.
    #[error("requested address {address} is excluded from IPPool {pool}")]
    Excluded {
        /// The requested address.
        address: IpAddr,
        /// Name of the pool.
        pool: String,
    },
    /// The requested address is the pool's gateway.
    #[error("requested address {address} is the gateway of IPPool {pool}")]
    Gateway {
        /// The requested address.
        address: IpAddr,
        /// Name of the pool.
        pool: String,
    },
    /// The requested address is the network address of an IPv4 pool.
    #[error("requested address {address} is the network address of {cidr}")]
    NetworkAddress {
        /// The requested address.
        address: IpAddr,
        /// The pool's CIDR.
        cidr: IpNet,
    },
    /// The requested address is the broadcast address of an IPv4 pool.
    #[error("requested address {address} is the broadcast address of {cidr}")]
    BroadcastAddress {
        /// The requested address.
        address: IpAddr,
        /// The pool's CIDR.
        cidr: IpNet,
    },
    /// The requested address is held by another attachment.
    #[error("requested address {address} is taken by {holder}")]
    Taken {
        /// The requested address.
        address: IpAddr,
        /// The attachment holding it.
        holder: Attachment,
    },
    /// The requested address was released recently and is not reusable yet.
    #[error("requested address {address} was released recently and cools down until {until}")]
    CoolingDown {
        /// The requested address.
        address: IpAddr,
        /// When it becomes reusable.
        until: Timestamp,
    },
    /// The attachment already holds another address of this block.
    #[error("{attachment} already holds {held}, not the requested {requested}")]
    HoldsOther {
        /// The requesting attachment.
        attachment: Attachment,
        /// The address it holds.
        held: IpAddr,
        /// The address it asked for.
        requested: IpAddr,
    },
    /// A field of the request is not acceptable.
    #[error(transparent)]
    Invalid(#[from] FieldError),
}

/// Formats field errors separated by `; `.
struct Joined<'a>(&'a [FieldError]);

impl fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// How an exhausted pool's addresses are spent, for the error message.
fn exhaustion(in_use: u128, cooling: u128, capacity: u128) -> String {
    if cooling == 0 {
        format!("all {in_use} of its {capacity} addresses are in use")
    } else {
        format!(
            "{in_use} of its {capacity} addresses are in use and {cooling} cool down after release (spec.reuseCooldownSeconds)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_error_lists_every_field() {
        let error = PoolError {
            pool: "blue".into(),
            errors: vec![
                FieldError::new("spec.cidr", "is not a CIDR"),
                FieldError::new(
                    "spec.exclude[2]",
                    "\"10.0.0.300\" is not an IP address, CIDR or range",
                ),
            ],
        };
        assert_eq!(
            error.to_string(),
            "IPPool blue is invalid: spec.cidr: is not a CIDR; spec.exclude[2]: \"10.0.0.300\" is not an IP address, CIDR or range"
        );
    }

    #[test]
    fn exhaustion_names_pool_capacity_and_use() {
        let error = AllocError::PoolExhausted {
            pool: "blue".into(),
            capacity: 254,
            in_use: 254,
            cooling: 0,
        };
        assert_eq!(
            error.to_string(),
            "IPPool blue is exhausted: all 254 of its 254 addresses are in use"
        );
    }
}
