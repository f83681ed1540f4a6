//! CNI error codes and the error result the plugin prints on stdout.

use serde::Serialize;

/// Every error code ipledger emits; `docs/cni.md` has the table for operators.
///
/// 1–99 are the CNI spec's well-known codes; 100 and above are ipledger's own, which
/// the spec leaves to plugins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    /// The config's `cniVersion` is not supported, or too old for the command.
    IncompatibleVersion = 1,
    /// A field of the `ipam` section is unknown to ipledger, or a `CNI_ARGS` key is
    /// unknown and `IgnoreUnknown` is not set.
    UnsupportedField = 2,
    /// The container is unknown or does not exist.
    UnknownContainer = 3,
    /// A `CNI_*` environment variable is missing or invalid.
    InvalidEnvironment = 4,
    /// Reading stdin or writing stdout failed.
    IoFailure = 5,
    /// Stdin is not valid JSON.
    DecodeFailure = 6,
    /// The network configuration is invalid (a field is missing, malformed or out of range).
    InvalidNetworkConfig = 7,
    /// The agent or the Kubernetes API is unreachable or timing out; the runtime retries.
    TryAgainLater = 11,
    /// STATUS: the plugin cannot service ADD requests.
    PluginNotAvailable = 50,
    /// STATUS: the plugin cannot service ADD requests and existing pods may be affected.
    PluginNotAvailableLimitedConnectivity = 51,
    /// Every address of the pool is in use (with `strictAffinity`: every free one is in
    /// other nodes' blocks).
    PoolExhausted = 100,
    /// A pool named in the config or an annotation does not exist.
    UnknownPool = 101,
    /// A requested address is allocated to another attachment.
    RequestedAddressTaken = 102,
    /// A requested address lies outside every pool in use.
    RequestedAddressOutsidePool = 103,
    /// A requested address is excluded, the gateway, or a network/broadcast address.
    RequestedAddressExcluded = 104,
    /// The pool is disabled or being deleted: no new allocations.
    PoolDisabled = 105,
    /// The pool overlaps an older pool and is not used until the overlap is fixed.
    PoolOverlapping = 106,
    /// CHECK: an address of `prevResult` is not allocated to this attachment.
    AllocationMissing = 107,
    /// No pool was named and no default pool matches the node and namespace.
    NoPoolMatches = 108,
    /// The agent's answer could not be understood (plugin and agent versions differ?).
    AgentProtocol = 109,
    /// GC released some allocations but failed on others; details list them.
    GcIncomplete = 110,
    /// The Kubernetes API refused the agent's request for good (400, 401, 403, 422, ...):
    /// retrying cannot help until RBAC, the CRDs or the object are fixed, so this is not 11.
    ApiRefused = 111,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 22] = [
        ErrorCode::IncompatibleVersion,
        ErrorCode::UnsupportedField,
        ErrorCode::UnknownContainer,
        ErrorCode::InvalidEnvironment,
        ErrorCode::IoFailure,
        ErrorCode::DecodeFailure,
        ErrorCode::InvalidNetworkConfig,
        ErrorCode::TryAgainLater,
        ErrorCode::PluginNotAvailable,
        ErrorCode::PluginNotAvailableLimitedConnectivity,
        ErrorCode::PoolExhausted,
        ErrorCode::UnknownPool,
        ErrorCode::RequestedAddressTaken,
        ErrorCode::RequestedAddressOutsidePool,
        ErrorCode::RequestedAddressExcluded,
        ErrorCode::PoolDisabled,
        ErrorCode::PoolOverlapping,
        ErrorCode::AllocationMissing,
        ErrorCode::NoPoolMatches,
        ErrorCode::AgentProtocol,
        ErrorCode::GcIncomplete,
        ErrorCode::ApiRefused,
    ];

    /// The number printed in the error result.
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// The known code with this number, if any.
    pub fn from_u32(code: u32) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_u32() == code)
    }
}

/// A CNI error: what the plugin prints on stdout (with `cniVersion`) before exiting
/// non-zero.
///
/// `code` is a plain number because errors from the agent pass through unchanged,
/// including codes this build does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{msg} (code {code})")]
pub struct CniError {
    /// CNI error code.
    pub code: u32,
    /// Short message; names the field or variable at fault.
    pub msg: String,
    /// Longer explanation, when there is one.
    pub details: Option<String>,
}

/// The CNI error result, as the spec lays it out.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorResult<'a> {
    cni_version: &'a str,
    code: u32,
    msg: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a str>,
}

impl CniError {
    /// An error with a known code and a message.
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        CniError {
            code: code.as_u32(),
            msg: msg.into(),
            details: None,
        }
    }

    /// The same error with a longer explanation.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    /// The known code of this error, if it is one.
    pub fn known_code(&self) -> Option<ErrorCode> {
        ErrorCode::from_u32(self.code)
    }

    /// The error result JSON, echoing the config's `cniVersion`.
    pub fn to_json(&self, cni_version: &str) -> String {
        let result = ErrorResult {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: self.details.as_deref(),
        };
        // Serializing plain strings and a number cannot fail.
        serde_json::to_string(&result).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn codes_are_the_spec_numbers() {
        assert_eq!(ErrorCode::IncompatibleVersion.as_u32(), 1);
        assert_eq!(ErrorCode::InvalidEnvironment.as_u32(), 4);
        assert_eq!(ErrorCode::InvalidNetworkConfig.as_u32(), 7);
        assert_eq!(ErrorCode::TryAgainLater.as_u32(), 11);
        assert_eq!(ErrorCode::PluginNotAvailable.as_u32(), 50);
        assert_eq!(
            ErrorCode::PluginNotAvailableLimitedConnectivity.as_u32(),
            51
        );
        assert!(
            ErrorCode::ALL
                .iter()
                .filter(|c| c.as_u32() >= 12 && c.as_u32() != 50 && c.as_u32() != 51)
                .all(|c| c.as_u32() >= 100),
            "plugin-defined codes must be 100 or above"
        );
    }

    #[test]
    fn all_is_sorted_unique_and_reversible() {
        let numbers: Vec<u32> = ErrorCode::ALL.iter().map(|c| c.as_u32()).collect();
        let mut sorted = numbers.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(numbers, sorted);
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u32(code.as_u32()), Some(code));
        }
        assert_eq!(ErrorCode::from_u32(99), None);
    }

    #[test]
    fn every_code_is_documented_in_the_error_table() {
        let doc = include_str!("../../../docs/cni.md");
        for code in ErrorCode::ALL {
            let row = format!("| {} | `{:?}` |", code.as_u32(), code);
            assert!(doc.contains(&row), "docs/cni.md lacks the row {row}");
        }
    }

    #[test]
    fn error_result_echoes_the_version_and_omits_absent_details() {
        let error = CniError::new(ErrorCode::InvalidEnvironment, "CNI_IFNAME: missing");
        let json: serde_json::Value = serde_json::from_str(&error.to_json("0.3.1")).unwrap();
        assert_eq!(
            json,
            json!({"cniVersion": "0.3.1", "code": 4, "msg": "CNI_IFNAME: missing"})
        );

        let detailed = error.with_details("set by the runtime");
        let json: serde_json::Value = serde_json::from_str(&detailed.to_json("1.1.0")).unwrap();
        assert_eq!(json["details"], "set by the runtime");
        assert_eq!(json["cniVersion"], "1.1.0");
    }
}
