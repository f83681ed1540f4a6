//! The API types: the `ipledger.io/v1alpha1` custom resources and their CRDs.
//!
//! These Rust types are the single source of the CRDs: `ipledger crds` prints
//! [`crds_yaml`], and `crds/` is that output, checked in.

mod block;
mod pool;
pub mod usage;

pub use block::{AllocationRecord, IPBlock, IPBlockSpec, PodRef, ReleasedAddress};
pub use pool::{Dns, IPPool, IPPoolSpec, IPPoolStatus, Route};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every ipledger resource.
pub const GROUP: &str = "ipledger.io";

/// Label on an IPBlock naming the pool it belongs to, as [`label_value`] writes it.
pub const LABEL_POOL: &str = "ipledger.io/pool";
/// Label on an IPBlock naming the node it is affine to, as [`label_value`] writes it.
pub const LABEL_NODE: &str = "ipledger.io/node";

/// ipledger's finalizer on an IPBlock: it comes off only while the block holds no
/// allocation, so no deletion (by an operator, by ipledger, or by Kubernetes garbage
/// collection after its pool, with any propagation policy) erases a held address.
pub const BLOCK_FINALIZER: &str = "ipledger.io/allocations";
/// ipledger's finalizer on an IPPool: it holds a deleted pool, Terminating, until none
/// of its addresses is allocated any more and its blocks are gone.
pub const POOL_FINALIZER: &str = "ipledger.io/blocks";

/// Longest label value the API server accepts.
const MAX_LABEL_VALUE: usize = 63;

/// `name` as a label value: itself when it fits, else its first characters and a hash of
/// the whole name. Pool and node names may be 253 characters long, label values only 63;
/// the full name stays in the IPBlock's spec, and selectors use this same function.
pub fn label_value(name: &str) -> String {
    if name.len() <= MAX_LABEL_VALUE {
        return name.to_string();
    }
    let hash = short_hash(name);
    // A DNS subdomain is ASCII; the head ends with a letter or digit, as values must.
    let keep = MAX_LABEL_VALUE - 1 - hash.len();
    let head = name[..keep].trim_end_matches(['.', '-']);
    format!("{head}-{hash}")
}

