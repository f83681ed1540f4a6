//! The controller's reclaim decisions: which allocations are leaked, and which blocks
//! may go. Pure functions of what the controller observed and `now`; the shell re-checks
//! every pod by a direct read and writes each decision with a compare-and-swap.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};

use crate::{Allocation, Block, PodRef};

/// True when the pod an allocation names is gone: no pod of that namespace and name
/// exists (`live_uid` is `None`), or one exists with another UID (a later pod of the
/// same name, such as a StatefulSet's replacement).
pub fn pod_gone(pod: &PodRef, live_uid: Option<&str>) -> bool {
    match (live_uid, pod.uid.as_deref()) {
        (None, _) => true,
        (Some(live), Some(recorded)) => live != recorded,
        // The runtime named no UID: a pod of that name is taken to be the one.
        (Some(_), None) => false,
    }
}

/// The allocations of `block` that are leaked at `now`: their pod is gone (by
/// [`pod_gone`], with `live_uid` answering the UID of the live pod of a namespace and
/// name) and they are older than `grace`. An allocation with no pod reference is never
/// leaked by this rule: nothing tells whether its attachment lives.
pub fn leaked(
    block: &Block,
    live_uid: impl Fn(&str, &str) -> Option<String>,
    now: Timestamp,
    grace: SignedDuration,
) -> Vec<&Allocation> {
    block
        .allocations()
        .filter(|a| old_enough(a.allocated_at, now, grace))
        .filter(|a| {
            a.pod
                .as_ref()
                .is_some_and(|pod| pod_gone(pod, live_uid(&pod.namespace, &pod.name).as_deref()))
        })
        .collect()
}

/// True when something that happened `at` is more than `age` before `now`.
fn old_enough(at: Timestamp, now: Timestamp, age: SignedDuration) -> bool {
    at.checked_add(age).is_ok_and(|end| end < now)
}

/// Where a block's pool stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolState {
    /// The pool exists and is not being deleted.
    Live,
    /// The pool carries a deletionTimestamp.
    Deleting,
    /// No pool of that name is seen (deleted, or not seen yet).
    Absent,
}

/// What the controller observed of one block, for deciding whether it may go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockFacts {
    /// The IPBlock's name.
    pub name: String,
    /// Its pool's name.
    pub pool: String,
    /// Where its pool stands.
    pub pool_state: PoolState,
    /// The node it is affine to.
    pub node: String,
    /// True when a Node object of that name is seen.
    pub node_seen: bool,
    /// Addresses held.
    pub in_use: u128,
    /// Addresses the block can hold (its pool's usable addresses in it; 0 when the pool
    /// is not seen).
    pub capacity: u128,
    /// True while a released address is still cooling down.
    pub cooling: bool,
    /// True when the IPBlock carries a deletionTimestamp.
    pub deleting: bool,
    /// Since when the controller has seen the block hold nothing; `None` when it holds
    /// something.
    pub empty_since: Option<Timestamp>,
    /// Free addresses its node keeps claimed in the pool
    /// ([`Pool::claim_ahead_reserve`](crate::Pool::claim_ahead_reserve); 0 when the pool
    /// is not seen).
    pub reserve: u128,
}

/// How long blocks must have been empty before they go.
#[derive(Clone, Copy, Debug)]
pub struct ReclaimRules {
    /// For a block whose node or pool is not seen: a watch that lags (a node or pool
    /// just created, its first block just claimed) must not cost the block.
    pub unseen_grace: SignedDuration,
    /// For a live node's block.
    pub empty_ttl: SignedDuration,
    /// The time of the decision.
    pub now: Timestamp,
}

/// Why a block is to be deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteReason {
    /// Its pool is being deleted or is gone.
    PoolDeleted,
    /// Its node is gone.
    NodeGone,
    /// It has been empty for longer than the TTL, and its node has room elsewhere.
    EmptyTooLong,
}

impl DeleteReason {
    /// The reason as a metric label and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            DeleteReason::PoolDeleted => "pool_deleted",
            DeleteReason::NodeGone => "node_gone",
            DeleteReason::EmptyTooLong => "empty",
        }
    }
}

