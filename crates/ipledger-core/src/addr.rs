//! Address arithmetic: addresses as integers, so one code path serves IPv4 and IPv6
//! and no computation ever walks an address space.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;

/// The integer value of an address (IPv4 addresses occupy the low 32 bits).
pub(crate) fn to_int(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address of integer `value` in the family of `like`.
///
/// Callers only pass values inside a network of that family, so the IPv4 truncation
/// never drops set bits.
pub(crate) fn from_int(value: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(value as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// True when both addresses are of the same family.
pub(crate) fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// The IPv4 address behind an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`).
pub(crate) fn mapped_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
        IpAddr::V4(_) => None,
    }
}

/// An inclusive run of addresses (or of block indices) as integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Span {
    /// First member.
    pub first: u128,
    /// Last member (inclusive, so a span can end at `u128::MAX`).
    pub last: u128,
}

impl Span {
    /// The span of every address of `net`.
    pub fn of_net(net: &IpNet) -> Span {
        Span {
            first: to_int(net.network()),
            last: to_int(net.broadcast()),
        }
    }

    /// The span holding only `value`.
    pub fn single(value: u128) -> Span {
        Span {
            first: value,
            last: value,
        }
    }

    /// Number of members; `None` only for the full 2^128 span.
    pub fn len(&self) -> Option<u128> {
        (self.last - self.first).checked_add(1)
    }

    /// The members shared with `other`, if any.
    pub fn intersect(&self, other: &Span) -> Option<Span> {
        let first = self.first.max(other.first);
        let last = self.last.min(other.last);
        (first <= last).then_some(Span { first, last })
    }
}

/// Sorts spans and joins those that overlap or touch, so each member of the union is
/// in exactly one span and a range wholly covered by the union lies inside one span.
pub(crate) fn merge(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_unstable();
    let mut merged: Vec<Span> = Vec::with_capacity(spans.len());
    for span in spans {
        match merged.last_mut() {
            Some(last) if span.first <= last.last.saturating_add(1) => {
                last.last = last.last.max(span.last);
            }
            _ => merged.push(span),
        }
    }
    merged
}

/// The span of `merged` (sorted, disjoint) that holds `value`, if any.
pub(crate) fn find_span(merged: &[Span], value: u128) -> Option<&Span> {
    let i = merged.partition_point(|s| s.last < value);
    merged.get(i).filter(|s| s.first <= value)
}

/// How many members of `window` lie in `merged` (sorted, disjoint); saturates at
/// `u128::MAX`, which only the full IPv6 space could reach.
pub(crate) fn covered(merged: &[Span], window: &Span) -> u128 {
    let start = merged.partition_point(|s| s.last < window.first);
    merged[start..]
        .iter()
        .take_while(|s| s.first <= window.last)
        .filter_map(|s| s.intersect(window))
        .fold(0u128, |sum, s| {
            sum.saturating_add(s.len().unwrap_or(u128::MAX))
        })
}

/// An address written by an operator: a single address, a CIDR or an `a-b` range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AddressSet {
    /// One address.
    Single(IpAddr),
    /// A network in CIDR notation; the address is the network address.
    Net(IpNet),
    /// An inclusive range of addresses of one family, first not after last.
    Range(IpAddr, IpAddr),
}

impl AddressSet {
    /// Parses a single address, a CIDR or an inclusive `a-b` range; the error says
    /// what is wrong in words an operator can act on.
    pub fn parse(text: &str) -> Result<AddressSet, String> {
        let text = text.trim();
        if let Some((first, last)) = text.split_once('-') {
            let (Ok(first), Ok(last)) = (
                IpAddr::from_str(first.trim()),
                IpAddr::from_str(last.trim()),
            ) else {
                return Err("is not an IP address, CIDR or range".into());
            };
            if !same_family(first, last) {
                return Err("is a range whose ends are of different IP families".into());
            }
            if to_int(first) > to_int(last) {
                return Err("is a range whose first address is after its last".into());
            }
            return Ok(AddressSet::Range(first, last));
        }
        if text.contains('/') {
            let net = parse_network(text)?;
            return Ok(AddressSet::Net(net));
        }
        IpAddr::from_str(text)
            .map(AddressSet::Single)
            .map_err(|_| "is not an IP address, CIDR or range".into())
    }

    /// The addresses of the set.
    pub fn span(&self) -> Span {
        match self {
            AddressSet::Single(ip) => Span::single(to_int(*ip)),
            AddressSet::Net(net) => Span::of_net(net),
            AddressSet::Range(first, last) => Span {
                first: to_int(*first),
                last: to_int(*last),
            },
        }
    }

