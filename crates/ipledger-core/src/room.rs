//! Where a node finds room in a pool once its own blocks are full: a block to claim, an
//! address to borrow, or exhaustion — decided from a summary of the pool's blocks (the
//! agent's block index), without reading any block's records.

use ipnet::IpNet;
use jiff::Timestamp;

use crate::{AllocError, Pool};

/// What the block index knows of one block of a pool: enough to decide where room is,
/// not the records themselves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockSummary {
    /// The IPBlock object's name.
    pub name: String,
    /// The block's CIDR.
    pub cidr: IpNet,
    /// True when the block is affine to the deciding node.
    pub mine: bool,
    /// Addresses held, as of the block's last write.
    pub in_use: u128,
    /// Released addresses recorded for their cooldown.
    pub released: u128,
    /// When the last of them was released.
    pub last_release: Option<Timestamp>,
}

impl BlockSummary {
    /// Released addresses that may still be cooling down at `now`: all of them until the
    /// latest release has cooled down (the summary holds no per-address times, so it errs
    /// on the side of "not room").
    pub fn cooling(&self, pool: &Pool, now: Timestamp) -> u128 {
        match self.last_release {
            _ if pool.reuse_cooldown().is_zero() => 0,
            Some(at)
                if at
                    .checked_add(pool.reuse_cooldown())
                    .is_ok_and(|end| now < end) =>
            {
                self.released
            }
            Some(_) | None => 0,
        }
    }

    /// Addresses an allocation could take at `now`: neither held nor cooling down.
    pub fn free(&self, pool: &Pool, now: Timestamp) -> u128 {
        pool.block_capacity(&self.cidr)
            .saturating_sub(self.in_use)
            .saturating_sub(self.cooling(pool, now))
    }
}

/// Where to look for room after the node's own blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextStep {
    /// Claim this block (no IPBlock exists for it).
    Claim(IpNet),
    /// Borrow from these other nodes' blocks, by name, the emptiest first: borrowing where
    /// there is the most room conflicts least.
    Borrow(Vec<String>),
    /// The pool has no free address for this node: the error to answer.
    Exhausted(AllocError),
    /// Free addresses exist only in other nodes' blocks and `strictAffinity` forbids
    /// borrowing them.
    NoBlockForNode {
        /// Addresses held in the pool.
        in_use: u128,
    },
}

impl Pool {
    /// Free addresses a node keeps in its own blocks of this pool, given how many of the
    /// pool's blocks are claimed: half a block while more than an eighth of the pool's
    /// blocks (and at least two) are unclaimed, none once blocks grow scarce: an empty
    /// block held ahead of need would then keep another node from claiming one (and
    /// under `strictAffinity` from allocating at all).
    ///
    /// Below it, the agent claims the node's next block in the background, so that a
    /// burst of pod starts finds room claimed already instead of queueing behind a
    /// claim; and the controller does not reclaim an empty block the node needs for it.
    /// One rule for both, so that neither undoes the other's work.
    pub fn claim_ahead_reserve(&self, claimed_blocks: u128) -> u128 {
        let unclaimed = self.block_count().saturating_sub(claimed_blocks);
        if unclaimed < 2 || unclaimed <= self.block_count() / 8 {
            return 0;
        }
        let host_bits = u32::from(self.cidr().max_prefix_len() - self.block_prefix());
        1u128.checked_shl(host_bits).unwrap_or(u128::MAX) / 2
    }

