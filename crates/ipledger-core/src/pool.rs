//! `Pool`: a validated IPPool spec, with the address arithmetic the rest of the core
//! needs (which addresses are never allocated, blocks, capacity).

use std::net::IpAddr;

use ipnet::IpNet;
use jiff::SignedDuration;

use crate::record::PoolSpec;

use crate::addr::{self, AddressSet, Span, quote};
use crate::naming::{self, is_dns1123_subdomain};
use crate::{AllocError, FieldError, PoolError};

/// Default block prefix length of an IPv4 pool (64 addresses).
pub const DEFAULT_BLOCK_V4: u8 = 26;
/// Default block prefix length of an IPv6 pool (64 addresses).
pub const DEFAULT_BLOCK_V6: u8 = 122;
/// Allowed block prefix lengths of an IPv4 pool: at most 1024 addresses per block.
pub const BLOCK_V4: std::ops::RangeInclusive<u8> = 22..=32;
/// Allowed block prefix lengths of an IPv6 pool: at most 1024 addresses per block.
pub const BLOCK_V6: std::ops::RangeInclusive<u8> = 118..=128;
/// Default `reuseCooldownSeconds`.
pub const DEFAULT_COOLDOWN_SECONDS: u32 = 30;
/// Largest `reuseCooldownSeconds` (one day).
pub const MAX_COOLDOWN_SECONDS: u32 = 86_400;

/// A route handed to pods with an address of the pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Destination network.
    pub dst: IpNet,
    /// Next hop; the pool's gateway when `None`.
    pub gw: Option<IpAddr>,
}

/// A validated pool: its CIDR cut into blocks, and the addresses never allocated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    name: String,
    cidr: IpNet,
    block_prefix: u8,
    gateway: Option<IpAddr>,
    routes: Vec<Route>,
    nameservers: Vec<IpAddr>,
    /// Excluded addresses, the gateway and IPv4 network/broadcast: sorted, disjoint.
    reserved: Vec<Span>,
    /// Indices of blocks with nothing allocatable: sorted, disjoint.
    unclaimable: Vec<Span>,
    cooldown_seconds: u32,
    disabled: bool,
    strict_affinity: bool,
    capacity: u128,
}

impl Pool {
    /// Validates `spec` of the pool `name`; the error lists every bad field.
    ///
    /// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are rejected, not normalised:
    /// a pool is of one family, and the error names the IPv4 form to write instead.
    /// A prefix length of 0 is rejected: such a pool overlaps every other pool and
    /// the IPv6 one has 2^128 addresses, one more than a `u128` counts.
    pub fn parse(name: &str, spec: &PoolSpec) -> Result<Pool, PoolError> {
        let mut errors = Vec::new();
        if !is_dns1123_subdomain(name) {
            errors.push(FieldError::new(
                "metadata.name",
                format!("{} is not a DNS-1123 subdomain", quote(name)),
            ));
        }
        let cidr = parse_cidr(&spec.cidr).map_err(|p| errors.push(FieldError::new("spec.cidr", p)));
        let cooldown_seconds = spec
            .reuse_cooldown_seconds
            .unwrap_or(DEFAULT_COOLDOWN_SECONDS);
        if cooldown_seconds > MAX_COOLDOWN_SECONDS {
            errors.push(FieldError::new(
                "spec.reuseCooldownSeconds",
                format!("{cooldown_seconds} is more than the maximum {MAX_COOLDOWN_SECONDS}"),
            ));
        }
        let nameservers = parse_nameservers(spec, &mut errors);
        let Ok(cidr) = cidr else {
            // Without the CIDR nothing else can be placed; still report the syntax of
            // the other fields so one round of fixes suffices.
            check_syntax_only(spec, &mut errors);
            return Err(PoolError {
                pool: name.to_string(),
                errors,
            });
        };

        let block_prefix = block_prefix(&cidr, spec.block_size, &mut errors);
        let mut reserved = Vec::new();
        for (i, text) in spec.exclude.iter().enumerate() {
            let field = format!("spec.exclude[{i}]");
            match AddressSet::parse(text) {
                Err(problem) => {
                    errors.push(FieldError::new(field, format!("{} {problem}", quote(text))))
                }
                Ok(set) => match check_inside(&set, &cidr) {
                    Err(problem) => {
                        errors.push(FieldError::new(field, format!("{} {problem}", quote(text))))
                    }
                    Ok(()) => reserved.push(set.span()),
                },
            }
        }
        let gateway = spec
            .gateway
            .as_deref()
            .and_then(|text| match parse_gateway(text, &cidr) {
                Ok(ip) => Some(ip),
                Err(problem) => {
                    errors.push(FieldError::new(
                        "spec.gateway",
                        format!("{} {problem}", quote(text)),
                    ));
                    None
                }
            });
        let routes = parse_routes(spec, &cidr, &mut errors);

        if let Some(ip) = gateway {
            reserved.push(Span::single(addr::to_int(ip)));
        }
        if has_network_and_broadcast(&cidr) {
            reserved.push(Span::single(addr::to_int(cidr.network())));
            reserved.push(Span::single(addr::to_int(cidr.broadcast())));
        }
        let reserved = addr::merge(reserved);
        let whole = Span::of_net(&cidr);
        // Prefix 0 is rejected above, so the pool has at most 2^127 addresses.
        let size = whole.len().unwrap_or(u128::MAX);
        let capacity = size - addr::covered(&reserved, &whole);
        if errors.is_empty() && capacity == 0 {
            errors.push(FieldError::new(
                "spec.exclude",
                "leaves nothing to allocate: every address is excluded, the gateway, or the network or broadcast address",
            ));
        }
        if !errors.is_empty() {
            return Err(PoolError {
                pool: name.to_string(),
                errors,
            });
        }
        let unclaimable = unclaimable_blocks(&reserved, &cidr, block_prefix);
        Ok(Pool {
            name: name.to_string(),
            cidr,
            block_prefix,
            gateway,
            routes,
            nameservers,
            reserved,
            unclaimable,
            cooldown_seconds,
            disabled: spec.disabled,
            strict_affinity: spec.strict_affinity,
            capacity,
        })
    }

