//! Overlapping pools (DESIGN.md, invariant 7): of pools that share an address, only the
//! one created first allocates. Every agent and the controller apply this one rule to the
//! pools they observe, so they agree without talking to each other.

use ipnet::IpNet;
use jiff::Timestamp;

use crate::pool::overlaps;

/// What the overlap rule looks at in a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolAge<'a> {
    /// The pool's name.
    pub name: &'a str,
    /// Its CIDR.
    pub cidr: IpNet,
    /// `metadata.creationTimestamp`; a pool without one counts as the newest.
    pub created: Option<Timestamp>,
}

impl PoolAge<'_> {
    /// The order of "created first": creation time (the API stores whole seconds), then
    /// the name, so that two pools created in the same second still have one winner that
    /// every observer agrees on.
    fn key(&self) -> (bool, Option<Timestamp>, &str) {
        (self.created.is_none(), self.created, self.name)
    }
}

/// The pool that keeps `pool` from allocating: the first-created of the pools in `pools`
/// that overlap it and were created before it; `None` when `pool` may allocate.
///
/// Any older overlapping pool counts, whatever its state (disabled, Terminating): its
/// blocks may still hold addresses, and a newer pool handing them out again would make
/// duplicates. A pool stays shadowed until every older overlapping pool is gone.
pub fn shadowed_by<'a>(pool: &PoolAge<'_>, pools: &[PoolAge<'a>]) -> Option<&'a str> {
    pools
        .iter()
        .filter(|other| other.name != pool.name)
        .filter(|other| overlaps(&other.cidr, &pool.cidr))
        .filter(|other| other.key() < pool.key())
        .min_by(|a, b| a.key().cmp(&b.key()))
        .map(|other| other.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age<'a>(name: &'a str, cidr: &str, created: Option<i64>) -> PoolAge<'a> {
        PoolAge {
            name,
            cidr: cidr.parse().unwrap(),
            created: created.map(|s| Timestamp::from_second(s).unwrap()),
        }
    }

    #[test]
    fn the_pool_created_first_wins_and_the_later_one_names_it() {
        let pools = [
            age("late", "10.0.0.0/25", Some(200)),
            age("early", "10.0.0.0/24", Some(100)),
            age("elsewhere", "10.1.0.0/24", Some(50)),
        ];
        assert_eq!(shadowed_by(&pools[0], &pools), Some("early"));
        assert_eq!(shadowed_by(&pools[1], &pools), None);
        assert_eq!(shadowed_by(&pools[2], &pools), None);
    }

    #[test]
    fn same_second_ties_are_broken_by_name_and_exactly_one_pool_allocates() {
        let pools = [
            age("b", "10.0.0.0/24", Some(100)),
            age("a", "10.0.0.128/25", Some(100)),
        ];
        let allocating: Vec<&str> = pools
            .iter()
            .filter(|p| shadowed_by(p, &pools).is_none())
            .map(|p| p.name)
            .collect();
        assert_eq!(allocating, ["a"]);
    }

    #[test]
    fn a_pool_without_creation_time_counts_as_newest() {
        let pools = [
            age("unknown", "10.0.0.0/24", None),
            age("known", "10.0.0.0/24", Some(i64::from(i32::MAX))),
        ];
        assert_eq!(shadowed_by(&pools[0], &pools), Some("known"));
        assert_eq!(shadowed_by(&pools[1], &pools), None);
    }

    #[test]
    fn the_oldest_of_several_overlapping_pools_is_named() {
        let pools = [
            age("young", "10.0.0.0/16", Some(300)),
            age("middle", "10.0.1.0/24", Some(200)),
            age("old", "10.0.2.0/24", Some(100)),
        ];
        assert_eq!(shadowed_by(&pools[0], &pools), Some("old"));
        // The middle pool does not overlap the old one: it allocates, the young one not.
        assert_eq!(shadowed_by(&pools[1], &pools), None);
    }

    #[test]
    fn families_never_overlap() {
        let pools = [
            age("v4", "0.0.0.0/0", Some(100)),
            age("v6", "::/0", Some(200)),
        ];
        assert_eq!(shadowed_by(&pools[1], &pools), None);
    }
}
