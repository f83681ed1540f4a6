//! What an IPBlock's metadata says about its use: its CIDR and how many addresses it
//! holds and cools down, written in the same replace that changes its records. A
//! metadata-only watch of every IPBlock then is an index of the pools' blocks, where an
//! agent decides "claim, borrow or exhausted" without listing or reading any block.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use crate::api::{IPBlock, IPBlockSpec, LABEL_NODE, label_value};
use ipledger_core::BlockSummary;

/// The block's CIDR (set when the block is claimed; labels cannot hold `/` or `:`).
pub const ANNOTATION_CIDR: &str = "ipledger.io/cidr";
/// Addresses the block holds.
pub const ANNOTATION_ALLOCATED: &str = "ipledger.io/allocated";
/// Released addresses the block records for their reuse cooldown.
pub const ANNOTATION_RELEASED: &str = "ipledger.io/released";
/// When the last of them was released (RFC 3339); absent when none is recorded.
pub const ANNOTATION_LAST_RELEASE: &str = "ipledger.io/last-release";

/// The usage annotations of a block whose records are `spec`.
pub fn usage_annotations(spec: &IPBlockSpec) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::from([
        (ANNOTATION_CIDR.to_string(), spec.cidr.to_string()),
        (
            ANNOTATION_ALLOCATED.to_string(),
            spec.allocations.len().to_string(),
        ),
        (
            ANNOTATION_RELEASED.to_string(),
            spec.released.len().to_string(),
        ),
    ]);
    if let Some(last) = spec.released.iter().map(|r| r.released_at.0).max() {
        annotations.insert(ANNOTATION_LAST_RELEASE.to_string(), last.to_string());
    }
    annotations
}

/// Sets `block`'s usage annotations from its records.
pub fn record_usage(block: &mut IPBlock) {
    let usage = usage_annotations(&block.spec);
    let annotations = block.annotations_mut();
    annotations.remove(ANNOTATION_LAST_RELEASE);
    annotations.extend(usage);
}

/// The summary of a block from its metadata alone, as seen by `node`; `None` when the
/// block carries no usage annotations (written by an older agent) or they do not parse.
pub fn summary_of_metadata(meta: &ObjectMeta, node: &str) -> Option<BlockSummary> {
    let annotations = meta.annotations.as_ref()?;
    let number = |key: &str| annotations.get(key)?.parse::<u128>().ok();
    let last_release = match annotations.get(ANNOTATION_LAST_RELEASE) {
        Some(text) => Some(text.parse::<Timestamp>().ok()?),
        None => None,
    };
    Some(BlockSummary {
        name: meta.name.clone()?,
        cidr: annotations.get(ANNOTATION_CIDR)?.parse().ok()?,
        mine: meta.labels.as_ref()?.get(LABEL_NODE)? == &label_value(node),
        in_use: number(ANNOTATION_ALLOCATED)?,
        released: number(ANNOTATION_RELEASED)?,
        last_release,
    })
}

/// The summary of a block from its records, as seen by `node`.
pub fn summary_of(block: &IPBlock, node: &str) -> BlockSummary {
    BlockSummary {
        name: block.name_any(),
        cidr: block.spec.cidr,
        mine: block.spec.node == node,
        in_use: block.spec.allocations.len() as u128,
        released: block.spec.released.len() as u128,
        last_release: block.spec.released.iter().map(|r| r.released_at.0).max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{LABEL_POOL, ReleasedAddress};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn metadata_tells_what_the_records_tell() {
        let node = format!("node-{}", "x".repeat(240));
        let mut block = IPBlock::new(
            "blue.10-0-0-0-28",
            IPBlockSpec {
                pool: "blue".into(),
                cidr: "10.0.0.0/28".parse().unwrap(),
                node: node.clone(),
                last_allocated: None,
                allocations: Vec::new(),
                released: vec![
                    ReleasedAddress {
                        address: "10.0.0.3".parse().unwrap(),
                        released_at: Time(Timestamp::from_second(1_800_000_000).unwrap()),
                    },
                    ReleasedAddress {
                        address: "10.0.0.4".parse().unwrap(),
                        released_at: Time(Timestamp::from_second(1_800_000_100).unwrap()),
                    },
                ],
            },
        );
        block.labels_mut().extend([
            (LABEL_POOL.to_string(), label_value("blue")),
            (LABEL_NODE.to_string(), label_value(&node)),
        ]);
        record_usage(&mut block);
        assert_eq!(
            summary_of_metadata(&block.metadata, &node),
            Some(summary_of(&block, &node))
        );
        assert!(!summary_of_metadata(&block.metadata, "other").unwrap().mine);

        // A block without releases any more drops the stale release time.
        block.spec.released.clear();
        record_usage(&mut block);
        assert!(!block.annotations().contains_key(ANNOTATION_LAST_RELEASE));
        assert_eq!(
            summary_of_metadata(&block.metadata, &node),
            Some(summary_of(&block, &node))
        );
    }

    #[test]
    fn blocks_of_older_agents_are_not_summarized_from_metadata() {
        let meta = ObjectMeta {
            name: Some("b".into()),
            ..Default::default()
        };
        assert_eq!(summary_of_metadata(&meta, "n"), None);
    }
}