    /// Name of the pool.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pool's range.
    pub fn cidr(&self) -> IpNet {
        self.cidr
    }

    /// Prefix length of the pool's blocks.
    pub fn block_prefix(&self) -> u8 {
        self.block_prefix
    }

    /// The gateway handed to pods; never allocated.
    pub fn gateway(&self) -> Option<IpAddr> {
        self.gateway
    }

    /// Routes handed to pods.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// DNS name servers handed to pods.
    pub fn nameservers(&self) -> &[IpAddr] {
        &self.nameservers
    }

    /// How long a released address waits before reuse.
    pub fn reuse_cooldown(&self) -> SignedDuration {
        SignedDuration::from_secs(i64::from(self.cooldown_seconds))
    }

    /// True when the pool takes no new allocations.
    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// True when nodes may only allocate from their own blocks.
    pub fn strict_affinity(&self) -> bool {
        self.strict_affinity
    }

    /// Allocatable addresses: the pool's size less exclusions, the gateway and IPv4
    /// network/broadcast. Exact for every accepted pool.
    pub fn capacity(&self) -> u128 {
        self.capacity
    }

    /// Number of blocks the pool is cut into.
    pub fn block_count(&self) -> u128 {
        1u128 << (self.block_prefix - self.cidr.prefix_len())
    }