    /// The next place to find room for `node`, given every block of the pool that exists.
    pub fn next_step(&self, node: &str, blocks: &[BlockSummary], now: Timestamp) -> NextStep {
        let existing: Vec<IpNet> = blocks.iter().map(|b| b.cidr).collect();
        if let Some(cidr) = self.next_free_block(node, &existing) {
            return NextStep::Claim(cidr);
        }
        let in_use = blocks.iter().map(|b| b.in_use).sum();
        let with_room: Vec<(u128, &BlockSummary)> = blocks
            .iter()
            .filter(|b| !b.mine)
            .map(|b| (b.free(self, now), b))
            .filter(|(free, _)| *free > 0)
            .collect();
        if !with_room.is_empty() {
            if self.strict_affinity() {
                return NextStep::NoBlockForNode { in_use };
            }
            let mut with_room = with_room;
            with_room.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
            return NextStep::Borrow(with_room.into_iter().map(|(_, b)| b.name.clone()).collect());
        }
        let cooling = blocks.iter().map(|b| b.cooling(self, now)).sum();
        NextStep::Exhausted(self.exhausted(in_use, cooling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PoolSpec;

    fn pool(strict: bool) -> Pool {
        let spec = PoolSpec {
            cidr: "10.0.0.0/27".into(),
            block_size: Some(28),
            reuse_cooldown_seconds: Some(30),
            strict_affinity: strict,
            ..Default::default()
        };
        Pool::parse("p", &spec).unwrap()
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn summary(cidr: &str, mine: bool, in_use: u128) -> BlockSummary {
        BlockSummary {
            name: format!("p.{cidr}"),
            cidr: cidr.parse().unwrap(),
            mine,
            in_use,
            released: 0,
            last_release: None,
        }
    }

    #[test]
    fn the_reserve_is_half_a_block_until_blocks_grow_scarce() {
        let spec = PoolSpec {
            cidr: "10.0.0.0/21".into(),
            block_size: Some(28),
            ..Default::default()
        };
        let pool = Pool::parse("p", &spec).unwrap();
        assert_eq!(pool.block_count(), 128);
        assert_eq!(pool.claim_ahead_reserve(0), 8);
        assert_eq!(pool.claim_ahead_reserve(111), 8);
        // 16 blocks left, an eighth: kept for nodes that need one now.
        assert_eq!(pool.claim_ahead_reserve(112), 0);
        // A small pool keeps its last block from being claimed ahead.
        let spec = PoolSpec {
            cidr: "10.0.0.0/24".into(),
            block_size: Some(26),
            ..Default::default()
        };
        let pool = Pool::parse("p", &spec).unwrap();
        assert_eq!(pool.claim_ahead_reserve(2), 32);
        assert_eq!(pool.claim_ahead_reserve(3), 0);
        // An IPv6 /48 in /118 blocks: 2^70 blocks, half a block is 512 addresses.
        let spec = PoolSpec {
            cidr: "fd00::/48".into(),
            block_size: Some(118),
            ..Default::default()
        };
        let pool = Pool::parse("v6", &spec).unwrap();
        assert_eq!(pool.claim_ahead_reserve(1_000_000), 512);
    }

    #[test]
    fn a_missing_block_is_claimed_first() {
        let blocks = [summary("10.0.0.0/28", false, 3)];
        assert_eq!(
            pool(false).next_step("n1", &blocks, at(0)),
            NextStep::Claim("10.0.0.16/28".parse().unwrap())
        );
    }

    #[test]
    fn with_every_block_claimed_the_emptiest_foreign_block_is_borrowed_from_first() {
        let p = pool(false);
        let full = p.block_capacity(&"10.0.0.0/28".parse().unwrap());
        let blocks = [
            summary("10.0.0.0/28", false, full - 2),
            summary("10.0.0.16/28", false, 1),
        ];
        assert_eq!(
            p.next_step("n1", &blocks, at(0)),
            NextStep::Borrow(vec!["p.10.0.0.16/28".into(), "p.10.0.0.0/28".into()])
        );
        assert_eq!(
            pool(true).next_step("n1", &blocks, at(0)),
            NextStep::NoBlockForNode { in_use: full - 1 }
        );
    }

    #[test]
    fn full_blocks_and_cooling_addresses_are_exhaustion_until_the_cooldown_ends() {
        let p = pool(false);
        let cap = |c: &str| p.block_capacity(&c.parse().unwrap());
        let mut cooling = summary("10.0.0.16/28", false, cap("10.0.0.16/28") - 2);
        cooling.released = 2;
        cooling.last_release = Some(at(0));
        let blocks = [summary("10.0.0.0/28", true, cap("10.0.0.0/28")), cooling];
        let NextStep::Exhausted(error) = p.next_step("n1", &blocks, at(29)) else {
            panic!("cooling-down addresses are not room");
        };
        assert_eq!(
            error,
            AllocError::PoolExhausted {
                pool: "p".into(),
                capacity: p.capacity(),
                in_use: p.capacity() - 2,
                cooling: 2,
            }
        );
        assert!(error.to_string().contains("2 cool down"), "{error}");
        assert_eq!(
            p.next_step("n1", &blocks, at(30)),
            NextStep::Borrow(vec!["p.10.0.0.16/28".into()])
        );
    }
}
