//! The agent's answer when a request fails: a CNI error code, a message naming what is
//! wrong, and the HTTP status the socket API sends it with.

use axum::http::StatusCode;

use crate::agent::pool_choice::ChoiceError;
use crate::ledger::cas::refused_for_good;
use crate::ledger::writer::CommitError;
use ipledger_cni::ErrorCode;
use ipledger_cni::protocol::ErrorBody;
use ipledger_core::{AllocError, FieldError, PoolError};

/// Why the agent could not do what a request asked.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The request itself is malformed; the body says which field.
    #[error("{}", .0.msg)]
    BadRequest(ErrorBody),
    /// No pool could be chosen.
    #[error(transparent)]
    Choice(#[from] ChoiceError),
    /// A chosen pool's spec is invalid.
    #[error(transparent)]
    InvalidPool(#[from] PoolError),
    /// The allocation core refused.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// The pool has free addresses, but only in other nodes' blocks, and `strictAffinity`
    /// forbids borrowing them.
    #[error(
        "IPPool {pool} has no free block for node {node} and strictAffinity forbids borrowing: {in_use} of its {capacity} addresses are in use, the free ones in other nodes' blocks"
    )]
    NoBlockForNode {
        pool: String,
        node: String,
        in_use: u128,
        capacity: u128,
    },
    /// The pool overlaps an older pool, which a fresh list of the pools showed while
    /// claiming a block: only the older one allocates.
    #[error(
        "IPPool {pool} overlaps IPPool {older}, created before it: of overlapping pools only the first created allocates"
    )]
    Shadowed { pool: String, older: String },
    /// A requested address lies in no pool chosen for the attachment.
    #[error("requested address {address} is outside the pools chosen from {source_name} ({pools})")]
    RequestedOutsidePools {
        address: std::net::IpAddr,
        pools: String,
        source_name: String,
    },
    /// CHECK found an address of the previous result not held by the attachment.
    #[error("{0}")]
    Missing(String),
    /// GC could not release everything; the message lists what failed.
    #[error("{0}")]
    GcIncomplete(String),
    /// STATUS: the agent cannot allocate now.
    #[error("{0}")]
    CannotAllocate(String),
    /// The API server is unreachable, failing or too contended right now; try again.
    #[error("{0}")]
    Unavailable(String),
    /// The Kubernetes API refused a request for good (403 Forbidden, 422 Invalid, ...): the
    /// same request gets the same answer, so kubelet must not be told to try again.
    #[error(
        "the Kubernetes API refused {request}: {code} {reason}: {message}; retrying cannot help until this is fixed"
    )]
    ApiRefused {
        request: String,
        code: u16,
        reason: String,
        message: String,
    },
    /// The ledger holds a record ipledger cannot read.
    #[error("{0}")]
    Corrupt(String),
    /// A block was deleted while the agent was using it.
    #[error("{0}")]
    BlockGone(String),
}

impl From<CommitError> for AgentError {
    fn from(error: CommitError) -> Self {
        match error {
            CommitError::InvalidPool(e) => AgentError::InvalidPool(e),
            e @ CommitError::Corrupt { .. } => AgentError::Corrupt(e.to_string()),
            e @ CommitError::Gone { .. } => AgentError::BlockGone(e.to_string()),
            CommitError::ApiRefused {
                block,
                code,
                reason,
                message,
            } => AgentError::ApiRefused {
                request: format!("the write of IPBlock {block}"),
                code,
                reason,
                message,
            },
            e @ (CommitError::UnknownPool { .. }
            | CommitError::Api(_)
            | CommitError::Stopped { .. }
            | CommitError::Busy { .. }) => AgentError::Unavailable(e.to_string()),
        }
    }
}

impl From<FieldError> for AgentError {
    fn from(error: FieldError) -> Self {
        AgentError::BadRequest(ErrorBody {
            code: ErrorCode::InvalidNetworkConfig.as_u32(),
            msg: error.to_string(),
            details: None,
        })
    }
}

impl From<kube::Error> for AgentError {
    fn from(error: kube::Error) -> Self {
        match error {
            kube::Error::Api(status) if refused_for_good(status.code) => AgentError::ApiRefused {
                request: "a request".into(),
                code: status.code,
                reason: status.reason,
                message: status.message,
            },
            error => AgentError::Unavailable(format!("Kubernetes API request failed: {error}")),
        }
    }
}