    /// True when `ip` lies in the pool's CIDR (same family).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.cidr.contains(&ip)
    }

    /// The block of the pool that `ip` belongs to, if `ip` is in the pool.
    pub fn block_for(&self, ip: IpAddr) -> Option<IpNet> {
        if !self.contains(ip) {
            return None;
        }
        IpNet::new(ip, self.block_prefix)
            .ok()
            .map(|net| net.trunc())
    }

    /// True when `block` is one of the pool's blocks: inside it, aligned, of its size.
    pub fn has_block(&self, block: &IpNet) -> bool {
        block.prefix_len() == self.block_prefix
            && block.addr() == block.network()
            && self.cidr.contains(block)
    }

    /// The allocatable addresses of `block`: its size less the pool's reserved ones.
    pub fn block_capacity(&self, block: &IpNet) -> u128 {
        let window = Span::of_net(block);
        window.len().unwrap_or(u128::MAX) - addr::covered(&self.reserved, &window)
    }

    /// Why `ip` (inside the pool) may never be allocated, or `None` if it may be.
    pub(crate) fn reserved_reason(&self, ip: IpAddr) -> Option<AllocError> {
        addr::find_span(&self.reserved, addr::to_int(ip))?;
        Some(if Some(ip) == self.gateway {
            AllocError::Gateway {
                address: ip,
                pool: self.name.clone(),
            }
        } else if has_network_and_broadcast(&self.cidr) && ip == self.cidr.network() {
            AllocError::NetworkAddress {
                address: ip,
                cidr: self.cidr,
            }
        } else if has_network_and_broadcast(&self.cidr) && ip == self.cidr.broadcast() {
            AllocError::BroadcastAddress {
                address: ip,
                cidr: self.cidr,
            }
        } else {
            AllocError::Excluded {
                address: ip,
                pool: self.name.clone(),
            }
        })
    }

    /// The run of never-allocated addresses holding integer value `value`, if any.
    pub(crate) fn reserved_span(&self, value: u128) -> Option<Span> {
        addr::find_span(&self.reserved, value).copied()
    }

    /// Indices of the blocks with nothing allocatable (sorted, disjoint).
    pub(crate) fn unclaimable(&self) -> &[Span] {
        &self.unclaimable
    }

    /// The IPBlock object name of `block` of this pool.
    pub fn block_name(&self, block: &IpNet) -> String {
        naming::block_name(&self.name, block)
    }

    /// The error to answer when no block of the pool has room: pool name, capacity
    /// and the `in_use` and `cooling` counts the caller summed over the pool's blocks.
    pub fn exhausted(&self, in_use: u128, cooling: u128) -> AllocError {
        AllocError::PoolExhausted {
            pool: self.name.clone(),
            capacity: self.capacity,
            in_use,
            cooling,
        }
    }

    /// True when the two pools share an address.
    pub fn overlaps(&self, other: &Pool) -> bool {
        overlaps(&self.cidr, &other.cidr)
    }
}

/// True when two CIDRs share an address (always false across families).
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    // Two CIDRs overlap only by nesting, so one holds the other's network address.
    a.contains(&b.network()) || b.contains(&a.network())
}

/// IPv4 pools of /30 and wider lose their network and broadcast addresses; /31
/// (point-to-point, RFC 3021) and /32 have neither. IPv6 has no broadcast.
fn has_network_and_broadcast(cidr: &IpNet) -> bool {
    matches!(cidr, IpNet::V4(v4) if v4.prefix_len() <= 30)
}

fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let net = addr::parse_network(text).map_err(|p| format!("{} {p}", quote(text)))?;
    if let Some(v4) = addr::mapped_v4(net.network()) {
        return Err(format!(
            "{} is an IPv4-mapped IPv6 network; write it as IPv4 ({v4}/{})",
            quote(text),
            net.prefix_len().saturating_sub(96)
        ));
    }
    if net.prefix_len() == 0 {
        return Err(format!(
            "{} has prefix length 0, which covers the whole address space; use a smaller range",
            quote(text)
        ));
    }
    Ok(net)
}

/// The block prefix length: `blockSize` if set and valid, else the family's default,
/// or the pool's own prefix when the pool is smaller than a default block.
fn block_prefix(cidr: &IpNet, block_size: Option<u8>, errors: &mut Vec<FieldError>) -> u8 {
    let (bounds, default, family) = match cidr {
        IpNet::V4(_) => (BLOCK_V4, DEFAULT_BLOCK_V4, "IPv4"),
        IpNet::V6(_) => (BLOCK_V6, DEFAULT_BLOCK_V6, "IPv6"),
    };
    let Some(size) = block_size else {
        return default.max(cidr.prefix_len());
    };
    if !bounds.contains(&size) {
        errors.push(FieldError::new(
            "spec.blockSize",
            format!(
                "{size} is outside {}..={} for an {family} pool",
                bounds.start(),
                bounds.end()
            ),
        ));
        return default.max(cidr.prefix_len());
    }
    if size < cidr.prefix_len() {
        errors.push(FieldError::new(
            "spec.blockSize",
            format!(
                "{size} is shorter than the prefix length of cidr {cidr}: a block may not be larger than its pool"
            ),
        ));
        return cidr.prefix_len();
    }
    size
}

/// Checks that an exclusion is of the pool's family and wholly inside the pool.
fn check_inside(set: &AddressSet, cidr: &IpNet) -> Result<(), String> {
    if let Some((ip, v4)) = set.mapped() {
        return Err(format!(
            "uses the IPv4-mapped IPv6 address {ip}; write {v4} instead"
        ));
    }
    if !addr::same_family(set.first(), cidr.network()) {
        return Err(format!("is not of the family of cidr {cidr}"));
    }
    let span = set.span();
    let pool = Span::of_net(cidr);
    if pool.intersect(&span) != Some(span) {
        return Err(format!("is not inside cidr {cidr}"));
    }
    Ok(())
}

