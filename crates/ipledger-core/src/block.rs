//! `Block`: the allocations of one block of a pool, and the decisions made on them
//! (round-robin allocation, requested addresses, release, reuse cooldown).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use jiff::{RoundMode, Timestamp, TimestampRound, Unit};

use crate::record::{AllocationRecord, BlockRecord, PodRef, ReleasedRecord};

use crate::addr::{self, Span};
use crate::attachment::check_pod;
use crate::{AllocError, Attachment, BlockError, FieldError, Pool};

/// One allocated address and who holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// The allocated address.
    pub address: IpAddr,
    /// The attachment holding it.
    pub attachment: Attachment,
    /// The pod, when the runtime named it.
    pub pod: Option<PodRef>,
    /// When it was allocated (whole seconds, as the ledger stores it).
    pub allocated_at: Timestamp,
    /// The node whose pod holds it, when that is not the block's node (a borrowed
    /// address); only that node's runtime can tell whether the attachment lives.
    pub node: Option<String>,
}

/// One block of a pool: its allocations and its recently released addresses.
///
/// Memory is proportional to the allocations and releases, never to the block's or
/// the pool's size. An address is either allocated, cooling down, or neither.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pool: String,
    cidr: IpNet,
    node: String,
    last_allocated: Option<IpAddr>,
    /// Allocations keyed by the address's integer value.
    by_address: BTreeMap<u128, Allocation>,
    /// The address value each attachment holds, for idempotent ADD and DEL.
    by_attachment: HashMap<Attachment, u128>,
    /// Released address values and when they were released.
    released: BTreeMap<u128, Timestamp>,
}

impl Block {
    /// A new, empty block `cidr` of `pool`, affine to `node`.
    pub fn new(pool: &Pool, cidr: IpNet, node: &str) -> Result<Block, AllocError> {
        let block = Block {
            pool: pool.name().to_string(),
            cidr,
            node: node.to_string(),
            last_allocated: None,
            by_address: BTreeMap::new(),
            by_attachment: HashMap::new(),
            released: BTreeMap::new(),
        };
        block.check_pool(pool)?;
        Ok(block)
    }

    /// Reads a ledger record; the error lists every inconsistent field.
    pub fn from_record(spec: &BlockRecord) -> Result<Block, BlockError> {
        let mut errors = Vec::new();
        let cidr = spec.cidr;
        if cidr.addr() != cidr.network() {
            errors.push(FieldError::new(
                "spec.cidr",
                format!("{cidr} is not a network address"),
            ));
        }
        if spec.pool.is_empty() {
            errors.push(FieldError::new("spec.pool", "must not be empty"));
        }
        let mut block = Block {
            pool: spec.pool.clone(),
            cidr: cidr.trunc(),
            node: spec.node.clone(),
            last_allocated: spec.last_allocated,
            by_address: BTreeMap::new(),
            by_attachment: HashMap::new(),
            released: BTreeMap::new(),
        };
        if let Some(ip) = spec.last_allocated.filter(|ip| !block.cidr.contains(ip)) {
            errors.push(FieldError::new(
                "spec.lastAllocated",
                format!("{ip} is outside the block"),
            ));
        }
        for (i, record) in spec.allocations.iter().enumerate() {
            let field = |name: &str| format!("spec.allocations[{i}].{name}");
            let value = addr::to_int(record.address);
            let attachment =
                Attachment::new(&record.network, &record.container_id, &record.if_name);
            let problem = if !block.cidr.contains(&record.address) {
                Some(FieldError::new(
                    field("address"),
                    format!("{} is outside the block", record.address),
                ))
            } else if block.by_address.contains_key(&value) {
                Some(FieldError::new(
                    field("address"),
                    format!("{} is allocated twice", record.address),
                ))
            } else if let Err(e) = &attachment {
                Some(FieldError::new(field(&e.field), e.problem.clone()))
            } else if let Some(Err(e)) = record.pod.as_ref().map(check_pod) {
                Some(FieldError::new(field(&e.field), e.problem))
            } else {
                None
            };
            if let Some(problem) = problem {
                errors.push(problem);
                continue;
            }
            let Ok(attachment) = attachment else { continue };
            if block
                .by_attachment
                .insert(attachment.clone(), value)
                .is_some()
            {
                errors.push(FieldError::new(
                    field("containerID"),
                    format!("{attachment} holds two addresses"),
                ));
                continue;
            }
            block.by_address.insert(
                value,
                Allocation {
                    address: record.address,
                    attachment,
                    pod: record.pod.clone(),
                    allocated_at: record.allocated_at,
                    node: record.node.clone(),
                },
            );
        }
        for (i, released) in spec.released.iter().enumerate() {
            let field = format!("spec.released[{i}].address");
            let value = addr::to_int(released.address);
            if !block.cidr.contains(&released.address) {
                errors.push(FieldError::new(
                    field,
                    format!("{} is outside the block", released.address),
                ));
            } else if block.by_address.contains_key(&value) {
                errors.push(FieldError::new(
                    field,
                    format!("{} is also allocated", released.address),
                ));
            } else if block.released.insert(value, released.released_at).is_some() {
                errors.push(FieldError::new(
                    field,
                    format!("{} is released twice", released.address),
                ));
            }
        }
        if errors.is_empty() {
            Ok(block)
        } else {
            Err(BlockError {
                block: cidr,
                errors,
            })
        }
    }