impl AgentError {
    /// The CNI error code the plugin prints for this error.
    pub fn code(&self) -> u32 {
        let code =
            match self {
                AgentError::BadRequest(body) => return body.code,
                AgentError::Choice(ChoiceError::UnknownPool { .. }) => ErrorCode::UnknownPool,
                AgentError::Choice(ChoiceError::Disabled { .. }) => ErrorCode::PoolDisabled,
                AgentError::Choice(ChoiceError::Overlapping { .. })
                | AgentError::Shadowed { .. } => ErrorCode::PoolOverlapping,
                AgentError::Choice(ChoiceError::InvalidCidr { .. })
                | AgentError::InvalidPool(_) => ErrorCode::InvalidNetworkConfig,
                AgentError::Choice(ChoiceError::NoPool) => ErrorCode::NoPoolMatches,
                AgentError::Alloc(error) => match error {
                    AllocError::PoolExhausted { .. } | AllocError::BlockFull { .. } => {
                        ErrorCode::PoolExhausted
                    }
                    AllocError::PoolDisabled { .. } | AllocError::PoolDeleting { .. } => {
                        ErrorCode::PoolDisabled
                    }
                    AllocError::Taken { .. }
                    | AllocError::HoldsOther { .. }
                    | AllocError::CoolingDown { .. } => ErrorCode::RequestedAddressTaken,
                    AllocError::OutsidePool { .. }
                    | AllocError::OutsideBlock { .. }
                    | AllocError::Ipv4Mapped { .. } => ErrorCode::RequestedAddressOutsidePool,
                    AllocError::Excluded { .. }
                    | AllocError::Gateway { .. }
                    | AllocError::NetworkAddress { .. }
                    | AllocError::BroadcastAddress { .. } => ErrorCode::RequestedAddressExcluded,
                    AllocError::WrongPool { .. } => ErrorCode::TryAgainLater,
                    AllocError::Invalid(_) => ErrorCode::InvalidNetworkConfig,
                },
                AgentError::RequestedOutsidePools { .. } => ErrorCode::RequestedAddressOutsidePool,
                AgentError::NoBlockForNode { .. } => ErrorCode::PoolExhausted,
                AgentError::Missing(_) => ErrorCode::AllocationMissing,
                AgentError::GcIncomplete(_) => ErrorCode::GcIncomplete,
                AgentError::ApiRefused { .. } => ErrorCode::ApiRefused,
                AgentError::CannotAllocate(_) => ErrorCode::PluginNotAvailable,
                AgentError::Unavailable(_) | AgentError::Corrupt(_) | AgentError::BlockGone(_) => {
                    ErrorCode::TryAgainLater
                }
            };
        code.as_u32()
    }

