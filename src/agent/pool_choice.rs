//! Which pools an attachment's addresses come from (DESIGN.md, "The allocation path", 3).
//!
//! First match wins: pools named in the CNI configuration, then the pod's
//! `ipledger.io/pools` annotation, then its namespace's, then the `default` pools whose
//! selectors match the node and the namespace. Pools are grouped by IP family: one address
//! per family, the pools of a family tried in order until one has room.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;

use ipnet::IpNet;
use kube::core::{Selector, SelectorExt};

use crate::api::IPPool;
use ipledger_core::{PoolAge, shadowed_by};

/// Annotation on a pod or namespace naming the pools to allocate from, comma-separated.
pub const ANNOTATION_POOLS: &str = "ipledger.io/pools";

/// Where the list of pools came from; errors name it so an operator knows what to fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolSource {
    /// `ipam.pools` in the CNI network configuration.
    NetworkConfig,
    /// The pod's `ipledger.io/pools` annotation.
    PodAnnotation,
    /// The namespace's `ipledger.io/pools` annotation.
    NamespaceAnnotation,
    /// Pools with `spec.default: true` whose selectors match.
    DefaultPools,
}

impl fmt::Display for PoolSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NetworkConfig => "the network configuration's ipam.pools",
            Self::PodAnnotation => "the pod annotation ipledger.io/pools",
            Self::NamespaceAnnotation => "the namespace annotation ipledger.io/pools",
            Self::DefaultPools => "the default pools",
        })
    }
}

/// What the pool choice knows of the attachment's surroundings.
#[derive(Clone, Debug, Default)]
pub struct ChoiceInput<'a> {
    /// Pools named in the CNI configuration.
    pub config_pools: &'a [String],
    /// The pod's annotations, when the pod is known.
    pub pod_annotations: Option<&'a BTreeMap<String, String>>,
    /// The namespace's annotations, when known.
    pub namespace_annotations: Option<&'a BTreeMap<String, String>>,
    /// The namespace's labels, for `namespaceSelector`.
    pub namespace_labels: Option<&'a BTreeMap<String, String>>,
    /// The node's labels, for `nodeSelector`.
    pub node_labels: Option<&'a BTreeMap<String, String>>,
}

/// The pools of one IP family, in the order they are tried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyPools {
    /// True for IPv6.
    pub ipv6: bool,
    /// Pool names.
    pub pools: Vec<String>,
}

/// The outcome: one entry per IP family the attachment gets an address of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolChoice {
    /// Where the names came from.
    pub source: PoolSource,
    /// IPv4 first, then IPv6, when both are present.
    pub families: Vec<FamilyPools>,
}

/// Why no pool could be chosen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChoiceError {
    /// A named pool does not exist.
    #[error("pool {name:?} named in {named_in} does not exist")]
    UnknownPool { name: String, named_in: PoolSource },
    /// A named pool is disabled.
    #[error("pool {name:?} named in {named_in} is disabled (spec.disabled: true)")]
    Disabled { name: String, named_in: PoolSource },
    /// A named pool overlaps an older pool and is not used.
    #[error(
        "pool {name:?} named in {named_in} overlaps IPPool {older:?}, created before it: of overlapping pools only the first created allocates"
    )]
    Overlapping {
        name: String,
        named_in: PoolSource,
        older: String,
    },
    /// A named pool's cidr is not a valid CIDR.
    #[error("pool {name:?} named in {named_in} has an invalid spec.cidr {cidr:?}")]
    InvalidCidr {
        name: String,
        cidr: String,
        named_in: PoolSource,
    },
    /// No pool was named and no default pool matches.
    #[error("no pool is named for this pod and no default pool matches node labels and namespace")]
    NoPool,
}