    /// The ledger record of this block, allocations and releases in address order.
    pub fn to_record(&self) -> BlockRecord {
        BlockRecord {
            pool: self.pool.clone(),
            cidr: self.cidr,
            node: self.node.clone(),
            last_allocated: self.last_allocated,
            allocations: self
                .by_address
                .values()
                .map(|a| AllocationRecord {
                    address: a.address,
                    network: a.attachment.network().to_string(),
                    container_id: a.attachment.container_id().to_string(),
                    if_name: a.attachment.if_name().to_string(),
                    pod: a.pod.clone(),
                    allocated_at: a.allocated_at,
                    node: a.node.clone(),
                })
                .collect(),
            released: self
                .released
                .iter()
                .map(|(value, at)| ReleasedRecord {
                    address: addr::from_int(*value, self.cidr.network()),
                    released_at: *at,
                })
                .collect(),
        }
    }

    /// Name of the pool the block is cut from.
    pub fn pool(&self) -> &str {
        &self.pool
    }

    /// The block's range.
    pub fn cidr(&self) -> IpNet {
        self.cidr
    }

    /// The node the block is affine to.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The last address handed out by round-robin allocation.
    pub fn last_allocated(&self) -> Option<IpAddr> {
        self.last_allocated
    }

    /// Every allocation, in address order.
    pub fn allocations(&self) -> impl Iterator<Item = &Allocation> {
        self.by_address.values()
    }

    /// Number of allocated addresses.
    pub fn in_use(&self) -> usize {
        self.by_address.len()
    }

    /// True when nothing is allocated (released addresses may still cool down).
    pub fn is_empty(&self) -> bool {
        self.by_address.is_empty()
    }

    /// The allocation held by `attachment`, if any.
    pub fn find(&self, attachment: &Attachment) -> Option<&Allocation> {
        let value = self.by_attachment.get(attachment)?;
        self.by_address.get(value)
    }

    /// The allocation of `address`, if any.
    pub fn holder(&self, address: IpAddr) -> Option<&Allocation> {
        self.by_address
            .get(&addr::to_int(address))
            .filter(|a| a.address == address)
    }

