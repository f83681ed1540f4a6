//! Choosing the next block of a pool for a node to claim.

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::Pool;
use crate::addr::{self, Span};

impl Pool {
    /// The first claimable block at or after a start derived from `node` (wrapping
    /// around the pool) whose CIDR is not among `existing`; `None` when every block
    /// exists or has nothing allocatable.
    ///
    /// The start is a stable hash of the node name, so nodes spread over the pool
    /// instead of racing for its first block. The cost is linear in the number of
    /// existing blocks (plus n log n in exclusions), never in the number of blocks: an
    /// IPv6 /48 pool has 2^74 of them. Entries of `existing` outside the pool are
    /// ignored; a CIDR of another size blocks every block it overlaps. `disabled` is
    /// not looked at: callers claim nothing for a disabled pool, and allocation from
    /// its blocks is refused anyway.
    pub fn next_free_block(&self, node: &str, existing: &[IpNet]) -> Option<IpNet> {
        // Positions count blocks from the start, wrapping: position 0 is the start.
        let count = self.block_count();
        let mask = count - 1;
        let start = node_start(node) & mask;
        let position = |index: u128| index.wrapping_sub(start) & mask;

        // Ranges of blocks never to offer: unclaimable ones, and existing CIDRs that
        // cover more than one block. Single existing blocks are kept as points.
        let mut points = Vec::with_capacity(existing.len());
        let mut ranges: Vec<Span> = self.unclaimable().to_vec();
        for net in existing {
            match self.block_indices(net) {
                Some(span) if span.first == span.last => points.push(position(span.first)),
                Some(span) => ranges.push(span),
                None => {}
            }
        }
        let mut rotated = Vec::with_capacity(ranges.len() + 1);
        for span in ranges {
            let (first, last) = (position(span.first), position(span.last));
            if first <= last {
                rotated.push(Span { first, last });
            } else {
                // The range holds the start: it wraps around the end of the pool.
                rotated.push(Span { first, last: mask });
                rotated.push(Span { first: 0, last });
            }
        }
        let rotated = addr::merge(rotated);
        let mut before = Vec::with_capacity(rotated.len() + 1);
        let mut sum = 0u128;
        for span in &rotated {
            before.push(sum);
            sum += span.len().unwrap_or(u128::MAX);
        }
        let claimable = count - sum;

        // Number the positions outside the ranges 0, 1, 2, ...; the answer is the
        // smallest number no existing block has, which is at most `points.len()`.
        let mut used = vec![false; points.len() + 1];
        for point in points {
            let j = rotated.partition_point(|s| s.last < point);
            if rotated.get(j).is_some_and(|s| s.first <= point) {
                continue;
            }
            let rank = point - before.get(j).copied().unwrap_or(sum);
            if let Some(slot) = usize::try_from(rank).ok().and_then(|r| used.get_mut(r)) {
                *slot = true;
            }
        }
        let rank = used.iter().position(|u| !u).unwrap_or(used.len()) as u128;
        if rank >= claimable {
            return None;
        }
        let mut found = rank;
        for span in &rotated {
            if span.first > found {
                break;
            }
            found += span.len().unwrap_or(u128::MAX);
        }
        Some(self.block_at((found + start) & mask))
    }

    /// The indices of the blocks `net` overlaps, if it overlaps the pool.
    fn block_indices(&self, net: &IpNet) -> Option<Span> {
        let overlap = Span::of_net(&self.cidr()).intersect(&Span::of_net(net))?;
        if !addr::same_family(net.network(), self.cidr().network()) {
            return None;
        }
        let base = addr::to_int(self.cidr().network());
        let host_bits = u32::from(self.cidr().max_prefix_len() - self.block_prefix());
        Some(Span {
            first: (overlap.first - base) >> host_bits,
            last: (overlap.last - base) >> host_bits,
        })
    }

    /// The block with index `index` (counted from the pool's first address).
    fn block_at(&self, index: u128) -> IpNet {
        let host_bits = u32::from(self.cidr().max_prefix_len() - self.block_prefix());
        let base = addr::to_int(self.cidr().network());
        let first = addr::from_int(base + (index << host_bits), self.cidr().network());
        IpNet::new(first, self.block_prefix()).expect("block prefix is valid for the family")
    }
}

