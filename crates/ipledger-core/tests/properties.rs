//! Property tests of the allocation core against the invariants of DESIGN.md, over
//! random IPv4 and IPv6 pools, exclusions and allocate/request/release sequences.
//!
//! Each case keeps a brute-force model (a plain map of who holds what) next to the
//! core and compares every answer with it.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipledger_core::{
    AllocError, AllocationRecord, Attachment, Block, BlockRecord, PodRef, Pool, PoolSpec,
    ReleasedRecord, RouteSpec, block_name, is_dns1123_subdomain,
};
use ipnet::IpNet;
use jiff::Timestamp;
use proptest::prelude::*;

/// A pool described by integers, so the test knows every address's role without
/// asking the code under test.
#[derive(Clone, Debug)]
struct PoolCase {
    v6: bool,
    prefix: u8,
    block_prefix: u8,
    base: u128,
    /// Index of the block the operations run in.
    focus: u128,
    /// Inclusive excluded ranges, and how each is written.
    exclude: Vec<(u128, u128, Form)>,
    gateway: Option<u128>,
    cooldown: u32,
}

#[derive(Clone, Copy, Debug)]
enum Form {
    Range,
    Single,
    Cidr,
}

impl PoolCase {
    fn bits(&self) -> u8 {
        if self.v6 { 128 } else { 32 }
    }

    fn ip(&self, value: u128) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(value))
        } else {
            IpAddr::V4(Ipv4Addr::from(value as u32))
        }
    }

    fn size(&self) -> u128 {
        1u128 << (self.bits() - self.prefix)
    }

    fn block_size(&self) -> u128 {
        1u128 << (self.bits() - self.block_prefix)
    }

    fn block_start(&self) -> u128 {
        self.base + self.focus * self.block_size()
    }

    fn block(&self) -> IpNet {
        IpNet::new(self.ip(self.block_start()), self.block_prefix).unwrap()
    }

    fn has_network_and_broadcast(&self) -> bool {
        !self.v6 && self.prefix <= 30
    }

    /// The roles that make an address never allocatable.
    fn forbidden(&self, value: u128) -> bool {
        Some(value) == self.gateway
            || (self.has_network_and_broadcast()
                && (value == self.base || value == self.base + (self.size() - 1)))
            || self
                .exclude
                .iter()
                .any(|(a, b, _)| *a <= value && value <= *b)
    }

    fn spec(&self) -> PoolSpec {
        let exclude = self
            .exclude
            .iter()
            .map(|(a, b, form)| match form {
                Form::Single => self.ip(*a).to_string(),
                Form::Range => format!("{}-{}", self.ip(*a), self.ip(*b)),
                Form::Cidr => {
                    let len = b - a + 1;
                    let prefix = self.bits() - len.trailing_zeros() as u8;
                    format!("{}/{prefix}", self.ip(*a))
                }
            })
            .collect();
        PoolSpec {
            cidr: format!("{}/{}", self.ip(self.base), self.prefix),
            block_size: Some(self.block_prefix),
            exclude,
            gateway: self.gateway.map(|g| self.ip(g).to_string()),
            reuse_cooldown_seconds: Some(self.cooldown),
            ..Default::default()
        }
    }
}

