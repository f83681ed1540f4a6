//! Microbenchmarks of the allocation core: allocation inside a block and the search
//! for a free block in large pools.
//!
//! Run with `cargo bench --bench ipam` (`-- --quick` on a busy machine).

use std::collections::HashSet;
use std::hint::black_box;
use std::net::IpAddr;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ipledger_core::{Attachment, Block, Pool};
use ipledger_core::{PodRef, PoolSpec};
use ipnet::IpNet;
use jiff::Timestamp;

fn pool(cidr: &str, block_size: Option<u8>, cooldown: u32) -> Pool {
    let spec = PoolSpec {
        cidr: cidr.into(),
        block_size,
        reuse_cooldown_seconds: Some(cooldown),
        ..Default::default()
    };
    Pool::parse("bench", &spec).expect("valid bench pool")
}

fn attachment(i: usize) -> Attachment {
    Attachment::new("bench-net", format!("{i:064x}"), "eth0").expect("valid attachment")
}

fn pod(i: usize) -> PodRef {
    PodRef {
        namespace: "default".into(),
        name: format!("pod-{i}"),
        uid: Some(format!("00000000-0000-4000-8000-{i:012x}")),
    }
}

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("valid time")
}

/// A block of `pool` holding `count` allocations, made by round-robin allocation.
fn filled(pool: &Pool, cidr: &str, count: usize) -> Block {
    let mut block = Block::new(pool, cidr.parse().expect("cidr"), "node-1").expect("block of pool");
    for i in 0..count {
        block
            .allocate(pool, &attachment(i), Some(&pod(i)), now())
            .expect("room in block");
    }
    block
}

fn allocate_and_release(c: &mut Criterion) {
    // Cooldown 0 so releases do not pile up; the block is half full.
    let pool = pool("10.0.0.0/16", Some(26), 0);
    let mut block = filled(&pool, "10.0.0.64/26", 32);
    let who = attachment(1_000_000);
    c.bench_function("allocate+release in a half-full /26 block", |b| {
        b.iter(|| {
            let ip = block
                .allocate(&pool, &who, None, now())
                .expect("free address");
            black_box(ip);
            black_box(block.release(&who, now()));
        })
    });
}

/// Allocating the one free address of an otherwise full block, placed so that the
/// round-robin search has to go around the whole block to find it.
fn allocate_last_free(c: &mut Criterion) {
    let pool = pool("10.0.0.0/16", Some(22), 0);
    for (name, cidr, size) in [
        (
            "/22 (1024 addresses, the largest allowed block)",
            "10.0.4.0/22",
            1024,
        ),
        (
            "/20 (4096 addresses, core without the API limit)",
            "10.0.16.0/20",
            4096,
        ),
    ] {
        let mut full = filled(&pool, cidr, size);
        let last = full.last_allocated().expect("allocated");
        let holder = full.holder(last).expect("held").attachment.clone();
        full.release(&holder, now());
        full.prune_cooldowns(&pool, now());
        let who = attachment(1_000_000);
        c.bench_function(
            &format!("allocate the last free address of a full {name}"),
            |b| {
                b.iter_batched(
                    || full.clone(),
                    |mut block| {
                        let ip = block.allocate(&pool, &who, None, now()).expect("one free");
                        black_box(ip);
                        block
                    },
                    BatchSize::LargeInput,
                )
            },
        );
    }
}

/// SplitMix64: a fixed pseudo-random sequence, so every run measures the same input.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `count` distinct blocks of `pool` scattered pseudo-randomly over it.
fn scattered(pool: &Pool, count: usize) -> Vec<IpNet> {
    let mut state = 7;
    let mut seen = HashSet::with_capacity(count);
    let blocks = pool.block_count();
    while seen.len() < count {
        let index =
            ((u128::from(splitmix(&mut state)) << 64) | u128::from(splitmix(&mut state))) % blocks;
        seen.insert(index);
    }
    seen.into_iter().map(|i| block_at(pool, i)).collect()
}

/// `count` consecutive blocks from the block `node` starts its search at: the worst
/// case, every one of them is passed over.
fn run_from_start(pool: &Pool, node: &str, count: usize) -> Vec<IpNet> {
    let start = pool.next_free_block(node, &[]).expect("free block");
    let first = index_of(pool, &start);
    (0..count as u128)
        .map(|k| block_at(pool, (first + k) % pool.block_count()))
        .collect()
}

fn int(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn index_of(pool: &Pool, block: &IpNet) -> u128 {
    let host_bits = pool.cidr().max_prefix_len() - pool.block_prefix();
    (int(block.network()) - int(pool.cidr().network())) >> host_bits
}

fn block_at(pool: &Pool, index: u128) -> IpNet {
    let host_bits = pool.cidr().max_prefix_len() - pool.block_prefix();
    let value = int(pool.cidr().network()) + (index << host_bits);
    let ip = match pool.cidr() {
        IpNet::V4(_) => IpAddr::V4((value as u32).into()),
        IpNet::V6(_) => IpAddr::V6(value.into()),
    };
    IpNet::new(ip, pool.block_prefix()).expect("valid block")
}

fn next_free_block(c: &mut Criterion) {
    let v4 = pool("10.0.0.0/8", None, 30);
    let v6 = pool("fd00:10:244::/48", None, 30);
    let cases = [
        (
            "IPv4 /8, 100,000 scattered blocks",
            &v4,
            scattered(&v4, 100_000),
        ),
        (
            "IPv4 /8, 100,000 blocks in a row from the start",
            &v4,
            run_from_start(&v4, "node-1", 100_000),
        ),
        (
            "IPv6 /48, 100,000 scattered blocks",
            &v6,
            scattered(&v6, 100_000),
        ),
        (
            "IPv6 /48, 100,000 blocks in a row from the start",
            &v6,
            run_from_start(&v6, "node-1", 100_000),
        ),
    ];
    for (name, pool, existing) in cases {
        c.bench_function(&format!("next free block: {name}"), |b| {
            b.iter(|| black_box(pool.next_free_block(black_box("node-1"), &existing)))
        });
    }
}

criterion_group!(
    benches,
    allocate_and_release,
    allocate_last_free,
    next_free_block
);
criterion_main!(benches);