/// Chooses the pools an attachment allocates from; `pools` are all the IPPools known.
///
/// `pools` may be the watch cache's shared copies: nothing is cloned to choose.
pub fn choose_pools<P: Borrow<IPPool>>(
    input: &ChoiceInput<'_>,
    pools: &[P],
) -> Result<PoolChoice, ChoiceError> {
    let annotated = |annotations: Option<&BTreeMap<String, String>>| -> Vec<String> {
        annotations
            .and_then(|a| a.get(ANNOTATION_POOLS))
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let named = [
        (PoolSource::NetworkConfig, input.config_pools.to_vec()),
        (PoolSource::PodAnnotation, annotated(input.pod_annotations)),
        (
            PoolSource::NamespaceAnnotation,
            annotated(input.namespace_annotations),
        ),
    ];
    if let Some((source, names)) = named.into_iter().find(|(_, names)| !names.is_empty()) {
        let mut chosen = Vec::with_capacity(names.len());
        for name in names {
            let pool = pools
                .iter()
                .map(Borrow::borrow)
                .find(|p: &&IPPool| p.metadata.name.as_deref() == Some(&name))
                .ok_or_else(|| ChoiceError::UnknownPool {
                    name: name.clone(),
                    named_in: source,
                })?;
            if pool.spec.disabled {
                return Err(ChoiceError::Disabled {
                    name,
                    named_in: source,
                });
            }
            if let Some(older) = overlapped_by(pool, pools) {
                return Err(ChoiceError::Overlapping {
                    name,
                    named_in: source,
                    older,
                });
            }
            let cidr: IpNet = pool
                .spec
                .cidr
                .parse()
                .map_err(|_| ChoiceError::InvalidCidr {
                    name: name.clone(),
                    cidr: pool.spec.cidr.clone(),
                    named_in: source,
                })?;
            chosen.push((name, cidr));
        }
        return Ok(PoolChoice {
            source,
            families: by_family(chosen),
        });
    }

    let mut defaults: Vec<_> = pools
        .iter()
        .map(Borrow::borrow)
        .filter(|p: &&IPPool| {
            p.spec.default && !p.spec.disabled && p.metadata.deletion_timestamp.is_none()
        })
        .filter(|p| overlapped_by(p, pools).is_none())
        .filter(|p| selects(p.spec.node_selector.as_ref(), input.node_labels))
        .filter(|p| selects(p.spec.namespace_selector.as_ref(), input.namespace_labels))
        .filter_map(|p| Some((p.metadata.name.clone()?, p.spec.cidr.parse::<IpNet>().ok()?)))
        .collect();
    // Several matching defaults of one family are tried in name order: stable across nodes.
    defaults.sort_by(|a, b| a.0.cmp(&b.0));
    if defaults.is_empty() {
        return Err(ChoiceError::NoPool);
    }
    Ok(PoolChoice {
        source: PoolSource::DefaultPools,
        families: by_family(defaults),
    })
}

/// The older pool among `pools` that keeps `pool` from allocating (DESIGN.md invariant
/// 7: the core's one rule, applied to the pools this agent observes).
pub fn overlapped_by<P: Borrow<IPPool>>(pool: &IPPool, pools: &[P]) -> Option<String> {
    fn age(p: &IPPool) -> Option<PoolAge<'_>> {
        Some(PoolAge {
            name: p.metadata.name.as_deref()?,
            cidr: p.spec.cidr.parse().ok()?,
            created: p.metadata.creation_timestamp.as_ref().map(|t| t.0),
        })
    }
    let ages: Vec<PoolAge<'_>> = pools.iter().filter_map(|p| age(p.borrow())).collect();
    shadowed_by(&age(pool)?, &ages).map(String::from)
}

/// An unset selector selects everything; a set one needs labels that match. A selector
/// that does not parse selects nothing (the pool's status reports it).
fn selects(
    selector: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    let Ok(selector) = Selector::try_from(selector.clone()) else {
        return false;
    };
    selector.selects_all() || labels.is_some_and(|l| selector.matches(l))
}