/// A stable, well-spread 128-bit number from a node name (the first 16 bytes of its
/// SHA-256), so a node starts its search at the same block on every restart.
fn node_start(node: &str) -> u128 {
    let hash = Sha256::digest(node.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    u128::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::PoolSpec;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn pool(cidr: &str, block: u8, exclude: &[&str]) -> Pool {
        let spec = PoolSpec {
            cidr: cidr.into(),
            block_size: Some(block),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        Pool::parse("p", &spec).unwrap()
    }

    #[test]
    fn start_is_stable_and_spread() {
        let p = pool("10.0.0.0/16", 26, &[]);
        let a = p.next_free_block("node-a", &[]).unwrap();
        assert_eq!(p.next_free_block("node-a", &[]), Some(a));
        let starts: std::collections::HashSet<_> = (0..50)
            .map(|i| p.next_free_block(&format!("node-{i}"), &[]))
            .collect();
        assert!(
            starts.len() > 40,
            "50 nodes share only {} starts",
            starts.len()
        );
    }

    #[test]
    fn skips_existing_blocks_and_wraps() {
        let p = pool("10.0.0.0/24", 26, &[]);
        let all: Vec<IpNet> = net("10.0.0.0/24").subnets(26).unwrap().collect();
        let first = p.next_free_block("n", &[]).unwrap();
        let mut existing = vec![first];
        let mut seen = vec![first];
        while let Some(next) = p.next_free_block("n", &existing) {
            assert!(!existing.contains(&next) && all.contains(&next));
            existing.push(next);
            seen.push(next);
        }
        assert_eq!(seen.len(), 4);
        // The search goes forward from the start, wrapping around.
        let i = all.iter().position(|b| *b == first).unwrap();
        let expected: Vec<IpNet> = (0..4).map(|k| all[(i + k) % 4]).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn wholly_excluded_blocks_are_never_offered() {
        // Only 10.0.0.64/26 has allocatable addresses.
        let p = pool("10.0.0.0/24", 26, &["10.0.0.0/26", "10.0.0.128/25"]);
        for node in ["a", "b", "c", "d", "e"] {
            assert_eq!(p.next_free_block(node, &[]), Some(net("10.0.0.64/26")));
            assert_eq!(p.next_free_block(node, &[net("10.0.0.64/26")]), None);
        }
    }

    #[test]
    fn a_pool_that_is_one_block() {
        let p = pool("10.0.0.0/26", 26, &[]);
        assert_eq!(p.block_count(), 1);
        assert_eq!(p.next_free_block("x", &[]), Some(net("10.0.0.0/26")));
        assert_eq!(p.next_free_block("x", &[net("10.0.0.0/26")]), None);
        let p = pool("fd00::5/128", 128, &[]);
        assert_eq!(p.next_free_block("x", &[]), Some(net("fd00::5/128")));
    }

    #[test]
    fn huge_ipv6_pool_with_a_run_of_existing_blocks() {
        let p = pool("fd00:1::/48", 122, &[]);
        let index = |b: IpNet| (addr::to_int(b.network()) - addr::to_int(p.cidr().network())) >> 6;
        let start = index(p.next_free_block("node", &[]).unwrap());
        // Claiming 1000 blocks from one node takes them in a row from its start.
        let mut run = Vec::new();
        for k in 0..1000u128 {
            let next = p.next_free_block("node", &run).unwrap();
            assert_eq!(index(next), (start + k) % p.block_count());
            run.push(next);
        }
    }

    #[test]
    fn foreign_and_oversized_existing_entries() {
        let p = pool("10.0.0.0/24", 26, &[]);
        // Another family and another range are ignored; a /25 takes two blocks.
        let existing = [
            net("fd00::/122"),
            net("10.1.0.0/26"),
            net("10.0.0.0/25"),
            net("10.0.0.128/26"),
        ];
        assert_eq!(
            p.next_free_block("n", &existing),
            Some(net("10.0.0.192/26"))
        );
    }
}