    /// The HTTP status of the answer: 4xx when the request cannot succeed as it is, 503
    /// when a later try may.
    pub fn http_status(&self) -> StatusCode {
        match self {
            AgentError::Unavailable(_)
            | AgentError::Corrupt(_)
            | AgentError::BlockGone(_)
            | AgentError::CannotAllocate(_) => StatusCode::SERVICE_UNAVAILABLE,
            AgentError::Alloc(
                AllocError::PoolExhausted { .. } | AllocError::CoolingDown { .. },
            )
            | AgentError::NoBlockForNode { .. } => StatusCode::CONFLICT,
            AgentError::Alloc(AllocError::Taken { .. } | AllocError::HoldsOther { .. }) => {
                StatusCode::CONFLICT
            }
            AgentError::Missing(_) => StatusCode::NOT_FOUND,
            AgentError::GcIncomplete(_) => StatusCode::INTERNAL_SERVER_ERROR,
            // Includes ApiRefused: the same request gets the same answer.
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// The body the plugin prints as the CNI error.
    pub fn body(&self) -> ErrorBody {
        match self {
            AgentError::BadRequest(body) => body.clone(),
            _ => ErrorBody {
                code: self.code(),
                msg: self.to_string(),
                details: None,
            },
        }
    }

    /// A short, stable label for the failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            AgentError::BadRequest(_) => "bad_request",
            AgentError::Choice(_) => "pool_choice",
            AgentError::Shadowed { .. } => "overlapping",
            AgentError::InvalidPool(_) => "invalid_pool",
            AgentError::Alloc(AllocError::PoolExhausted { .. }) => "exhausted",
            AgentError::NoBlockForNode { .. } => "no_block_for_node",
            AgentError::Alloc(_) | AgentError::RequestedOutsidePools { .. } => "refused",
            AgentError::Missing(_) => "missing",
            AgentError::GcIncomplete(_) => "gc_incomplete",
            AgentError::CannotAllocate(_) => "cannot_allocate",
            AgentError::Unavailable(_) => "unavailable",
            AgentError::ApiRefused { .. } => "api_refused",
            AgentError::Corrupt(_) => "corrupt_ledger",
            AgentError::BlockGone(_) => "block_gone",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipledger_core::{Pool, PoolSpec};

    /// Invariant 9: a pool found invalid while a block writer decides is a permanent
    /// refusal (code 7), and so is a write the API server refuses for good (code 111); not
    /// "try again" (code 11) as a corrupt record is.
    #[test]
    fn commit_errors_keep_permanent_and_transient_apart() {
        let spec = PoolSpec {
            cidr: "10.0.0.1/24".into(),
            ..Default::default()
        };
        let invalid = Pool::parse("p", &spec).unwrap_err();
        let permanent = AgentError::from(CommitError::InvalidPool(invalid));
        assert_eq!(permanent.code(), ErrorCode::InvalidNetworkConfig.as_u32());
        assert!(permanent.to_string().contains("spec.cidr"), "{permanent}");

        for transient in [
            CommitError::UnknownPool { pool: "p".into() },
            CommitError::Gone { block: "b".into() },
            CommitError::Api("connection refused".into()),
            CommitError::Stopped { block: "b".into() },
            CommitError::Busy { block: "b".into() },
        ] {
            let error = AgentError::from(transient);
            assert_eq!(error.code(), ErrorCode::TryAgainLater.as_u32(), "{error}");
            assert_eq!(error.http_status(), StatusCode::SERVICE_UNAVAILABLE);
        }

        let refused = AgentError::from(CommitError::ApiRefused {
            block: "b".into(),
            code: 422,
            reason: "Invalid".into(),
            message: "IPBlock.ipledger.io \"b\" is invalid: spec.cidr: Invalid value".into(),
        });
        assert_eq!(refused.code(), ErrorCode::ApiRefused.as_u32(), "{refused}");
        assert_eq!(refused.http_status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(refused.reason(), "api_refused");
        for part in ["IPBlock b", "422", "Invalid", "spec.cidr: Invalid value"] {
            assert!(refused.to_string().contains(part), "{part}: {refused}");
        }
    }

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, reason)
                .with_code(code)
                .boxed(),
        )
    }

    /// Invariant 9: a 4xx the API server will answer again to the same request is
    /// permanent (code 111); only answers a later try may change are "try again" (11).
    #[test]
    fn permanent_api_refusals_are_not_try_again() {
        for (code, reason) in [
            (400, "BadRequest"),
            (401, "Unauthorized"),
            (403, "Forbidden"),
            (422, "Invalid"),
        ] {
            let message =
                "ipblocks.ipledger.io is forbidden: User \"system:serviceaccount:x\" cannot create";
            let error = AgentError::from(api_error(code, reason, message));
            assert_eq!(error.code(), ErrorCode::ApiRefused.as_u32(), "{error}");
            assert_eq!(error.http_status(), StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(error.reason(), "api_refused");
            let text = error.to_string();
            for part in [code.to_string().as_str(), reason, message] {
                assert!(text.contains(part), "{part}: {text}");
            }
        }
        for (code, reason) in [
            (404, "NotFound"),
            (408, "Timeout"),
            (409, "Conflict"),
            (410, "Expired"),
            (429, "TooManyRequests"),
            (500, "InternalError"),
            (503, "ServiceUnavailable"),
            (0, ""),
        ] {
            let error = AgentError::from(api_error(code, reason, "m"));
            assert_eq!(error.code(), ErrorCode::TryAgainLater.as_u32(), "{error}");
            assert_eq!(error.http_status(), StatusCode::SERVICE_UNAVAILABLE);
        }
    }
}