/// Random pools: IPv4 or IPv6 (IPv6 from /1 pools to single addresses, IPv4 from /1),
/// blocks of 1 to 1024 addresses, with up to
/// five exclusions near the block under test and maybe a gateway in it.
fn pool_case() -> impl Strategy<Value = PoolCase> {
    (
        any::<bool>(),
        any::<u128>(),
        0u8..=10,
        prop_oneof![0u8..=40, 0u8..=127],
        0u32..4,
    )
        .prop_flat_map(|(v6, seed, host_bits, extra, cooldown)| {
            let bits: u8 = if v6 { 128 } else { 32 };
            let block_prefix = bits - host_bits;
            // Pool prefix from 1 (a huge pool) to the block prefix (one block).
            let prefix = block_prefix.saturating_sub(extra).max(1);
            let mask = if bits == 128 {
                u128::MAX
            } else {
                u128::from(u32::MAX)
            };
            let host_mask = (1u128 << (bits - prefix)) - 1;
            let base = seed & mask & !host_mask;
            let blocks = 1u128 << (block_prefix - prefix);
            let block_size = 1u128 << host_bits;
            (
                Just((v6, prefix, block_prefix, base, cooldown)),
                0..blocks,
                prop::collection::vec(
                    (0..3u8, 0..3 * block_size, 0..block_size, 0..=host_bits),
                    0..5,
                ),
                prop::option::of(0..block_size),
            )
        })
        .prop_map(
            |((v6, prefix, block_prefix, base, cooldown), focus, raw, gateway)| {
                let bits: u8 = if v6 { 128 } else { 32 };
                let block_size = 1u128 << (bits - block_prefix);
                let pool_last = base + ((1u128 << (bits - prefix)) - 1);
                let start = base + focus * block_size;
                // Exclusions start from one block before the focus to one after it.
                let window_start = start.saturating_sub(block_size).max(base);
                let exclude = raw
                    .into_iter()
                    .map(|(form, offset, len, cidr_bits)| {
                        let first = window_start.saturating_add(offset).min(pool_last);
                        match form {
                            0 => (first, first, Form::Single),
                            1 => (first, first.saturating_add(len).min(pool_last), Form::Range),
                            _ => {
                                let span = 1u128 << cidr_bits;
                                let aligned = first & !(span - 1);
                                (aligned, aligned + span - 1, Form::Cidr)
                            }
                        }
                    })
                    .collect();
                PoolCase {
                    v6,
                    prefix,
                    block_prefix,
                    base,
                    focus,
                    exclude,
                    gateway: gateway.map(|g| start + g),
                    cooldown,
                }
            },
        )
}

#[derive(Clone, Debug)]
enum Op {
    Add(usize),
    Request(usize, u128),
    Del(usize),
    Tick(i64),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            4 => (0..16usize).prop_map(Op::Add),
            2 => (0..16usize, any::<u128>()).prop_map(|(a, o)| Op::Request(a, o)),
            3 => (0..16usize).prop_map(Op::Del),
            1 => (0..3i64).prop_map(Op::Tick),
        ],
        1..80,
    )
}

fn attachment(i: usize) -> Attachment {
    Attachment::new("net", format!("c{}", i / 2), format!("eth{}", i % 2)).unwrap()
}

fn pod(i: usize) -> PodRef {
    PodRef {
        namespace: "ns".into(),
        name: format!("pod-{i}"),
        uid: None,
    }
}

/// The brute-force model of one block: who holds what, what cools down until when.
#[derive(Default)]
struct Model {
    held: HashMap<usize, u128>,
    released: HashMap<u128, i64>,
    last: Option<u128>,
}

impl Model {
    fn holder(&self, value: u128) -> Option<usize> {
        self.held
            .iter()
            .find(|(_, v)| **v == value)
            .map(|(a, _)| *a)
    }

    fn cooling(&self, value: u128, now: i64, cooldown: u32) -> bool {
        self.released
            .get(&value)
            .is_some_and(|at| now < at + i64::from(cooldown))
    }

    fn free(&self, case: &PoolCase, value: u128, now: i64) -> bool {
        !case.forbidden(value)
            && self.holder(value).is_none()
            && !self.cooling(value, now, case.cooldown)
    }

    /// The round-robin choice: first free address after the last allocated one.
    fn next(&self, case: &PoolCase, now: i64) -> Option<u128> {
        let (start, size) = (case.block_start(), case.block_size());
        let from = self.last.map_or(0, |l| (l - start + 1) % size);
        (0..size)
            .map(|k| start + (from + k) % size)
            .find(|v| self.free(case, *v, now))
    }
}

fn time(second: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + second).unwrap()
}

/// Invariants 1–3 and the ledger round trip, checked on the block's record.
fn check_block(
    case: &PoolCase,
    pool: &Pool,
    block: &Block,
    model: &Model,
) -> Result<(), TestCaseError> {
    let spec = block.to_record();
    let block_net = case.block();
    prop_assert!(
        pool.cidr().contains(&spec.cidr),
        "(2) block outside its pool"
    );
    let mut addresses = HashSet::new();
    let mut attachments = HashSet::new();
    for record in &spec.allocations {
        prop_assert!(
            addresses.insert(record.address),
            "(1) {} held twice",
            record.address
        );
        prop_assert!(
            attachments.insert((&record.network, &record.container_id, &record.if_name)),
            "(1) one attachment holds two addresses"
        );
        prop_assert!(
            block_net.contains(&record.address),
            "(2) {} outside its block",
            record.address
        );
        let value = to_int(record.address);
        prop_assert!(
            !case.forbidden(value),
            "(3) {} must never be allocated",
            record.address
        );
    }
    prop_assert_eq!(spec.allocations.len(), model.held.len());
    for (a, v) in &model.held {
        prop_assert_eq!(
            block.find(&attachment(*a)).map(|x| to_int(x.address)),
            Some(*v)
        );
    }
    prop_assert_eq!(
        &Block::from_record(&spec).unwrap(),
        block,
        "ledger round trip"
    );
    Ok(())
}