fn parse_gateway(text: &str, cidr: &IpNet) -> Result<IpAddr, String> {
    let ip: IpAddr = text
        .trim()
        .parse()
        .map_err(|_| "is not an IP address".to_string())?;
    if let Some(v4) = addr::mapped_v4(ip) {
        return Err(format!(
            "is an IPv4-mapped IPv6 address; write {v4} instead"
        ));
    }
    if !addr::same_family(ip, cidr.network()) {
        return Err(format!("is not of the family of cidr {cidr}"));
    }
    if !cidr.contains(&ip) {
        return Err(format!("is outside cidr {cidr}"));
    }
    if has_network_and_broadcast(cidr) && ip == cidr.network() {
        return Err(format!("is the network address of {cidr}"));
    }
    if has_network_and_broadcast(cidr) && ip == cidr.broadcast() {
        return Err(format!("is the broadcast address of {cidr}"));
    }
    Ok(ip)
}

fn parse_routes(spec: &PoolSpec, cidr: &IpNet, errors: &mut Vec<FieldError>) -> Vec<Route> {
    let mut routes = Vec::new();
    for (i, route) in spec.routes.iter().enumerate() {
        let dst = match addr::parse_network(&route.dst) {
            Err(problem) => Err(format!("{} {problem}", quote(&route.dst))),
            Ok(dst) if addr::mapped_v4(dst.network()).is_some() => Err(format!(
                "{} is an IPv4-mapped IPv6 network; routes are of the pool's family",
                quote(&route.dst)
            )),
            Ok(dst) if !addr::same_family(dst.network(), cidr.network()) => Err(format!(
                "{} is not of the family of cidr {cidr}",
                quote(&route.dst)
            )),
            Ok(dst) => Ok(dst),
        }
        .map_err(|p| errors.push(FieldError::new(format!("spec.routes[{i}].dst"), p)));
        let gw = match route.gw.as_deref() {
            None => Ok(None),
            Some(text) => match text.trim().parse::<IpAddr>() {
                Err(_) => Err(format!("{} is not an IP address", quote(text))),
                Ok(ip) if addr::mapped_v4(ip).is_some() => Err(format!(
                    "{} is an IPv4-mapped IPv6 address; write {} instead",
                    quote(text),
                    addr::mapped_v4(ip)
                        .map(|v| v.to_string())
                        .unwrap_or_default()
                )),
                Ok(ip) if !addr::same_family(ip, cidr.network()) => Err(format!(
                    "{} is not of the family of cidr {cidr}",
                    quote(text)
                )),
                Ok(ip) => Ok(Some(ip)),
            },
        }
        .map_err(|p| errors.push(FieldError::new(format!("spec.routes[{i}].gw"), p)));
        if let (Ok(dst), Ok(gw)) = (dst, gw) {
            routes.push(Route { dst, gw });
        }
    }
    routes
}

fn parse_nameservers(spec: &PoolSpec, errors: &mut Vec<FieldError>) -> Vec<IpAddr> {
    let mut nameservers = Vec::new();
    for (i, text) in spec.nameservers.iter().enumerate() {
        match text.trim().parse::<IpAddr>() {
            Ok(ip) => nameservers.push(ip),
            Err(_) => errors.push(FieldError::new(
                format!("spec.dns.nameservers[{i}]"),
                format!("{} is not an IP address", quote(text)),
            )),
        }
    }
    nameservers
}

/// Reports unparseable exclusions, gateway and routes when the CIDR itself is bad.
fn check_syntax_only(spec: &PoolSpec, errors: &mut Vec<FieldError>) {
    for (i, text) in spec.exclude.iter().enumerate() {
        if let Err(problem) = AddressSet::parse(text) {
            errors.push(FieldError::new(
                format!("spec.exclude[{i}]"),
                format!("{} {problem}", quote(text)),
            ));
        }
    }
    if let Some(text) = &spec.gateway
        && text.trim().parse::<IpAddr>().is_err()
    {
        errors.push(FieldError::new(
            "spec.gateway",
            format!("{} is not an IP address", quote(text)),
        ));
    }
    for (i, route) in spec.routes.iter().enumerate() {
        if let Err(problem) = addr::parse_network(&route.dst) {
            errors.push(FieldError::new(
                format!("spec.routes[{i}].dst"),
                format!("{} {problem}", quote(&route.dst)),
            ));
        }
        if let Some(text) = &route.gw
            && text.trim().parse::<IpAddr>().is_err()
        {
            errors.push(FieldError::new(
                format!("spec.routes[{i}].gw"),
                format!("{} is not an IP address", quote(text)),
            ));
        }
    }
}

