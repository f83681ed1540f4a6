//! Choosing the next block of a pool for a node to claim.

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use super::Pool;
use super::addr::{self, Span};

impl Pool {
    /// The first claimable block at or after a start derived from `node` (wrapping
    /// around the pool) whose CIDR is not among `existing`; `None` when every block
    /// exists or has nothing allocatable.
    ///
    /// The start is a stable hash of the node name, so nodes spread over the pool
    /// instead of racing for its first block. The cost is O(n log n) in the number
    /// of existing blocks and exclusions, never in the number of blocks: an IPv6 /48
    /// pool has 2^74 of them. Entries of `existing` outside the pool are ignored; a
    /// CIDR of another size blocks every block it overlaps.
    pub fn next_free_block(&self, node: &str, existing: &[IpNet]) -> Option<IpNet> {
        let count = self.block_count();
        let start = node_start(node) & (count - 1);
        let mut taken: Vec<Span> = Vec::with_capacity(existing.len() + self.unclaimable().len());
        taken.extend(existing.iter().filter_map(|net| self.block_indices(net)));
        taken.extend_from_slice(self.unclaimable());
        let taken = addr::merge(taken);
        let index = first_free(&taken, start, count - 1).or_else(|| {
            start
                .checked_sub(1)
                .and_then(|end| first_free(&taken, 0, end))
        })?;
        Some(self.block_at(index))
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

/// The first index in `lo..=hi` not in `taken` (sorted, disjoint).
fn first_free(taken: &[Span], lo: u128, hi: u128) -> Option<u128> {
    let mut candidate = lo;
    let from = taken.partition_point(|s| s.last < lo);
    for span in &taken[from..] {
        if span.first > candidate {
            break;
        }
        // Spans are merged, so the next one starts after this one's end + 1.
        candidate = span.last.checked_add(1)?;
    }
    (candidate <= hi).then_some(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::IPPoolSpec;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn pool(cidr: &str, block: u8, exclude: &[&str]) -> Pool {
        let spec = IPPoolSpec {
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