fn by_family(pools: Vec<(String, IpNet)>) -> Vec<FamilyPools> {
    [false, true]
        .into_iter()
        .map(|ipv6| FamilyPools {
            ipv6,
            pools: pools
                .iter()
                .filter(|(_, c)| matches!(c, IpNet::V6(_)) == ipv6)
                .map(|(n, _)| n.clone())
                .collect(),
        })
        .filter(|f| !f.pools.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::IPPoolSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};

    fn pool(name: &str, cidr: &str) -> IPPool {
        IPPool::new(
            name,
            IPPoolSpec {
                cidr: cidr.into(),
                ..Default::default()
            },
        )
    }

    fn default_pool(name: &str, cidr: &str) -> IPPool {
        let mut p = pool(name, cidr);
        p.spec.default = true;
        p
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn names(choice: &PoolChoice) -> Vec<(bool, Vec<&str>)> {
        choice
            .families
            .iter()
            .map(|f| (f.ipv6, f.pools.iter().map(String::as_str).collect()))
            .collect()
    }

    #[test]
    fn network_config_wins_over_annotations_and_defaults() {
        let pools = [
            pool("a", "10.0.0.0/16"),
            pool("b", "10.1.0.0/16"),
            default_pool("d", "10.2.0.0/16"),
        ];
        let pod = labels(&[(ANNOTATION_POOLS, "b")]);
        let node = BTreeMap::new();
        let config = ["a".to_string()];
        let input = ChoiceInput {
            config_pools: &config,
            pod_annotations: Some(&pod),
            node_labels: Some(&node),
            ..Default::default()
        };
        let choice = choose_pools(&input, &pools).unwrap();
        assert_eq!(choice.source, PoolSource::NetworkConfig);
        assert_eq!(names(&choice), vec![(false, vec!["a"])]);
    }

    #[test]
    fn pod_annotation_wins_over_namespace_annotation() {
        let pools = [pool("a", "10.0.0.0/16"), pool("b", "fd00::/48")];
        let pod = labels(&[(ANNOTATION_POOLS, " b , a ")]);
        let ns = labels(&[(ANNOTATION_POOLS, "a")]);
        let node = BTreeMap::new();
        let input = ChoiceInput {
            pod_annotations: Some(&pod),
            namespace_annotations: Some(&ns),
            node_labels: Some(&node),
            ..Default::default()
        };
        let choice = choose_pools(&input, &pools).unwrap();
        assert_eq!(choice.source, PoolSource::PodAnnotation);
        assert_eq!(
            names(&choice),
            vec![(false, vec!["a"]), (true, vec!["b"])],
            "IPv4 first, then IPv6"
        );
    }

    #[test]
    fn namespace_annotation_applies_when_the_pod_names_nothing() {
        let pools = [pool("a", "10.0.0.0/16"), default_pool("d", "10.2.0.0/16")];
        let ns = labels(&[(ANNOTATION_POOLS, "a")]);
        let node = BTreeMap::new();
        let input = ChoiceInput {
            namespace_annotations: Some(&ns),
            node_labels: Some(&node),
            ..Default::default()
        };
        let choice = choose_pools(&input, &pools).unwrap();
        assert_eq!(choice.source, PoolSource::NamespaceAnnotation);
        assert_eq!(names(&choice), vec![(false, vec!["a"])]);
    }

    #[test]
    fn defaults_are_filtered_by_node_and_namespace_selectors() {
        let mut zone_a = default_pool("zone-a", "10.0.0.0/16");
        zone_a.spec.node_selector = Some(LabelSelector {
            match_labels: Some(labels(&[("zone", "a")])),
            ..Default::default()
        });
        let mut zone_b = default_pool("zone-b", "10.1.0.0/16");
        zone_b.spec.node_selector = Some(LabelSelector {
            match_labels: Some(labels(&[("zone", "b")])),
            ..Default::default()
        });
        let mut team = default_pool("team", "10.2.0.0/16");
        team.spec.namespace_selector = Some(LabelSelector {
            match_labels: Some(labels(&[("team", "x")])),
            ..Default::default()
        });
        let v6 = default_pool("v6", "fd00::/48");
        let not_default = pool("plain", "10.3.0.0/16");
        let pools = [zone_a, zone_b, team, v6, not_default];

        let node = labels(&[("zone", "b")]);
        let ns = labels(&[("team", "y")]);
        let input = ChoiceInput {
            namespace_labels: Some(&ns),
            node_labels: Some(&node),
            ..Default::default()
        };
        let choice = choose_pools(&input, &pools).unwrap();
        assert_eq!(choice.source, PoolSource::DefaultPools);
        assert_eq!(
            names(&choice),
            vec![(false, vec!["zone-b"]), (true, vec!["v6"])]
        );

        let ns = labels(&[("team", "x")]);
        let input = ChoiceInput {
            namespace_labels: Some(&ns),
            node_labels: Some(&node),
            ..Default::default()
        };
        let choice = choose_pools(&input, &pools).unwrap();
        assert_eq!(
            names(&choice),
            vec![(false, vec!["team", "zone-b"]), (true, vec!["v6"])]
        );
    }

    #[test]
    fn disabled_and_overlapping_defaults_are_skipped_and_refused_when_named() {
        let created = |seconds| Some(Time(jiff::Timestamp::from_second(seconds).unwrap()));
        let mut off = default_pool("off", "10.0.0.0/16");
        off.spec.disabled = true;
        off.metadata.creation_timestamp = created(200);
        // Created after "off" and overlapping it: shadowed, whatever its status says.
        let mut over = default_pool("over", "10.0.0.0/17");
        over.metadata.creation_timestamp = created(300);
        // Created before both, overlapping neither.
        let mut apart = default_pool("apart", "10.1.0.0/16");
        apart.spec.default = false;
        apart.metadata.creation_timestamp = created(100);
        let pools = [off, over, apart];
        let node = BTreeMap::new();
        let input = ChoiceInput {
            node_labels: Some(&node),
            ..Default::default()
        };
        assert_eq!(choose_pools(&input, &pools), Err(ChoiceError::NoPool));

        for (name, expected) in [
            (
                "off",
                ChoiceError::Disabled {
                    name: "off".into(),
                    named_in: PoolSource::NetworkConfig,
                },
            ),
            (
                "over",
                ChoiceError::Overlapping {
                    name: "over".into(),
                    named_in: PoolSource::NetworkConfig,
                    older: "off".into(),
                },
            ),
            (
                "nope",
                ChoiceError::UnknownPool {
                    name: "nope".into(),
                    named_in: PoolSource::NetworkConfig,
                },
            ),
        ] {
            let config = [name.to_string()];
            let input = ChoiceInput {
                config_pools: &config,
                node_labels: Some(&node),
                ..Default::default()
            };
            assert_eq!(choose_pools(&input, &pools), Err(expected));
        }
    }

    #[test]
    fn errors_name_the_pool_and_where_it_was_named() {
        let err = ChoiceError::UnknownPool {
            name: "blue".into(),
            named_in: PoolSource::PodAnnotation,
        };
        assert_eq!(
            err.to_string(),
            r#"pool "blue" named in the pod annotation ipledger.io/pools does not exist"#
        );
    }
}