    /// An address of the set, which tells its family.
    pub fn first(&self) -> IpAddr {
        match self {
            AddressSet::Single(ip) | AddressSet::Range(ip, _) => *ip,
            AddressSet::Net(net) => net.network(),
        }
    }

    /// The IPv4-mapped IPv6 address the set is written with, if any.
    pub fn mapped(&self) -> Option<(IpAddr, Ipv4Addr)> {
        let ends = match self {
            AddressSet::Single(ip) => [*ip, *ip],
            AddressSet::Net(net) => [net.network(), net.broadcast()],
            AddressSet::Range(first, last) => [*first, *last],
        };
        ends.into_iter()
            .find_map(|ip| mapped_v4(ip).map(|v4| (ip, v4)))
    }
}

/// Parses a network in CIDR notation whose address is the network address.
pub(crate) fn parse_network(text: &str) -> Result<IpNet, String> {
    let net = IpNet::from_str(text.trim()).map_err(|_| "is not a CIDR".to_string())?;
    if net.addr() != net.network() {
        return Err(format!(
            "is not a network address (the network is {})",
            net.trunc()
        ));
    }
    Ok(net)
}

/// `text` quoted for an error message, cut short so a huge input cannot make a huge
/// message.
pub(crate) fn quote(text: &str) -> String {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn integers_round_trip_in_both_families() {
        for s in [
            "0.0.0.0",
            "10.1.2.3",
            "255.255.255.255",
            "::",
            "fd00::1",
            "ffff::ffff",
        ] {
            assert_eq!(from_int(to_int(ip(s)), ip(s)), ip(s));
        }
        assert_eq!(to_int(ip("0.0.1.2")), 258);
    }

    #[test]
    fn merge_joins_overlapping_and_touching_spans() {
        let spans = vec![
            Span {
                first: 10,
                last: 12,
            },
            Span { first: 0, last: 3 },
            Span { first: 4, last: 5 },
            Span {
                first: 11,
                last: 20,
            },
            Span {
                first: 30,
                last: 30,
            },
        ];
        assert_eq!(
            merge(spans),
            vec![
                Span { first: 0, last: 5 },
                Span {
                    first: 10,
                    last: 20
                },
                Span {
                    first: 30,
                    last: 30
                }
            ]
        );
        let top = vec![
            Span {
                first: u128::MAX,
                last: u128::MAX,
            },
            Span {
                first: 0,
                last: u128::MAX - 1,
            },
        ];
        assert_eq!(
            merge(top),
            vec![Span {
                first: 0,
                last: u128::MAX
            }]
        );
    }

    #[test]
    fn covered_counts_only_the_window() {
        let merged = vec![
            Span { first: 0, last: 5 },
            Span {
                first: 10,
                last: 20,
            },
        ];
        assert_eq!(covered(&merged, &Span { first: 4, last: 12 }), 2 + 3);
        assert_eq!(covered(&merged, &Span { first: 6, last: 9 }), 0);
        assert_eq!(
            find_span(&merged, 15),
            Some(&Span {
                first: 10,
                last: 20
            })
        );
        assert_eq!(find_span(&merged, 7), None);
    }

    #[test]
    fn address_sets_parse_all_three_forms() {
        assert_eq!(
            AddressSet::parse("10.0.0.7"),
            Ok(AddressSet::Single(ip("10.0.0.7")))
        );
        assert_eq!(
            AddressSet::parse("10.0.0.10 - 10.0.0.20").map(|s| s.span().len()),
            Ok(Some(11))
        );
        assert_eq!(
            AddressSet::parse("10.0.0.0/28").map(|s| s.span().len()),
            Ok(Some(16))
        );
        assert_eq!(
            AddressSet::parse("10.0.0.300"),
            Err("is not an IP address, CIDR or range".into())
        );
        assert!(
            AddressSet::parse("10.0.0.5/28")
                .unwrap_err()
                .contains("10.0.0.0/28")
        );
        assert!(
            AddressSet::parse("10.0.0.9-10.0.0.1")
                .unwrap_err()
                .contains("after")
        );
        assert!(
            AddressSet::parse("10.0.0.1-fd00::1")
                .unwrap_err()
                .contains("families")
        );
        assert_eq!(
            AddressSet::parse("::ffff:10.0.0.1").unwrap().mapped(),
            Some((ip("::ffff:10.0.0.1"), "10.0.0.1".parse().unwrap()))
        );
    }

    #[test]
    fn quote_cuts_long_input() {
        assert_eq!(quote("ab"), "\"ab\"");
        let long = "x".repeat(1000);
        assert!(quote(&long).len() < 80);
    }
}
