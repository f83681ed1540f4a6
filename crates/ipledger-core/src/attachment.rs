//! `Attachment`: the key of an allocation, one pod network interface as CNI names it.

use std::fmt;

use crate::record::PodRef;

use crate::FieldError;

/// Longest CNI network name the ledger stores (`network` maxLength).
pub const MAX_NETWORK: usize = 253;
/// Longest container ID the ledger stores (`containerID` maxLength).
pub const MAX_CONTAINER_ID: usize = 128;
/// Longest interface name: the kernel's IFNAMSIZ less the terminating NUL.
pub const MAX_IF_NAME: usize = 15;
/// Longest pod namespace (a DNS-1123 label).
pub const MAX_POD_NAMESPACE: usize = 63;
/// Longest pod name (a DNS-1123 subdomain).
pub const MAX_POD_NAME: usize = 253;
/// Length of a pod UID in its usual form.
pub const MAX_POD_UID: usize = 36;

/// One pod network interface: (network, containerID, ifName), as the CNI spec keys
/// an attachment. ADD and DEL are idempotent per attachment.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attachment {
    network: String,
    container_id: String,
    if_name: String,
}

impl Attachment {
    /// Validates the three parts with the CNI spec's rules and the ledger's length limits.
    pub fn new(
        network: impl Into<String>,
        container_id: impl Into<String>,
        if_name: impl Into<String>,
    ) -> Result<Attachment, FieldError> {
        let attachment = Attachment {
            network: network.into(),
            container_id: container_id.into(),
            if_name: if_name.into(),
        };
        check_cni_name("network", &attachment.network, MAX_NETWORK)?;
        check_cni_name("containerID", &attachment.container_id, MAX_CONTAINER_ID)?;
        check_if_name(&attachment.if_name)?;
        Ok(attachment)
    }

    /// Name of the CNI network (`name` of the network configuration).
    pub fn network(&self) -> &str {
        &self.network
    }

    /// The runtime's sandbox ID (`CNI_CONTAINERID`).
    pub fn container_id(&self) -> &str {
        &self.container_id
    }

    /// The interface name inside the container (`CNI_IFNAME`).
    pub fn if_name(&self) -> &str {
        &self.if_name
    }
}

impl fmt::Display for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "attachment (network {}, containerID {}, ifName {})",
            self.network, self.container_id, self.if_name
        )
    }
}

/// CNI spec: network names and container IDs start with an alphanumeric character,
/// followed by alphanumerics, `_`, `.` or `-`.
pub fn is_cni_identifier(value: &str) -> bool {
    let mut chars = value.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// CNI spec: an interface name is not `.` or `..` and holds no `/`, `:` or whitespace
/// (its length is checked apart, for a message that gives it).
fn is_if_name_text(value: &str) -> bool {
    value != "."
        && value != ".."
        && !value
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

/// Checks a network name or container ID with [`is_cni_identifier`] and `max`.
fn check_cni_name(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(FieldError::new(
            field,
            format!("is {} bytes long, more than {max}", value.len()),
        ));
    }
    if !is_cni_identifier(value) {
        return Err(FieldError::new(
            field,
            format!(
                "{} must start with a letter or digit and hold only letters, digits, '_', '.' and '-'",
                crate::addr::quote(value)
            ),
        ));
    }
    Ok(())
}

/// CNI spec: an interface name is 1..=15 bytes, not `.` or `..`, with no `/`, `:` or
/// whitespace.
fn check_if_name(value: &str) -> Result<(), FieldError> {
    let field = "ifName";
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.len() > MAX_IF_NAME {
        return Err(FieldError::new(
            field,
            format!("is {} bytes long, more than {MAX_IF_NAME}", value.len()),
        ));
    }
    if !is_if_name_text(value) {
        return Err(FieldError::new(
            field,
            format!(
                "{} must not be '.' or '..' nor contain '/', ':' or whitespace",
                crate::addr::quote(value)
            ),
        ));
    }
    Ok(())
}

/// Checks the pod reference against the ledger's length limits, so that a full block
/// stays a small object.
pub(crate) fn check_pod(pod: &PodRef) -> Result<(), FieldError> {
    let fields = [
        ("pod.namespace", pod.namespace.as_str(), MAX_POD_NAMESPACE),
        ("pod.name", pod.name.as_str(), MAX_POD_NAME),
        ("pod.uid", pod.uid.as_deref().unwrap_or("-"), MAX_POD_UID),
    ];
    for (field, value, max) in fields {
        if value.is_empty() {
            return Err(FieldError::new(field, "must not be empty"));
        }
        if value.len() > max {
            return Err(FieldError::new(
                field,
                format!("is {} bytes long, more than {max}", value.len()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_kubelet_sends() {
        let a = Attachment::new("cbr0", "0123abcdef", "eth0").unwrap();
        assert_eq!(
            (a.network(), a.container_id(), a.if_name()),
            ("cbr0", "0123abcdef", "eth0")
        );
        assert_eq!(
            a.to_string(),
            "attachment (network cbr0, containerID 0123abcdef, ifName eth0)"
        );
    }

    #[test]
    fn refuses_each_bad_part_naming_it() {
        let cases = [
            (Attachment::new("", "c", "eth0"), "network", "empty"),
            (
                Attachment::new("-net", "c", "eth0"),
                "network",
                "start with",
            ),
            (
                Attachment::new("n", "c/1", "eth0"),
                "containerID",
                "only letters",
            ),
            (
                Attachment::new("n", "c".repeat(129), "eth0"),
                "containerID",
                "129 bytes",
            ),
            (
                Attachment::new("n", "c", "a".repeat(16)),
                "ifName",
                "16 bytes",
            ),
            (Attachment::new("n", "c", ".."), "ifName", "'..'"),
            (Attachment::new("n", "c", "eth 0"), "ifName", "whitespace"),
        ];
        for (result, field, words) in cases {
            let error = result.unwrap_err();
            assert_eq!(error.field, field);
            assert!(error.problem.contains(words), "{error}");
        }
    }

    #[test]
    fn pod_lengths_are_bounded() {
        let mut pod = PodRef {
            namespace: "ns".into(),
            name: "p".into(),
            uid: None,
        };
        assert_eq!(check_pod(&pod), Ok(()));
        pod.uid = Some("u".repeat(37));
        assert_eq!(check_pod(&pod).unwrap_err().field, "pod.uid");
        pod.uid = None;
        pod.namespace = "n".repeat(64);
        assert_eq!(check_pod(&pod).unwrap_err().field, "pod.namespace");
    }
}
