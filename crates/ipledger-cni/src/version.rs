//! CNI spec versions the plugin speaks, and the VERSION command's answer.

use serde::Serialize;

use super::env::Command;

/// A CNI spec version ipledger supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CniVersion {
    /// 0.3.0: first result format with `ips[]`.
    V0_3_0,
    /// 0.3.1.
    V0_3_1,
    /// 0.4.0: adds CHECK.
    V0_4_0,
    /// 1.0.0: drops `ips[].version`.
    V1_0_0,
    /// 1.1.0: adds STATUS and GC.
    V1_1_0,
}

/// The version used when the input names none (VERSION with empty stdin, undecodable
/// stdin): the newest.
pub const LATEST: CniVersion = CniVersion::V1_1_0;

/// Every supported version, oldest first, as VERSION lists them.
pub const SUPPORTED: [CniVersion; 5] = [
    CniVersion::V0_3_0,
    CniVersion::V0_3_1,
    CniVersion::V0_4_0,
    CniVersion::V1_0_0,
    CniVersion::V1_1_0,
];

impl CniVersion {
    /// The version with this spelling, if supported.
    pub fn parse(text: &str) -> Option<CniVersion> {
        SUPPORTED.into_iter().find(|v| v.as_str() == text)
    }

    /// The spelling in configs and results.
    pub const fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// True for the pre-1.0 result format, whose `ips[]` entries carry `version`.
    pub fn has_ip_version_field(self) -> bool {
        self < CniVersion::V1_0_0
    }

    /// The oldest version that defines `command`: CHECK came with 0.4.0, STATUS and
    /// GC with 1.1.0.
    pub fn introducing(command: Command) -> CniVersion {
        match command {
            Command::Check => CniVersion::V0_4_0,
            Command::Status | Command::Gc => CniVersion::V1_1_0,
            Command::Add | Command::Del | Command::Version => CniVersion::V0_3_0,
        }
    }
}

/// The answer to VERSION.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VersionResult<'a> {
    cni_version: &'a str,
    supported_versions: Vec<&'static str>,
}

/// The VERSION result, echoing the `cniVersion` the runtime sent.
///
/// VERSION is how a runtime learns what the plugin supports, so a version the plugin
/// does not speak is echoed rather than refused.
pub fn version_result(echo: &str) -> String {
    let result = VersionResult {
        cni_version: echo,
        supported_versions: SUPPORTED.iter().map(|v| v.as_str()).collect(),
    };
    serde_json::to_string(&result).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_exactly_the_supported_spellings() {
        for version in SUPPORTED {
            assert_eq!(CniVersion::parse(version.as_str()), Some(version));
        }
        for unsupported in ["0.1.0", "0.2.0", "1.2.0", "1.0", "", " 1.0.0", "v1.0.0"] {
            assert_eq!(CniVersion::parse(unsupported), None, "{unsupported:?}");
        }
    }

    #[test]
    fn only_pre_1_0_results_carry_ip_version() {
        assert!(CniVersion::V0_3_0.has_ip_version_field());
        assert!(CniVersion::V0_3_1.has_ip_version_field());
        assert!(CniVersion::V0_4_0.has_ip_version_field());
        assert!(!CniVersion::V1_0_0.has_ip_version_field());
        assert!(!CniVersion::V1_1_0.has_ip_version_field());
    }

    #[test]
    fn commands_need_the_version_that_introduced_them() {
        assert!(CniVersion::V0_3_1 < CniVersion::introducing(Command::Check));
        assert!(CniVersion::V0_4_0 >= CniVersion::introducing(Command::Check));
        assert!(CniVersion::V1_0_0 < CniVersion::introducing(Command::Gc));
        assert!(CniVersion::V1_0_0 < CniVersion::introducing(Command::Status));
        assert_eq!(CniVersion::introducing(Command::Add), CniVersion::V0_3_0);
    }

    #[test]
    fn version_result_lists_all_and_echoes_input() {
        let json: serde_json::Value = serde_json::from_str(&version_result("0.4.0")).unwrap();
        assert_eq!(
            json,
            json!({
                "cniVersion": "0.4.0",
                "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
            })
        );
    }
}