fn to_int(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Valid object names, from one character to the 253 maximum.
fn pool_name() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9]([a-z0-9-]{0,58}[a-z0-9])?", 1..8).prop_map(|labels| {
        let mut name = labels.join(".");
        name.truncate(253);
        name.trim_end_matches(['.', '-']).to_string()
    })
}

/// Strings that are often, not always, valid IPv4 addresses or CIDRs.
fn near_v4(cidr: bool) -> impl Strategy<Value = String> {
    (
        0u16..300,
        0u16..300,
        0u16..4,
        0u16..300,
        prop_oneof![0u8..40, 24u8..33],
    )
        .prop_map(move |(a, b, c, d, p)| {
            if cidr {
                format!("{a}.{b}.{c}.0/{p}")
            } else {
                format!("{a}.{b}.{c}.{d}")
            }
        })
}

/// Strings that are often, not always, valid IPv6 addresses or CIDRs.
fn near_v6(cidr: bool) -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["fd00", "::ffff", "2001:db8", "fe80", "g00"]),
        0u32..0x1_0000,
        0u16..140,
    )
        .prop_map(move |(head, x, p)| {
            if cidr {
                format!("{head}::/{p}")
            } else {
                format!("{head}::{x:x}")
            }
        })
}

/// Strings that are often, not always, valid address ranges.
fn near_range() -> impl Strategy<Value = String> {
    (near_v4(false), near_v4(false)).prop_map(|(a, b)| format!("{a}-{b}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Random sequences against the model: every answer matches it, the invariants
    /// hold after every step, ADD and DEL are idempotent.
    #[test]
    fn allocation_sequences_keep_the_invariants(case in pool_case(), ops in ops()) {
        let Ok(pool) = Pool::parse("pool", &case.spec()) else {
            // Only pools whose gateway is an IPv4 network/broadcast address or which
            // leave nothing to allocate are refused here.
            let gateway_edge = case.has_network_and_broadcast()
                && case.gateway.is_some_and(|g| g == case.base || g == case.base + (case.size() - 1));
            let all_forbidden = case.size() <= 4096
                && (case.base..=case.base + (case.size() - 1)).all(|v| case.forbidden(v));
            prop_assert!(gateway_edge || all_forbidden, "refused: {:?}", Pool::parse("pool", &case.spec()));
            return Ok(());
        };
        let block_net = case.block();
        prop_assert_eq!(pool.block_for(block_net.network()), Some(block_net));
        prop_assert_eq!(pool.block_for(block_net.broadcast()), Some(block_net));
        prop_assert!(pool.has_block(&block_net));
        let expected_capacity = (case.block_start()..=case.block_start() + (case.block_size() - 1))
            .filter(|v| !case.forbidden(*v))
            .count() as u128;
        prop_assert_eq!(pool.block_capacity(&block_net), expected_capacity);
        if case.size() <= 4096 {
            let pool_capacity = (case.base..=case.base + (case.size() - 1)).filter(|v| !case.forbidden(*v)).count();
            prop_assert_eq!(pool.capacity(), pool_capacity as u128);
        }

        let mut block = Block::new(&pool, block_net, "node").unwrap();
        let mut model = Model::default();
        let mut now = 0i64;
        let mut adds = 0usize;
        for op in ops {
            match op {
                Op::Add(a) => {
                    adds += 1;
                    let before = block.clone();
                    let got = block.allocate(&pool, &attachment(a), Some(&pod(a)), time(now));
                    if let Some(held) = model.held.get(&a) {
                        prop_assert_eq!(got, Ok(case.ip(*held)), "(4) repeated ADD returns the same address");
                        prop_assert_eq!(&block, &before, "(4) repeated ADD changes nothing");
                        continue;
                    }
                    match model.next(&case, now) {
                        Some(v) => {
                            prop_assert_eq!(got, Ok(case.ip(v)), "round-robin choice");
                            model.held.insert(a, v);
                            model.released.remove(&v);
                            model.last = Some(v);
                        }
                        None => prop_assert!(matches!(got, Err(AllocError::BlockFull { .. })), "{:?}", got),
                    }
                }
                Op::Request(a, offset) => {
                    adds += 1;
                    // Mostly inside the block, sometimes anywhere in the pool or beyond.
                    let value = match offset % 8 {
                        0 => case.base.wrapping_add(offset % case.size().saturating_mul(2).max(1)),
                        _ => case.block_start() + offset % case.block_size(),
                    };
                    let value = if case.v6 { value } else { value & u128::from(u32::MAX) };
                    let got = block.allocate_requested(&pool, case.ip(value), &attachment(a), None, time(now));
                    let in_pool = value >= case.base && value - case.base < case.size();
                    let in_block = value >= case.block_start() && value - case.block_start() < case.block_size();
                    match (model.held.get(&a).copied(), got) {
                        (_, Err(AllocError::OutsidePool { .. })) => prop_assert!(!in_pool),
                        (_, Err(AllocError::OutsideBlock { .. })) => prop_assert!(in_pool && !in_block),
                        (Some(held), Ok(ip)) => prop_assert!(held == value && ip == case.ip(value)),
                        (Some(held), Err(AllocError::HoldsOther { .. })) => prop_assert_ne!(held, value),
                        (None, Err(
                            AllocError::Excluded { .. }
                            | AllocError::Gateway { .. }
                            | AllocError::NetworkAddress { .. }
                            | AllocError::BroadcastAddress { .. },
                        )) => prop_assert!(case.forbidden(value)),
                        (None, Err(AllocError::Taken { .. })) => {
                            prop_assert!(!case.forbidden(value) && model.holder(value).is_some());
                        }
                        (None, Err(AllocError::CoolingDown { .. })) => {
                            prop_assert!(model.holder(value).is_none() && model.cooling(value, now, case.cooldown));
                        }
                        (None, Ok(ip)) => {
                            prop_assert!(in_block && model.free(&case, value, now), "{} is not free", ip);
                            model.held.insert(a, value);
                            model.released.remove(&value);
                        }
                        (held, other) => prop_assert!(false, "unexpected {:?} (held {:?})", other, held),
                    }
                }
                Op::Del(a) => {
                    let before = block.clone();
                    let got = block.release(&attachment(a), time(now));
                    match model.held.remove(&a) {
                        Some(v) => {
                            prop_assert_eq!(got, Some(case.ip(v)));
                            model.released.insert(v, now);
                        }
                        None => {
                            prop_assert_eq!(got, None);
                            prop_assert_eq!(&block, &before, "(4) DEL of nothing changes nothing");
                        }
                    }
                }
                Op::Tick(seconds) => now += seconds,
            }
            check_block(&case, &pool, &block, &model)?;
            let spec = block.to_record();
            // (6) The record grows with allocations and releases, not with any range.
            prop_assert!(spec.allocations.len() + spec.released.len() <= adds);
        }
    }

    /// The block search offers only free, claimable blocks of the pool, and says
    /// `None` only when none is left; on huge pools too.
    #[test]
    fn next_free_block_offers_only_claimable_free_blocks(
        case in pool_case(),
        picks in prop::collection::vec(any::<u128>(), 0..64),
        node in "[a-z0-9-]{1,20}",
    ) {
        let Ok(pool) = Pool::parse("pool", &case.spec()) else { return Ok(()) };
        let count = pool.block_count();
        let block_at = |i: u128| IpNet::new(case.ip(case.base + i * case.block_size()), case.block_prefix).unwrap();
        let mut existing: Vec<IpNet> = picks.iter().map(|p| block_at(p % count)).collect();
        let free = |b: IpNet, existing: &[IpNet]| !existing.contains(&b) && pool.block_capacity(&b) > 0;
        let mut previous: Option<u128> = None;
        // On small pools, claim until nothing is left and compare with brute force.
        for _ in 0..=count.min(300) {
            let got = pool.next_free_block(&node, &existing);
            prop_assert_eq!(got, pool.next_free_block(&node, &existing), "deterministic");
            match got {
                Some(b) => {
                    prop_assert!(pool.has_block(&b) && free(b, &existing), "{} is not free", b);
                    let index = (to_int(b.network()) - case.base) / case.block_size();
                    if let (Some(prev), true) = (previous, count <= 300) {
                        // Everything between the previous claim and this one is taken:
                        // one node claims in order from its start, wrapping.
                        let expected = (1..count).map(|k| (prev + k) % count).find(|i| free(block_at(*i), &existing));
                        prop_assert_eq!(Some(index), expected);
                    }
                    previous = Some(index);
                    existing.push(b);
                }
                None => {
                    if count <= 300 {
                        for i in 0..count {
                            let b = block_at(i);
                            prop_assert!(existing.contains(&b) || pool.block_capacity(&b) == 0);
                        }
                    }
                    break;
                }
            }
        }
    }

    /// Nothing panics on any input, and whatever is accepted is consistent.
    #[test]
    fn pool_parser_never_panics(
        name in prop_oneof![3 => "[a-z][a-z0-9-]{0,10}[a-z0-9]", 1 => ".{0,20}", 1 => "[a-z0-9.-]{1,260}"],
        cidr in prop_oneof![1 => ".{0,50}", 1 => "[0-9a-f:./]{0,45}", 2 => near_v4(true), 2 => near_v6(true)],
        block_size in prop::option::of(prop_oneof![any::<u8>(), 22u8..=32, 118u8..=128]),
        exclude in prop::collection::vec(prop_oneof![".{0,30}", near_v4(false), near_v6(false), near_range()], 0..2),
        gateway in prop::option::of(prop_oneof![".{0,20}", near_v4(false), near_v6(false)]),
        routes in prop::collection::vec(
            (prop_oneof![".{0,20}", near_v4(true), near_v6(true)], prop::option::of(near_v4(false))),
            0..2,
        ),
        nameservers in prop::collection::vec(prop_oneof![1 => ".{0,20}", 3 => near_v4(false)], 0..2),
        cooldown in prop::option::of(prop_oneof![any::<u32>(), 0u32..100]),
    ) {
        let spec = PoolSpec {
            cidr,
            block_size,
            exclude,
            gateway,
            routes: routes.into_iter().map(|(dst, gw)| RouteSpec { dst, gw }).collect(),
            nameservers,
            reuse_cooldown_seconds: cooldown,
            ..Default::default()
        };
        match Pool::parse(&name, &spec) {
            Ok(pool) => {
                prop_assert!(pool.capacity() > 0);
                let bits = pool.cidr().max_prefix_len();
                prop_assert!(pool.cidr().prefix_len() >= 1 && pool.block_prefix() >= pool.cidr().prefix_len());
                prop_assert!(bits - pool.block_prefix() <= 10, "at most 1024 addresses per block");
                prop_assert!(pool.capacity() <= 1u128 << (bits - pool.cidr().prefix_len()));
                if let Some(gw) = pool.gateway() {
                    prop_assert!(pool.contains(gw));
                }
                let block = pool.next_free_block("node", &[]).unwrap();
                prop_assert!(is_dns1123_subdomain(&pool.block_name(&block)));
            }
            Err(error) => {
                prop_assert!(!error.errors.is_empty());
                for field in &error.errors {
                    prop_assert!(field.field.starts_with("spec.") || field.field == "metadata.name");
                }
                // Messages stay short whatever the input.
                prop_assert!(error.to_string().len() < 400 * (error.errors.len() + 1));
            }
        }
    }

    /// Reading any ledger record never panics; what is accepted round-trips, and
    /// allocating from it never panics and stays inside block and pool.
    #[test]
    fn any_ledger_record_is_read_safely(
        v6 in any::<bool>(),
        base in any::<u128>(),
        host_bits in 0u8..=12,
        widen in 0u8..8,
        aligned in any::<bool>(),
        records in prop::collection::vec(
            (
                any::<u128>(),
                prop_oneof![1 => ".{0,12}", 8 => "[a-z0-9]{1,8}"],
                prop_oneof![1 => ".{0,8}", 8 => "eth[0-9]"],
                any::<bool>(),
            ),
            0..6,
        ),
        released in prop::collection::vec((any::<u128>(), 0i64..100), 0..3),
        last in prop::option::of(any::<u128>()),
    ) {
        let bits: u8 = if v6 { 128 } else { 32 };
        let prefix = bits - host_bits;
        let make = |value: u128| if v6 { IpAddr::V6(value.into()) } else { IpAddr::V4((value as u32).into()) };
        let net = IpNet::new(make(base), prefix).unwrap();
        let cidr = if aligned { net.trunc() } else { net };
        let size = 1u128 << host_bits;
        // Mostly addresses inside the block; a few anywhere.
        let ip = |x: u128| if x.is_multiple_of(16) { make(x) } else { make(to_int(cidr.network()) + x % size) };
        let spec = BlockRecord {
            pool: "pool".into(),
            cidr,
            node: "node".into(),
            last_allocated: last.map(ip),
            allocations: records
                .iter()
                .map(|(x, id, if_name, with_pod)| AllocationRecord {
                    address: ip(*x),
                    network: "net".into(),
                    container_id: id.clone(),
                    if_name: if_name.clone(),
                    pod: with_pod.then(|| pod(0)),
                    allocated_at: time(0),
                    // Some records borrowed by another node: that must survive the round trip.
                    node: (x % 3 == 0).then(|| "borrower".to_string()),
                })
                .collect(),
            released: released
                .iter()
                .map(|(x, at)| ReleasedRecord { address: ip(*x), released_at: time(*at) })
                .collect(),
        };
        if let Ok(block) = Block::from_record(&spec) {
            prop_assert_eq!(&Block::from_record(&block.to_record()).unwrap(), &block);
            let pool_net = IpNet::new(cidr.network(), prefix.saturating_sub(widen).max(1)).unwrap().trunc();
            let pool_spec = PoolSpec { cidr: pool_net.to_string(), ..Default::default() };
            if let Ok(pool) = Pool::parse("pool", &pool_spec) {
                let mut block = block;
                for k in 0..3 {
                    if let Ok(address) = block.allocate(&pool, &attachment(100 + k), None, time(50)) {
                        prop_assert!(block.cidr().contains(&address) && pool.contains(address));
                    }
                }
            }
        }
    }

    /// A valid pool with one field replaced by junk is refused with an error naming
    /// exactly that field (unless the junk happens to be valid there).
    #[test]
    fn one_bad_field_is_named(case in pool_case(), which in 0..5usize, junk in ".{0,40}") {
        let mut spec = case.spec();
        prop_assume!(Pool::parse("pool", &spec).is_ok());
        let any_route = if case.v6 { "::/0" } else { "0.0.0.0/0" };
        let field = match which {
            0 => { spec.cidr = junk.clone(); "spec.cidr".to_string() }
            1 => { spec.exclude.push(junk.clone()); format!("spec.exclude[{}]", spec.exclude.len() - 1) }
            2 => { spec.gateway = Some(junk.clone()); "spec.gateway".to_string() }
            3 => { spec.routes.push(RouteSpec { dst: junk.clone(), gw: None }); "spec.routes[0].dst".to_string() }
            _ => {
                spec.routes.push(RouteSpec { dst: any_route.into(), gw: Some(junk.clone()) });
                "spec.routes[0].gw".to_string()
            }
        };
        let junk_parses = junk.trim().parse::<IpAddr>().is_ok()
            || junk.trim().parse::<IpNet>().is_ok()
            || junk.contains('-');
        match Pool::parse("pool", &spec) {
            Ok(_) => prop_assert!(junk_parses, "accepted {:?} in {}", junk, field),
            Err(error) => {
                if !junk_parses {
                    let fields: Vec<&str> = error.errors.iter().map(|e| e.field.as_str()).collect();
                    prop_assert_eq!(fields, vec![field.as_str()]);
                }
            }
        }
    }

    /// Block names are valid, bounded and distinct for distinct (pool, block) pairs.
    #[test]
    fn block_names_are_valid_and_unique(
        pools in prop::collection::vec(pool_name(), 2),
        a in any::<u128>(),
        b in any::<u128>(),
        prefix in 0u8..=32,
        v6 in any::<bool>(),
    ) {
        let net = |x: u128| if v6 {
            IpNet::new(IpAddr::V6(Ipv6Addr::from(x)), prefix + 96).unwrap().trunc()
        } else {
            IpNet::new(IpAddr::V4(Ipv4Addr::from(x as u32)), prefix).unwrap().trunc()
        };
        for pool in &pools {
            prop_assert!(is_dns1123_subdomain(pool), "generator made {:?}", pool);
        }
        let names: Vec<(String, IpNet, String)> = [(&pools[0], net(a)), (&pools[0], net(b)), (&pools[1], net(a))]
            .into_iter()
            .map(|(p, n)| (p.clone(), n, block_name(p, &n)))
            .collect();
        for (_, _, name) in &names {
            prop_assert!(is_dns1123_subdomain(name) && name.len() <= 253, "{}", name);
        }
        for x in &names {
            for y in &names {
                if (&x.0, x.1) != (&y.0, y.1) {
                    prop_assert_ne!(&x.2, &y.2);
                }
            }
        }
    }
}