/// What to do with a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockFate {
    /// Delete it, on condition that it is unchanged since it was read (a block that
    /// just got an allocation survives the delete).
    Delete(DeleteReason),
    /// It is being deleted and holds nothing: take ipledger's finalizer off, on
    /// condition that it still holds nothing.
    Finalize,
}

/// Which blocks may go, by name. A block holding an allocation never goes. An empty
/// block goes at once when its pool is being deleted; after `unseen_grace` when its pool
/// or its node is not seen (once no released address cools down in it, so the addresses
/// are not handed out again early); after `empty_ttl` when no address cools down in it
/// and its node keeps another block of the pool with room, and enough free addresses
/// elsewhere for its claim-ahead reserve. That last rule keeps one block with room per
/// node and pool, and the reserve: the block the node's next ADD would otherwise claim
/// again at once.
pub fn block_fates(blocks: &[BlockFacts], rules: &ReclaimRules) -> BTreeMap<String, BlockFate> {
    let mut fates = BTreeMap::new();
    let empty_for = |block: &BlockFacts, age| {
        block
            .empty_since
            .is_some_and(|since| old_enough(since, rules.now, age))
    };
    // Live nodes' blocks that are candidates for the TTL rule, by node and pool.
    let mut expired: BTreeMap<(&str, &str), Vec<&BlockFacts>> = BTreeMap::new();
    for block in blocks.iter().filter(|b| b.in_use == 0) {
        let fate = if block.deleting {
            Some(BlockFate::Finalize)
        } else if block.pool_state == PoolState::Deleting {
            Some(BlockFate::Delete(DeleteReason::PoolDeleted))
        } else if block.cooling || !empty_for(block, rules.unseen_grace) {
            // Reclaiming a cooling block would let another node hand its addresses out
            // before their cooldown ends.
            None
        } else if block.pool_state == PoolState::Absent {
            Some(BlockFate::Delete(DeleteReason::PoolDeleted))
        } else if !block.node_seen {
            Some(BlockFate::Delete(DeleteReason::NodeGone))
        } else {
            if empty_for(block, rules.empty_ttl) {
                expired
                    .entry((block.node.as_str(), block.pool.as_str()))
                    .or_default()
                    .push(block);
            }
            None
        };
        if let Some(fate) = fate {
            fates.insert(block.name.clone(), fate);
        }
    }
    for ((node, pool), mut candidates) in expired {
        let node_blocks = || {
            blocks
                .iter()
                .filter(|b| b.node == node && b.pool == pool && !b.deleting)
        };
        let mut with_room = node_blocks().filter(|b| b.in_use < b.capacity).count();
        let mut free: u128 = node_blocks()
            .map(|b| b.capacity.saturating_sub(b.in_use))
            .sum();
        // Deterministic: the block kept is the same on every pass.
        candidates.sort_by(|a, b| b.name.cmp(&a.name));
        for block in candidates {
            let free_without = free.saturating_sub(block.capacity);
            if with_room <= 1 || free_without < block.reserve {
                break;
            }
            with_room -= 1;
            free = free_without;
            fates.insert(
                block.name.clone(),
                BlockFate::Delete(DeleteReason::EmptyTooLong),
            );
        }
    }
    fates
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attachment, Pool, PoolSpec};

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn pod(name: &str, uid: Option<&str>) -> PodRef {
        PodRef {
            namespace: "ns".into(),
            name: name.into(),
            uid: uid.map(Into::into),
        }
    }

    fn block_with(records: &[(&str, Option<PodRef>, i64)]) -> Block {
        let spec = PoolSpec {
            cidr: "10.0.0.0/24".into(),
            block_size: Some(26),
            ..Default::default()
        };
        let pool = Pool::parse("p", &spec).unwrap();
        let mut block = Block::new(&pool, "10.0.0.0/26".parse().unwrap(), "n1").unwrap();
        for (id, pod, second) in records {
            let attachment = Attachment::new("net", *id, "eth0").unwrap();
            block
                .allocate(&pool, &attachment, pod.as_ref(), at(*second))
                .unwrap();
        }
        block
    }

    fn ids(leaks: &[&Allocation]) -> Vec<String> {
        leaks
            .iter()
            .map(|a| a.attachment.container_id().to_string())
            .collect()
    }

    #[test]
    fn a_pod_is_gone_when_absent_or_replaced_by_one_with_another_uid() {
        assert!(pod_gone(&pod("a", Some("u1")), None));
        assert!(pod_gone(&pod("a", Some("u1")), Some("u2")));
        assert!(!pod_gone(&pod("a", Some("u1")), Some("u1")));
        assert!(pod_gone(&pod("a", None), None));
        assert!(!pod_gone(&pod("a", None), Some("u9")));
    }

    #[test]
    fn only_allocations_of_gone_pods_older_than_the_grace_are_leaked() {
        let block = block_with(&[
            ("live", Some(pod("live", Some("u1"))), 0),
            ("gone", Some(pod("gone", Some("u2"))), 0),
            ("replaced", Some(pod("replaced", Some("u3"))), 0),
            ("young", Some(pod("young", Some("u4"))), 50),
            ("anonymous", None, 0),
        ]);
        let live = |_: &str, name: &str| match name {
            "live" => Some("u1".to_string()),
            "replaced" => Some("u3-new".to_string()),
            _ => None,
        };
        let grace = SignedDuration::from_secs(60);
        let leaks = leaked(&block, live, at(100), grace);
        assert_eq!(ids(&leaks), ["gone", "replaced"]);
        // Exactly at the grace period's end it is not yet older than the grace.
        assert_eq!(
            ids(&leaked(&block, live, at(110), grace)),
            ["gone", "replaced"]
        );
        assert_eq!(
            ids(&leaked(&block, live, at(111), grace)),
            ["gone", "replaced", "young"]
        );
        assert!(leaked(&block, live, at(60), grace).is_empty());
    }

    #[test]
    fn a_release_by_record_spares_an_address_allocated_again_since() {
        let gone = pod("gone", Some("u2"));
        let mut block = block_with(&[("old", Some(gone.clone()), 0)]);
        let record = block.allocations().next().unwrap().clone();
        // Between the controller's read and its write: the runtime's DEL, and a new ADD
        // of another attachment that gets the same address.
        let spec = PoolSpec {
            cidr: "10.0.0.0/24".into(),
            block_size: Some(26),
            reuse_cooldown_seconds: Some(0),
            ..Default::default()
        };
        let pool = Pool::parse("p", &spec).unwrap();
        block.release(&record.attachment, at(5));
        let new = Attachment::new("net", "new", "eth0").unwrap();
        block
            .allocate_requested(&pool, record.address, &new, None, at(6))
            .unwrap();
        assert!(!block.release_record(&record, at(7)));
        assert_eq!(block.holder(record.address).unwrap().attachment, new);
        // The same attachment added again later holds a new record, also spared.
        block.release(&new, at(8));
        block
            .allocate_requested(&pool, record.address, &record.attachment, None, at(9))
            .unwrap();
        assert!(!block.release_record(&record, at(10)));
        // The record itself is released.
        let current = block.holder(record.address).unwrap().clone();
        assert!(block.release_record(&current, at(11)));
        assert!(block.is_empty());
    }

    fn facts(name: &str, node: &str, in_use: u128, empty_since: Option<i64>) -> BlockFacts {
        BlockFacts {
            name: name.into(),
            pool: "p".into(),
            pool_state: PoolState::Live,
            node: node.into(),
            node_seen: true,
            in_use,
            capacity: 64,
            cooling: false,
            deleting: false,
            empty_since: empty_since.map(at),
            reserve: 0,
        }
    }

    fn fates(blocks: &[BlockFacts]) -> Vec<(String, BlockFate)> {
        let rules = ReclaimRules {
            unseen_grace: SignedDuration::from_secs(60),
            empty_ttl: SignedDuration::from_secs(600),
            now: at(1000),
        };
        block_fates(blocks, &rules).into_iter().collect()
    }

    fn delete(name: &str, reason: DeleteReason) -> (String, BlockFate) {
        (name.into(), BlockFate::Delete(reason))
    }

    #[test]
    fn a_block_holding_an_allocation_never_goes() {
        let mut deleting = facts("b1", "n1", 1, None);
        deleting.deleting = true;
        let mut orphan = facts("b2", "n1", 3, None);
        orphan.pool_state = PoolState::Deleting;
        orphan.node_seen = false;
        let mut old = facts("b3", "n1", 1, None);
        old.pool_state = PoolState::Absent;
        assert!(fates(&[deleting, orphan, old]).is_empty());
    }

    #[test]
    fn empty_blocks_of_a_deleted_pool_go_at_once_and_of_unseen_ones_after_the_grace() {
        let mut deleting = facts("b1", "n1", 0, Some(999));
        deleting.pool_state = PoolState::Deleting;
        let mut absent = facts("b2", "n1", 0, Some(900));
        absent.pool_state = PoolState::Absent;
        let mut gone = facts("b3", "gone", 0, Some(900));
        gone.node_seen = false;
        let mut just_claimed = facts("b4", "new", 0, Some(990));
        just_claimed.node_seen = false;
        // A gone node's block whose addresses still cool down waits for the cooldown.
        let mut cooling = facts("b5", "gone", 0, Some(0));
        cooling.node_seen = false;
        cooling.cooling = true;
        assert_eq!(
            fates(&[deleting, absent, gone, just_claimed, cooling]),
            [
                delete("b1", DeleteReason::PoolDeleted),
                delete("b2", DeleteReason::PoolDeleted),
                delete("b3", DeleteReason::NodeGone),
            ]
        );
    }

    #[test]
    fn a_deleting_empty_block_is_finalized() {
        let mut block = facts("b1", "n1", 0, None);
        block.deleting = true;
        assert_eq!(fates(&[block]), [("b1".into(), BlockFate::Finalize)]);
    }

    #[test]
    fn a_live_node_keeps_one_block_with_room_and_loses_the_expired_others() {
        // Alone, an expired empty block stays: the next ADD would claim it again.
        assert!(fates(&[facts("b1", "n1", 0, Some(0))]).is_empty());
        // Three expired empty blocks and a full one: one empty block stays.
        let blocks = [
            facts("b0", "n1", 64, None),
            facts("b1", "n1", 0, Some(0)),
            facts("b2", "n1", 0, Some(0)),
            facts("b3", "n1", 0, Some(0)),
        ];
        assert_eq!(
            fates(&blocks),
            [
                delete("b2", DeleteReason::EmptyTooLong),
                delete("b3", DeleteReason::EmptyTooLong),
            ]
        );
        // A block with room elsewhere lets every expired empty block go; not yet
        // expired and cooling blocks stay, and so does another node's.
        let mut cooling = facts("b4", "n1", 0, Some(0));
        cooling.cooling = true;
        let blocks = [
            facts("b0", "n1", 10, None),
            facts("b1", "n1", 0, Some(0)),
            facts("b2", "n1", 0, Some(500)),
            cooling,
            facts("b5", "n2", 0, Some(0)),
        ];
        assert_eq!(fates(&blocks), [delete("b1", DeleteReason::EmptyTooLong)]);
    }

    #[test]
    fn a_live_node_keeps_the_empty_blocks_its_claim_ahead_reserve_needs() {
        let with_reserve = |mut f: BlockFacts| {
            f.reserve = 32;
            f
        };
        // 40 of 64 held: 24 free elsewhere is below the reserve, the empty block stays
        // (the agent would claim it again at its next ADD).
        let blocks = [
            with_reserve(facts("b0", "n1", 40, None)),
            with_reserve(facts("b1", "n1", 0, Some(0))),
        ];
        assert!(fates(&blocks).is_empty());
        // 20 held: 44 free elsewhere covers it, the empty block goes.
        let blocks = [
            with_reserve(facts("b0", "n1", 20, None)),
            with_reserve(facts("b1", "n1", 0, Some(0))),
        ];
        assert_eq!(fates(&blocks), [delete("b1", DeleteReason::EmptyTooLong)]);
        // Of three empty blocks beside a nearly full one, one stays for the reserve.
        let blocks = [
            with_reserve(facts("b0", "n1", 60, None)),
            with_reserve(facts("b1", "n1", 0, Some(0))),
            with_reserve(facts("b2", "n1", 0, Some(0))),
            with_reserve(facts("b3", "n1", 0, Some(0))),
        ];
        assert_eq!(
            fates(&blocks),
            [
                delete("b2", DeleteReason::EmptyTooLong),
                delete("b3", DeleteReason::EmptyTooLong),
            ]
        );
    }
}