/// The first 12 bytes of the name's SHA-256, in hex.
fn short_hash(name: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(name.as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// The label a node puts on another node's block when it borrows an address from it, so
/// that its own watch sees the block: `borrower.ipledger.io/` and a hash of the node name
/// (label names are at most 63 characters; node names may be longer).
pub fn borrower_label(node: &str) -> String {
    format!("{BORROWER_PREFIX}{}", short_hash(node))
}

/// The prefix of every borrower label.
pub const BORROWER_PREFIX: &str = "borrower.ipledger.io/";

/// Every CRD ipledger installs, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![IPPool::crd(), IPBlock::crd()]
}

/// The CRDs as one multi-document YAML stream, exactly as checked in under `crds/`.
pub fn crds_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn long_names_become_valid_distinct_label_values() {
        assert_eq!(label_value("node-a"), "node-a");
        let long = format!("{}.example.com", "n".repeat(240));
        let longer = format!("{}.example.org", "n".repeat(240));
        for name in [&long, &longer] {
            let value = label_value(name);
            assert!(value.len() <= 63, "{value}");
            assert!(
                value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.".contains(c))
            );
            assert!(value.ends_with(|c: char| c.is_ascii_alphanumeric()));
            assert_eq!(value, label_value(name), "stable");
        }
        assert_ne!(label_value(&long), label_value(&longer));
        // A cut landing after a dot still ends the value with a letter or digit.
        let dotted = format!("{}.{}", "a".repeat(37), "b".repeat(100));
        assert!(label_value(&dotted).ends_with(|c: char| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn borrower_labels_are_short_stable_and_distinct() {
        let long = "n".repeat(253);
        let label = borrower_label(&long);
        let name = label.split_once('/').unwrap().1;
        assert!(name.len() <= 63, "{label}");
        assert_eq!(label, borrower_label(&long));
        assert_ne!(borrower_label("node-a"), borrower_label("node-b"));
    }

    /// Formats the API server knows; it ignores others, so an unknown one is a silent no-op.
    const KNOWN_FORMATS: &[&str] = &[
        "int32",
        "int64",
        "float",
        "double",
        "byte",
        "date",
        "date-time",
        "password",
    ];

    fn schemas() -> Vec<(String, Value)> {
        crds()
            .into_iter()
            .map(|crd| {
                let version = &crd.spec.versions[0];
                let schema = version
                    .schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref())
                    .expect("schema");
                (
                    crd.spec.names.kind.clone(),
                    serde_json::to_value(schema).expect("schema serializes"),
                )
            })
            .collect()
    }

    /// Checks the rules of a structural schema (Kubernetes "Specifying a structural
    /// schema"): a type on every node, nothing typed inside logical junctors.
    fn assert_structural(path: &str, node: &Value, problems: &mut Vec<String>) {
        let Some(obj) = node.as_object() else { return };
        let free_form = obj.contains_key("x-kubernetes-int-or-string")
            || obj.contains_key("x-kubernetes-preserve-unknown-fields");
        if !free_form && !obj.contains_key("type") {
            problems.push(format!("{path}: no type"));
        }
        for junctor in ["allOf", "anyOf", "oneOf", "not"] {
            if obj.contains_key(junctor) {
                problems.push(format!("{path}: {junctor} is not allowed here"));
            }
        }
        if let Some(format) = obj.get("format").and_then(Value::as_str)
            && !KNOWN_FORMATS.contains(&format)
        {
            problems.push(format!(
                "{path}: format {format:?} is unknown to the API server"
            ));
        }
        if let Some(props) = obj.get("properties").and_then(Value::as_object) {
            for (name, child) in props {
                assert_structural(&format!("{path}.{name}"), child, problems);
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(child) = obj.get(key) {
                assert_structural(&format!("{path}[{key}]"), child, problems);
            }
        }
    }

    /// The example pools are what README's `bridge` network uses: each sets its gateway to
    /// the first address, which `bridge` with `isGateway` takes for itself when the result
    /// carries none, so ipledger reserves it instead of handing it to a pod.
    #[test]
    fn example_pools_are_valid_and_reserve_the_first_address_as_gateway() {
        use serde::Deserialize;
        let text = include_str!("../../examples/pools.yaml");
        let mut pools = 0;
        for document in serde_yaml_ng::Deserializer::from_str(text) {
            let pool = IPPool::deserialize(document).expect("an IPPool");
            let name = kube::ResourceExt::name_any(&pool);
            let parsed = ipledger_core::Pool::try_from(&pool)
                .unwrap_or_else(|e| panic!("examples/pools.yaml: {name}: {e}"));
            let cidr = parsed.cidr();
            let first = match cidr.network() {
                std::net::IpAddr::V4(a) => std::net::IpAddr::V4((u32::from(a) + 1).into()),
                std::net::IpAddr::V6(a) => std::net::IpAddr::V6((u128::from(a) + 1).into()),
            };
            assert_eq!(parsed.gateway(), Some(first), "{name}: gateway");
            pools += 1;
        }
        assert_eq!(pools, 2);
    }

    /// `kubectl explain` must tell what the agent does: a requested address is honoured in
    /// any node's block, and strictAffinity only bounds the automatic choice.
    #[test]
    fn strict_affinity_says_requested_addresses_are_honoured_anywhere() {
        let (_, pool) = &schemas()[0];
        let text = pool["properties"]["spec"]["properties"]["strictAffinity"]["description"]
            .as_str()
            .expect("a description");
        assert!(text.contains("Requested addresses"), "{text}");
        assert!(text.contains("any node's block"), "{text}");
        assert!(text.contains("borrow"), "{text}");
    }

    #[test]
    fn checked_in_crds_match_the_types() {
        let checked_in = include_str!("../../crds/crds.yaml");
        assert_eq!(
            crds_yaml().expect("crds serialize"),
            checked_in,
            "crds/crds.yaml is stale: run `cargo run -- crds > crds/crds.yaml`"
        );
    }

    #[test]
    fn schemas_are_structural() {
        for (kind, schema) in schemas() {
            let mut problems = Vec::new();
            assert_structural(&kind, &schema, &mut problems);
            assert!(
                problems.is_empty(),
                "{kind} schema is not structural: {problems:#?}"
            );
        }
    }

    #[test]
    fn strings_in_cel_rules_are_bounded() {
        // The API server estimates the cost of every CEL rule from maxLength/maxItems and
        // refuses the CRD when an unbounded string makes the estimate exceed its budget.
        let (_, pool) = &schemas()[0];
        let spec = &pool["properties"]["spec"]["properties"];
        for field in ["cidr", "gateway"] {
            assert!(
                spec[field]["maxLength"].is_u64(),
                "spec.{field} has no maxLength"
            );
        }
        let rules = pool["properties"]["spec"]["x-kubernetes-validations"]
            .as_array()
            .expect("spec rules");
        assert!(
            rules
                .iter()
                .any(|r| r["message"] == "blockSize is immutable")
        );
        let cidr_rules = spec["cidr"]["x-kubernetes-validations"]
            .as_array()
            .expect("cidr rules");
        assert!(cidr_rules.iter().any(|r| r["rule"] == "self == oldSelf"));
    }

    #[test]
    fn crds_are_cluster_scoped_with_pool_status_and_printer_columns() {
        for crd in crds() {
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.scope, "Cluster");
            let version = &crd.spec.versions[0];
            assert_eq!(version.name, "v1alpha1");
            // The pool's status is the controller's; a block has none: its records
            // and the usage annotations written with them are the whole truth.
            let has_status = version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some();
            assert_eq!(
                has_status,
                crd.spec.names.kind == "IPPool",
                "{} status subresource",
                crd.spec.names.kind
            );
            let columns: Vec<_> = version
                .additional_printer_columns
                .iter()
                .flatten()
                .map(|c| c.name.as_str())
                .collect();
            let expected: &[&str] = match crd.spec.names.kind.as_str() {
                "IPPool" => &["CIDR", "Allocated", "Free", "Age"],
                _ => &["Pool", "CIDR", "Node", "Allocated"],
            };
            for name in expected {
                assert!(
                    columns.contains(name),
                    "{} lacks printer column {name}: {columns:?}",
                    crd.spec.names.kind
                );
            }
        }
    }
}