    /// Allocates the next free address after the last allocated one (round-robin),
    /// skipping reserved, held and cooling-down addresses. An attachment that already
    /// holds an address gets that address back (idempotent ADD).
    ///
    /// The cost is proportional to the block's allocations, releases and reserved
    /// ranges, not to its size: reserved ranges are skipped in one step, runs of held
    /// addresses in one ordered walk.
    pub fn allocate(
        &mut self,
        pool: &Pool,
        attachment: &Attachment,
        pod: Option<&PodRef>,
        now: Timestamp,
    ) -> Result<IpAddr, AllocError> {
        self.check_pool(pool)?;
        if let Some(held) = self.find(attachment) {
            return Ok(held.address);
        }
        if pool.is_disabled() {
            return Err(AllocError::PoolDisabled {
                pool: pool.name().to_string(),
            });
        }
        if let Some(pod) = pod {
            check_pod(pod)?;
        }
        self.prune_cooldowns(pool, now);
        let block = Span::of_net(&self.cidr);
        let size = block.len().unwrap_or(u128::MAX);
        let mut offset = match self.last_allocated {
            Some(ip) if self.cidr.contains(&ip) => (addr::to_int(ip) - block.first + 1) % size,
            _ => 0,
        };
        let mut visited: u128 = 0;
        let mut cooling: u128 = 0;
        while visited < size {
            let value = block.first + offset;
            if let Some(span) = pool.reserved_span(value) {
                // Jump over the whole reserved range (or to the block's end).
                let end = span.last.min(block.last) - block.first;
                visited += end - offset + 1;
                offset = (end + 1) % size;
                continue;
            }
            if let Some(end) = self.allocated_run_end(value, block.last) {
                // Pass over the whole run of held addresses in one ordered walk.
                let end = end - block.first;
                visited += end - offset + 1;
                offset = (end + 1) % size;
                continue;
            }
            if !self.released.contains_key(&value) {
                let ip = addr::from_int(value, self.cidr.network());
                self.take(ip, attachment, pod, now);
                self.last_allocated = Some(ip);
                return Ok(ip);
            }
            cooling += 1;
            visited += 1;
            offset = (offset + 1) % size;
        }
        Err(AllocError::BlockFull {
            block: self.cidr,
            capacity: pool.block_capacity(&self.cidr),
            in_use: self.by_address.len() as u128,
            cooling,
        })
    }

    /// Allocates `address` to `attachment` or says precisely why not. An attachment
    /// that already holds `address` gets it back (idempotent ADD).
    ///
    /// A requested address does not bypass the reuse cooldown: the pool promises that
    /// a released address is not handed out again before it ends, and the runtime
    /// retries the ADD, which succeeds once the cooldown is over.
    pub fn allocate_requested(
        &mut self,
        pool: &Pool,
        address: IpAddr,
        attachment: &Attachment,
        pod: Option<&PodRef>,
        now: Timestamp,
    ) -> Result<IpAddr, AllocError> {
        self.check_pool(pool)?;
        if let Some(v4) = addr::mapped_v4(address) {
            return Err(AllocError::Ipv4Mapped {
                address,
                v4: IpAddr::V4(v4),
            });
        }
        if !pool.contains(address) {
            return Err(AllocError::OutsidePool {
                address,
                pool: pool.name().to_string(),
                cidr: pool.cidr(),
            });
        }
        if !self.cidr.contains(&address) {
            return Err(AllocError::OutsideBlock {
                address,
                block: self.cidr,
            });
        }
        if let Some(held) = self.find(attachment) {
            if held.address == address {
                return Ok(address);
            }
            return Err(AllocError::HoldsOther {
                attachment: attachment.clone(),
                held: held.address,
                requested: address,
            });
        }
        if pool.is_disabled() {
            return Err(AllocError::PoolDisabled {
                pool: pool.name().to_string(),
            });
        }
        if let Some(pod) = pod {
            check_pod(pod)?;
        }
        if let Some(reason) = pool.reserved_reason(address) {
            return Err(reason);
        }
        if let Some(holder) = self.holder(address) {
            return Err(AllocError::Taken {
                address,
                holder: holder.attachment.clone(),
            });
        }
        self.prune_cooldowns(pool, now);
        if let Some(at) = self.released.get(&addr::to_int(address)) {
            return Err(AllocError::CoolingDown {
                address,
                until: cooldown_end(*at, pool),
            });
        }
        self.take(address, attachment, pod, now);
        Ok(address)
    }

    /// Releases the address `attachment` holds and starts its cooldown; `None` when
    /// it holds nothing here (DEL succeeds all the same).
    pub fn release(&mut self, attachment: &Attachment, now: Timestamp) -> Option<IpAddr> {
        let value = self.by_attachment.remove(attachment)?;
        let allocation = self.by_address.remove(&value)?;
        // Rounded up: the ledger stores whole seconds, and rounding down would end the
        // cooldown early after a round trip through the API.
        self.released.insert(value, round(now, RoundMode::Ceil));
        Some(allocation.address)
    }