/// Indices of the blocks wholly inside one reserved span. `reserved` is merged, so a
/// block covered by the union of reserved addresses is covered by a single span.
fn unclaimable_blocks(reserved: &[Span], cidr: &IpNet, block_prefix: u8) -> Vec<Span> {
    let base = addr::to_int(cidr.network());
    let host_bits = u32::from(cidr.max_prefix_len() - block_prefix);
    let mut blocks = Vec::new();
    for span in reserved {
        let (first, last) = (span.first - base, span.last - base);
        // First block starting at or after `first`; last block ending at or before `last`.
        let first_block = (first >> host_bits) + u128::from(first & mask(host_bits) != 0);
        let end_block = (last >> host_bits) + u128::from(last & mask(host_bits) == mask(host_bits));
        if first_block < end_block {
            blocks.push(Span {
                first: first_block,
                last: end_block - 1,
            });
        }
    }
    addr::merge(blocks)
}

/// The low `bits` bits set.
fn mask(bits: u32) -> u128 {
    if bits >= 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RouteSpec;

    fn spec(cidr: &str) -> PoolSpec {
        PoolSpec {
            cidr: cidr.into(),
            ..Default::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn problems(name: &str, spec: &PoolSpec) -> Vec<String> {
        Pool::parse(name, spec)
            .unwrap_err()
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn defaults_and_capacity_of_an_ipv4_pool() {
        let pool = Pool::parse("blue", &spec("10.244.0.0/16")).unwrap();
        assert_eq!(pool.block_prefix(), 26);
        assert_eq!(pool.block_count(), 1024);
        assert_eq!(pool.capacity(), 65536 - 2);
        assert_eq!(pool.reuse_cooldown(), SignedDuration::from_secs(30));
        assert_eq!(
            pool.block_for(ip("10.244.3.77")),
            Some(net("10.244.3.64/26"))
        );
        assert_eq!(pool.block_for(ip("10.245.0.1")), None);
        assert_eq!(pool.block_for(ip("fd00::1")), None);
        assert_eq!(pool.block_capacity(&net("10.244.0.0/26")), 63);
        assert_eq!(pool.block_capacity(&net("10.244.0.64/26")), 64);
        assert_eq!(
            pool.block_name(&net("10.244.0.64/26")),
            "blue.10-244-0-64-26"
        );
    }

    #[test]
    fn ipv6_capacity_is_exact_beyond_64_bits() {
        let mut s = spec("fd00:10::/48");
        s.exclude = vec![
            "fd00:10::/64".into(),
            "fd00:10:0:1::5-fd00:10:0:1::9".into(),
        ];
        s.gateway = Some("fd00:10:0:1::1".into());
        let pool = Pool::parse("v6", &s).unwrap();
        assert_eq!(pool.block_prefix(), 122);
        assert_eq!(pool.block_count(), 1u128 << 74);
        assert_eq!(pool.capacity(), (1u128 << 80) - (1u128 << 64) - 5 - 1);
        // The excluded /64 is 2^58 whole blocks, none claimable.
        assert_eq!(
            pool.unclaimable(),
            &[Span {
                first: 0,
                last: (1u128 << 58) - 1
            }]
        );
    }

    #[test]
    fn the_issue_example_message() {
        let mut s = spec("10.0.0.0/24");
        s.exclude = vec!["10.0.0.1".into(), "10.0.0.2".into(), "10.0.0.300".into()];
        assert_eq!(
            problems("blue", &s),
            vec![r#"spec.exclude[2]: "10.0.0.300" is not an IP address, CIDR or range"#]
        );
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let mut s = spec("10.0.0.0/24");
        s.block_size = Some(20);
        s.gateway = Some("10.0.1.1".into());
        s.exclude = vec![
            "fd00::1".into(),
            "10.0.0.0/16".into(),
            "::ffff:10.0.0.9".into(),
        ];
        s.routes = vec![
            RouteSpec {
                dst: "10.1.0.1/16".into(),
                gw: Some("x".into()),
            },
            RouteSpec {
                dst: "fd00::/8".into(),
                gw: Some("::ffff:10.0.0.1".into()),
            },
        ];
        s.reuse_cooldown_seconds = Some(100_000);
        s.nameservers = vec!["dns.example".into()];
        let all = problems("Blue", &s);
        let expect = [
            "metadata.name: \"Blue\" is not a DNS-1123 subdomain",
            "spec.reuseCooldownSeconds: 100000 is more than the maximum 86400",
            "spec.dns.nameservers[0]: \"dns.example\" is not an IP address",
            "spec.blockSize: 20 is outside 22..=32 for an IPv4 pool",
            "spec.exclude[0]: \"fd00::1\" is not of the family of cidr 10.0.0.0/24",
            "spec.exclude[1]: \"10.0.0.0/16\" is not inside cidr 10.0.0.0/24",
            "spec.exclude[2]: \"::ffff:10.0.0.9\" uses the IPv4-mapped IPv6 address ::ffff:10.0.0.9; write 10.0.0.9 instead",
            "spec.gateway: \"10.0.1.1\" is outside cidr 10.0.0.0/24",
            "spec.routes[0].dst: \"10.1.0.1/16\" is not a network address (the network is 10.1.0.0/16)",
            "spec.routes[0].gw: \"x\" is not an IP address",
            "spec.routes[1].dst: \"fd00::/8\" is not of the family of cidr 10.0.0.0/24",
            "spec.routes[1].gw: \"::ffff:10.0.0.1\" is an IPv4-mapped IPv6 address; write 10.0.0.1 instead",
        ];
        assert_eq!(all, expect);
    }

    #[test]
    fn cidr_problems() {
        let cases = [
            (
                "10.0.0.1/24",
                "is not a network address (the network is 10.0.0.0/24)",
            ),
            ("10.0.0.0", "is not a CIDR"),
            ("banana", "is not a CIDR"),
            ("0.0.0.0/0", "prefix length 0"),
            ("::/0", "prefix length 0"),
            ("::ffff:10.0.0.0/120", "write it as IPv4 (10.0.0.0/24)"),
        ];
        for (cidr, words) in cases {
            let all = problems("p", &spec(cidr));
            assert_eq!(all.len(), 1, "{all:?}");
            assert!(
                all[0].starts_with("spec.cidr: ") && all[0].contains(words),
                "{all:?}"
            );
        }
        // With a bad CIDR the other fields' syntax is still reported.
        let mut s = spec("nope");
        s.exclude = vec!["x".into()];
        s.gateway = Some("y".into());
        assert_eq!(problems("p", &s).len(), 3);
    }

    #[test]
    fn block_size_rules() {
        let with = |cidr: &str, size: Option<u8>| {
            let mut s = spec(cidr);
            s.block_size = size;
            Pool::parse("p", &s).map(|p| p.block_prefix())
        };
        assert_eq!(
            with("10.0.0.0/28", None),
            Ok(28),
            "a small pool is one block"
        );
        assert_eq!(with("fd00::/126", None), Ok(126));
        assert_eq!(with("10.0.0.0/8", Some(32)), Ok(32));
        assert_eq!(with("fd00::/48", Some(118)), Ok(118));
        assert!(
            with("fd00::/48", Some(117))
                .unwrap_err()
                .to_string()
                .contains("118..=128")
        );
        assert!(with("fd00::/48", Some(26)).is_err());
        assert!(
            with("10.0.0.0/24", Some(23))
                .unwrap_err()
                .to_string()
                .contains("shorter than the prefix length")
        );
    }

    #[test]
    fn tiny_ipv4_pools_keep_every_address() {
        // RFC 3021: /31 and /32 have no network or broadcast address.
        assert_eq!(
            Pool::parse("p", &spec("10.0.0.0/31")).unwrap().capacity(),
            2
        );
        assert_eq!(
            Pool::parse("p", &spec("10.0.0.7/32")).unwrap().capacity(),
            1
        );
        assert_eq!(
            Pool::parse("p", &spec("10.0.0.4/30")).unwrap().capacity(),
            2
        );
        assert_eq!(
            Pool::parse("p", &spec("fd00::7/128")).unwrap().capacity(),
            1
        );
        assert_eq!(
            Pool::parse("p", &spec("fd00::6/127")).unwrap().capacity(),
            2
        );
        let mut s = spec("10.0.0.7/32");
        s.gateway = Some("10.0.0.7".into());
        assert!(problems("p", &s)[0].contains("leaves nothing to allocate"));
    }

    #[test]
    fn gateway_may_not_be_network_or_broadcast() {
        let mut s = spec("10.0.0.0/24");
        s.gateway = Some("10.0.0.0".into());
        assert_eq!(
            problems("p", &s),
            ["spec.gateway: \"10.0.0.0\" is the network address of 10.0.0.0/24"]
        );
        s.gateway = Some("10.0.0.255".into());
        assert_eq!(
            problems("p", &s),
            ["spec.gateway: \"10.0.0.255\" is the broadcast address of 10.0.0.0/24"]
        );
        s.gateway = Some("::ffff:10.0.0.1".into());
        assert_eq!(
            problems("p", &s),
            [
                "spec.gateway: \"::ffff:10.0.0.1\" is an IPv4-mapped IPv6 address; write 10.0.0.1 instead"
            ]
        );
        s.gateway = Some("fd00::1".into());
        assert_eq!(
            problems("p", &s),
            ["spec.gateway: \"fd00::1\" is not of the family of cidr 10.0.0.0/24"]
        );
    }

    #[test]
    fn wholly_excluded_blocks_are_unclaimable() {
        let mut s = spec("10.0.0.0/24");
        s.block_size = Some(26);
        // Blocks 0 and 1 are covered by an exclusion plus the network address, block 3
        // by an exclusion plus the broadcast address; only block 2 is claimable.
        s.exclude = vec!["10.0.0.1-10.0.0.127".into(), "10.0.0.192-10.0.0.254".into()];
        let pool = Pool::parse("p", &s).unwrap();
        assert_eq!(
            pool.unclaimable(),
            &[Span { first: 0, last: 1 }, Span { first: 3, last: 3 }]
        );
        assert_eq!(pool.capacity(), 64);
        assert_eq!(pool.block_capacity(&net("10.0.0.128/26")), 64);
    }

    #[test]
    fn reserved_reasons_are_precise() {
        let mut s = spec("10.0.0.0/24");
        s.gateway = Some("10.0.0.1".into());
        s.exclude = vec!["10.0.0.2".into()];
        let pool = Pool::parse("p", &s).unwrap();
        assert!(matches!(
            pool.reserved_reason(ip("10.0.0.0")),
            Some(AllocError::NetworkAddress { .. })
        ));
        assert!(matches!(
            pool.reserved_reason(ip("10.0.0.1")),
            Some(AllocError::Gateway { .. })
        ));
        assert!(matches!(
            pool.reserved_reason(ip("10.0.0.2")),
            Some(AllocError::Excluded { .. })
        ));
        assert!(matches!(
            pool.reserved_reason(ip("10.0.0.255")),
            Some(AllocError::BroadcastAddress { .. })
        ));
        assert_eq!(pool.reserved_reason(ip("10.0.0.3")), None);
    }

    #[test]
    fn exhaustion_carries_pool_capacity_and_use() {
        let mut s = spec("10.0.0.0/24");
        s.gateway = Some("10.0.0.1".into());
        let pool = Pool::parse("blue", &s).unwrap();
        assert_eq!(
            pool.exhausted(250, 3),
            AllocError::PoolExhausted {
                pool: "blue".into(),
                capacity: 253,
                in_use: 250,
                cooling: 3,
            }
        );
    }

    #[test]
    fn overlap_of_cidrs() {
        assert!(overlaps(&net("10.0.0.0/8"), &net("10.1.0.0/16")));
        assert!(overlaps(&net("10.1.0.0/16"), &net("10.0.0.0/8")));
        assert!(overlaps(&net("10.1.0.0/16"), &net("10.1.0.0/16")));
        assert!(!overlaps(&net("10.1.0.0/16"), &net("10.2.0.0/16")));
        assert!(!overlaps(&net("0.0.0.0/1"), &net("::/1")));
        let a = Pool::parse("a", &spec("fd00::/48")).unwrap();
        let b = Pool::parse("b", &spec("fd00:0:0:ff::/64")).unwrap();
        assert!(a.overlaps(&b));
    }
}