    /// Releases exactly `record`: the address only while the same attachment holds it
    /// since the same time. An address released and allocated again since `record` was
    /// read (another attachment, or the same one by a later ADD) is left alone. Returns
    /// whether it was released.
    pub fn release_record(&mut self, record: &Allocation, now: Timestamp) -> bool {
        let same = self.holder(record.address).is_some_and(|held| {
            held.attachment == record.attachment && held.allocated_at == record.allocated_at
        });
        same && self.release(&record.attachment, now).is_some()
    }

    /// True when some released address is still cooling down at `now`.
    pub fn is_cooling(&self, pool: &Pool, now: Timestamp) -> bool {
        self.released
            .values()
            .any(|at| now < cooldown_end(*at, pool))
    }

    /// Released addresses still cooling down at `now`, with when each cooldown ends.
    pub fn cooling_down(&self, pool: &Pool, now: Timestamp) -> Vec<(IpAddr, Timestamp)> {
        self.released
            .iter()
            .map(|(value, at)| {
                (
                    addr::from_int(*value, self.cidr.network()),
                    cooldown_end(*at, pool),
                )
            })
            .filter(|(_, until)| now < *until)
            .collect()
    }

    /// Forgets released addresses whose cooldown ended by `now`; returns them.
    pub fn prune_cooldowns(&mut self, pool: &Pool, now: Timestamp) -> Vec<IpAddr> {
        let mut expired = Vec::new();
        let network = self.cidr.network();
        self.released.retain(|value, at| {
            let cooling = now < cooldown_end(*at, pool);
            if !cooling {
                expired.push(addr::from_int(*value, network));
            }
            cooling
        });
        expired
    }

    /// The last address of the run of consecutive held addresses starting at `value`
    /// (not beyond `last`), or `None` when `value` is not held.
    fn allocated_run_end(&self, value: u128, last: u128) -> Option<u128> {
        let mut end = None;
        for held in self.by_address.range(value..=last).map(|(v, _)| *v) {
            if held != end.map_or(value, |e: u128| e + 1) {
                break;
            }
            end = Some(held);
        }
        end
    }

    /// Refuses a block used with a pool it does not belong to.
    fn check_pool(&self, pool: &Pool) -> Result<(), AllocError> {
        // Any aligned range inside the pool works for the core; only `Pool::parse`
        // bounds the block size, for the ledger object's sake.
        if self.pool == pool.name()
            && self.cidr.addr() == self.cidr.network()
            && pool.cidr().contains(&self.cidr)
        {
            Ok(())
        } else {
            Err(AllocError::WrongPool {
                block: self.cidr,
                pool: pool.name().to_string(),
            })
        }
    }

    /// Records `ip` as held by `attachment`.
    fn take(&mut self, ip: IpAddr, attachment: &Attachment, pod: Option<&PodRef>, now: Timestamp) {
        let value = addr::to_int(ip);
        self.released.remove(&value);
        self.by_attachment.insert(attachment.clone(), value);
        self.by_address.insert(
            value,
            Allocation {
                address: ip,
                attachment: attachment.clone(),
                pod: pod.cloned(),
                allocated_at: round(now, RoundMode::Floor),
                node: None,
            },
        );
    }

    /// Records that `address` is held for a pod of `node`, another node than the
    /// block's (a borrowed address); nothing happens when `address` is not held.
    pub fn lend(&mut self, address: IpAddr, node: &str) {
        let lent_to = (node != self.node).then(|| node.to_string());
        if let Some(allocation) = self.by_address.get_mut(&addr::to_int(address)) {
            allocation.node = lent_to;
        }
    }
}

/// When the cooldown of an address released at `at` ends; never, if that is beyond
/// the representable range.
fn cooldown_end(at: Timestamp, pool: &Pool) -> Timestamp {
    // No cooldown means no wait at all, not "until the second the release was rounded
    // up to": a pool with reuseCooldownSeconds 0 reuses a released address at once.
    if pool.reuse_cooldown().is_zero() {
        return Timestamp::MIN;
    }
    at.checked_add(pool.reuse_cooldown())
        .unwrap_or(Timestamp::MAX)
}

/// `t` rounded to whole seconds, as the ledger's `Time` serializes it.
fn round(t: Timestamp, mode: RoundMode) -> Timestamp {
    t.round(TimestampRound::new().smallest(Unit::Second).mode(mode))
        .unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::PoolSpec;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn pool_with(cidr: &str, block: u8, f: impl FnOnce(&mut PoolSpec)) -> Pool {
        let mut spec = PoolSpec {
            cidr: cidr.into(),
            block_size: Some(block),
            ..Default::default()
        };
        f(&mut spec);
        Pool::parse("p", &spec).unwrap()
    }

    fn att(id: &str) -> Attachment {
        Attachment::new("net", id, "eth0").unwrap()
    }

    fn pod() -> PodRef {
        PodRef {
            namespace: "default".into(),
            name: "web-0".into(),
            uid: Some("6b1f0c2e-0000-4000-8000-000000000001".into()),
        }
    }

    #[test]
    fn without_cooldown_a_released_address_is_reusable_at_once() {
        let pool = pool_with("10.0.0.0/30", 30, |s| s.reuse_cooldown_seconds = Some(0));
        let mut block = Block::new(&pool, net("10.0.0.0/30"), "n1").unwrap();
        let now = at(0)
            .checked_add(jiff::SignedDuration::from_millis(400))
            .unwrap();
        let first = block.allocate(&pool, &att("a"), None, now).unwrap();
        block.allocate(&pool, &att("b"), None, now).unwrap();
        assert_eq!(block.release(&att("a"), now), Some(first));
        assert_eq!(block.allocate(&pool, &att("c"), None, now), Ok(first));
    }

    #[test]
    fn lent_addresses_name_the_borrowing_node_in_the_ledger() {
        let pool = pool_with("10.0.0.0/29", 29, |_| {});
        let mut block = Block::new(&pool, net("10.0.0.0/29"), "n1").unwrap();
        let own = block.allocate(&pool, &att("a"), None, at(0)).unwrap();
        let lent = block.allocate(&pool, &att("b"), None, at(0)).unwrap();
        block.lend(lent, "n2");
        block.lend(own, "n1");
        let spec = block.to_record();
        let node_of = |ip| {
            spec.allocations
                .iter()
                .find(|r| r.address == ip)
                .unwrap()
                .node
                .clone()
        };
        assert_eq!(node_of(own), None, "the block's own node is implied");
        assert_eq!(node_of(lent), Some("n2".to_string()));
        assert_eq!(
            Block::from_record(&spec).unwrap(),
            block,
            "the borrower survives a round trip"
        );
    }

    #[test]
    fn round_robin_skips_network_gateway_and_exclusions() {
        let pool = pool_with("10.0.0.0/29", 29, |s| {
            s.gateway = Some("10.0.0.1".into());
            s.exclude = vec!["10.0.0.3".into()];
        });
        let mut block = Block::new(&pool, net("10.0.0.0/29"), "n1").unwrap();
        let got: Vec<IpAddr> = ["a", "b", "c", "d"]
            .iter()
            .map(|id| {
                block
                    .allocate(&pool, &att(id), Some(&pod()), at(0))
                    .unwrap()
            })
            .collect();
        assert_eq!(
            got,
            [
                ip("10.0.0.2"),
                ip("10.0.0.4"),
                ip("10.0.0.5"),
                ip("10.0.0.6")
            ]
        );
        let full = block.allocate(&pool, &att("e"), None, at(0)).unwrap_err();
        assert_eq!(
            full,
            AllocError::BlockFull {
                block: net("10.0.0.0/29"),
                capacity: 4,
                in_use: 4,
                cooling: 0
            }
        );
    }

    #[test]
    fn round_robin_continues_after_the_last_allocated() {
        let pool = pool_with("10.0.0.0/24", 26, |s| s.reuse_cooldown_seconds = Some(0));
        let mut block = Block::new(&pool, net("10.0.0.64/26"), "n1").unwrap();
        let first = block.allocate(&pool, &att("a"), None, at(0)).unwrap();
        assert_eq!(first, ip("10.0.0.64"));
        block.release(&att("a"), at(0));
        // Not the freed .64 again: the next one after it.
        assert_eq!(
            block.allocate(&pool, &att("b"), None, at(1)).unwrap(),
            ip("10.0.0.65")
        );
        assert_eq!(block.last_allocated(), Some(ip("10.0.0.65")));
    }

    #[test]
    fn add_is_idempotent_and_del_too() {
        let pool = pool_with("fd00::/120", 120, |_| {});
        let mut block = Block::new(&pool, net("fd00::/120"), "n1").unwrap();
        let a = block
            .allocate(&pool, &att("a"), Some(&pod()), at(0))
            .unwrap();
        let before = block.clone();
        assert_eq!(block.allocate(&pool, &att("a"), None, at(5)).unwrap(), a);
        assert_eq!(
            block.allocate_requested(&pool, a, &att("a"), None, at(5)),
            Ok(a)
        );
        assert_eq!(block, before, "a repeated ADD changes nothing");
        assert_eq!(block.find(&att("a")).map(|x| x.address), Some(a));
        assert_eq!(block.release(&att("a"), at(6)), Some(a));
        let after = block.clone();
        assert_eq!(block.release(&att("a"), at(7)), None);
        assert_eq!(block, after, "a repeated DEL changes nothing");
        assert_eq!(block.find(&att("a")), None);
    }

    #[test]
    fn cooldown_holds_an_address_back_then_lets_it_go() {
        let pool = pool_with("10.0.0.0/30", 30, |s| s.reuse_cooldown_seconds = Some(30));
        // Two usable addresses: .1 and .2.
        let mut block = Block::new(&pool, net("10.0.0.0/30"), "n1").unwrap();
        let a = block.allocate(&pool, &att("a"), None, at(0)).unwrap();
        let b = block.allocate(&pool, &att("b"), None, at(0)).unwrap();
        block.release(&att("a"), at(10));
        assert_eq!(block.cooling_down(&pool, at(20)), vec![(a, at(40))]);
        assert_eq!(
            block.allocate(&pool, &att("c"), None, at(39)).unwrap_err(),
            AllocError::BlockFull {
                block: net("10.0.0.0/30"),
                capacity: 2,
                in_use: 1,
                cooling: 1
            }
        );
        assert_eq!(
            block
                .allocate_requested(&pool, a, &att("c"), None, at(39))
                .unwrap_err(),
            AllocError::CoolingDown {
                address: a,
                until: at(40)
            }
        );
        assert_eq!(block.allocate(&pool, &att("c"), None, at(40)).unwrap(), a);
        assert!(block.cooling_down(&pool, at(40)).is_empty());
        assert_ne!(a, b);
    }

    #[test]
    fn release_rounds_up_and_allocation_rounds_down_to_whole_seconds() {
        let pool = pool_with("10.0.0.0/30", 30, |_| {});
        let mut block = Block::new(&pool, net("10.0.0.0/30"), "n1").unwrap();
        let half = at(0)
            .checked_add(jiff::SignedDuration::from_millis(500))
            .unwrap();
        block.allocate(&pool, &att("a"), None, half).unwrap();
        assert_eq!(block.find(&att("a")).unwrap().allocated_at, at(0));
        block.release(&att("a"), half);
        assert_eq!(block.cooling_down(&pool, half)[0].1, at(31));
        let back = Block::from_record(&block.to_record()).unwrap();
        assert_eq!(back, block);
    }

    #[test]
    fn prune_forgets_only_expired_releases() {
        let pool = pool_with("10.0.0.0/29", 29, |_| {});
        let mut block = Block::new(&pool, net("10.0.0.0/29"), "n1").unwrap();
        for id in ["a", "b"] {
            block.allocate(&pool, &att(id), None, at(0)).unwrap();
        }
        block.release(&att("a"), at(0));
        block.release(&att("b"), at(20));
        assert_eq!(block.prune_cooldowns(&pool, at(30)), vec![ip("10.0.0.1")]);
        assert_eq!(block.to_record().released.len(), 1);
        assert!(block.prune_cooldowns(&pool, at(30)).is_empty());
    }

    #[test]
    fn requested_addresses_are_refused_precisely() {
        let pool = pool_with("10.0.0.0/24", 26, |s| {
            s.gateway = Some("10.0.0.1".into());
            s.exclude = vec!["10.0.0.10-10.0.0.12".into()];
        });
        let mut first = Block::new(&pool, net("10.0.0.0/26"), "n1").unwrap();
        let mut last = Block::new(&pool, net("10.0.0.192/26"), "n1").unwrap();
        first
            .allocate_requested(&pool, ip("10.0.0.5"), &att("a"), None, at(0))
            .unwrap();
        let refuse = |b: &mut Block, addr: &str, id: &str| {
            b.allocate_requested(&pool, ip(addr), &att(id), None, at(0))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            refuse(&mut first, "10.0.0.0", "b"),
            "requested address 10.0.0.0 is the network address of 10.0.0.0/24"
        );
        assert_eq!(
            refuse(&mut last, "10.0.0.255", "b"),
            "requested address 10.0.0.255 is the broadcast address of 10.0.0.0/24"
        );
        assert_eq!(
            refuse(&mut first, "10.0.0.1", "b"),
            "requested address 10.0.0.1 is the gateway of IPPool p"
        );
        assert_eq!(
            refuse(&mut first, "10.0.0.11", "b"),
            "requested address 10.0.0.11 is excluded from IPPool p"
        );
        assert_eq!(
            refuse(&mut first, "10.0.1.1", "b"),
            "requested address 10.0.1.1 is outside IPPool p (10.0.0.0/24)"
        );
        assert_eq!(
            refuse(&mut first, "fd00::1", "b"),
            "requested address fd00::1 is outside IPPool p (10.0.0.0/24)"
        );
        assert_eq!(
            refuse(&mut first, "10.0.0.70", "b"),
            "requested address 10.0.0.70 is outside block 10.0.0.0/26"
        );
        assert_eq!(
            refuse(&mut first, "::ffff:10.0.0.7", "b"),
            "requested address ::ffff:10.0.0.7 is an IPv4-mapped IPv6 address; request 10.0.0.7 instead"
        );
        assert_eq!(
            refuse(&mut first, "10.0.0.5", "b"),
            "requested address 10.0.0.5 is taken by attachment (network net, containerID a, ifName eth0)"
        );
        assert_eq!(
            refuse(&mut first, "10.0.0.6", "a"),
            "attachment (network net, containerID a, ifName eth0) already holds 10.0.0.5, not the requested 10.0.0.6"
        );
        assert_eq!(first.in_use(), 1);
        assert_eq!(last.in_use(), 0);
    }

    #[test]
    fn gateway_at_block_edges_is_skipped() {
        let pool = pool_with("10.0.0.0/16", 30, |s| s.gateway = Some("10.0.0.7".into()));
        // Block 10.0.0.4/30: .7 is its last address and the gateway.
        let mut block = Block::new(&pool, net("10.0.0.4/30"), "n1").unwrap();
        let got: Vec<IpAddr> = ["a", "b", "c"]
            .iter()
            .map(|id| block.allocate(&pool, &att(id), None, at(0)).unwrap())
            .collect();
        assert_eq!(got, [ip("10.0.0.4"), ip("10.0.0.5"), ip("10.0.0.6")]);
        assert!(matches!(
            block.allocate(&pool, &att("d"), None, at(0)),
            Err(AllocError::BlockFull { capacity: 3, .. })
        ));
        // Block 10.0.0.8/30 starts right after the gateway; a gateway at a block's
        // first address is skipped the same way.
        let pool = pool_with("10.0.0.0/16", 30, |s| s.gateway = Some("10.0.0.8".into()));
        let mut block = Block::new(&pool, net("10.0.0.8/30"), "n1").unwrap();
        assert_eq!(
            block.allocate(&pool, &att("a"), None, at(0)).unwrap(),
            ip("10.0.0.9")
        );
        assert_eq!(pool.block_capacity(&net("10.0.0.8/30")), 3);
        // Block 10.0.0.0/30 starts with the pool's network address.
        let mut block = Block::new(&pool, net("10.0.0.0/30"), "n1").unwrap();
        assert_eq!(
            block.allocate(&pool, &att("a"), None, at(0)).unwrap(),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn tiny_pools_hand_out_every_address() {
        for (cidr, prefix, want) in [
            ("10.0.0.6/31", 31, vec!["10.0.0.6", "10.0.0.7"]),
            ("10.0.0.9/32", 32, vec!["10.0.0.9"]),
            ("fd00::6/127", 127, vec!["fd00::6", "fd00::7"]),
            ("fd00::9/128", 128, vec!["fd00::9"]),
        ] {
            let pool = pool_with(cidr, prefix, |_| {});
            let mut block = Block::new(&pool, net(cidr), "n").unwrap();
            let got: Vec<IpAddr> = (0..want.len())
                .map(|i| {
                    block
                        .allocate(&pool, &att(&format!("c{i}")), None, at(0))
                        .unwrap()
                })
                .collect();
            assert_eq!(got, want.iter().map(|s| ip(s)).collect::<Vec<_>>());
            assert!(matches!(
                block.allocate(&pool, &att("x"), None, at(0)),
                Err(AllocError::BlockFull { .. })
            ));
        }
    }

    #[test]
    fn disabled_pool_refuses_new_but_returns_existing() {
        let mut spec = PoolSpec {
            cidr: "10.0.0.0/24".into(),
            ..Default::default()
        };
        let pool = Pool::parse("p", &spec).unwrap();
        let mut block = Block::new(&pool, net("10.0.0.0/26"), "n").unwrap();
        let a = block.allocate(&pool, &att("a"), None, at(0)).unwrap();
        spec.disabled = true;
        let disabled = Pool::parse("p", &spec).unwrap();
        assert_eq!(block.allocate(&disabled, &att("a"), None, at(0)), Ok(a));
        assert_eq!(
            block.allocate(&disabled, &att("b"), None, at(0)),
            Err(AllocError::PoolDisabled { pool: "p".into() })
        );
    }

    #[test]
    fn wrong_pool_and_bad_pod_are_refused() {
        let pool = pool_with("10.0.0.0/24", 26, |_| {});
        let other = pool_with("10.1.0.0/24", 26, |_| {});
        assert!(matches!(
            Block::new(&pool, net("10.1.0.0/26"), "n"),
            Err(AllocError::WrongPool { .. })
        ));
        let mut block = Block::new(&pool, net("10.0.0.0/26"), "n").unwrap();
        assert!(matches!(
            block.allocate(&other, &att("a"), None, at(0)),
            Err(AllocError::WrongPool { .. })
        ));
        let bad = PodRef {
            namespace: String::new(),
            name: "x".into(),
            uid: None,
        };
        assert_eq!(
            block
                .allocate(&pool, &att("a"), Some(&bad), at(0))
                .unwrap_err()
                .to_string(),
            "pod.namespace: must not be empty"
        );
        assert!(block.is_empty());
    }

    #[test]
    fn from_spec_reports_inconsistent_records() {
        let pool = pool_with("10.0.0.0/24", 26, |_| {});
        let mut block = Block::new(&pool, net("10.0.0.0/26"), "n").unwrap();
        block
            .allocate(&pool, &att("a"), Some(&pod()), at(0))
            .unwrap();
        block.allocate(&pool, &att("b"), None, at(0)).unwrap();
        block.release(&att("b"), at(1));
        let good = block.to_record();
        assert_eq!(Block::from_record(&good).unwrap(), block);

        let mut bad = good.clone();
        bad.allocations.push(bad.allocations[0].clone());
        bad.allocations[1].address = ip("10.0.0.99");
        bad.allocations.push(bad.allocations[0].clone());
        bad.allocations[2].if_name = "a/b".into();
        bad.released.push(bad.released[0].clone());
        bad.released.push(ReleasedRecord {
            address: ip("10.0.0.1"),
            released_at: at(0),
        });
        bad.last_allocated = Some(ip("10.0.0.200"));
        let error = Block::from_record(&bad).unwrap_err();
        let fields: Vec<&str> = error.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.lastAllocated",
                "spec.allocations[1].address",
                "spec.allocations[2].address",
                "spec.released[1].address",
                "spec.released[2].address"
            ],
            "{error}"
        );
    }
}
