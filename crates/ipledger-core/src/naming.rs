//! Deterministic IPBlock object names: whoever creates the object named for a block
//! owns it, so every agent must derive the same name from (pool, block CIDR).

use std::fmt::Write;
use std::net::IpAddr;

use ipnet::IpNet;
use sha2::{Digest, Sha256};

/// Longest Kubernetes object name (a DNS-1123 subdomain).
pub const MAX_NAME: usize = 253;

/// The IPBlock object name for `block` of the pool named `pool`: `<pool>.<cidr>` with
/// the CIDR's `.`, `:` and `/` written as `-`, such as `blue.10-244-1-0-26`.
///
/// The CIDR part holds no `.`, so the last `.` splits pool from CIDR and distinct
/// (pool, block) pairs get distinct names. When that would exceed 253 characters the
/// pool part is cut and a hash of the whole pool name appended, which keeps names
/// unique and deterministic. A valid pool name gives a valid DNS-1123 subdomain.
pub fn block_name(pool: &str, block: &IpNet) -> String {
    let cidr = cidr_label(block);
    if pool.len() + 1 + cidr.len() <= MAX_NAME {
        return format!("{pool}.{cidr}");
    }
    let hash = Sha256::digest(pool.as_bytes());
    let mut suffix = String::with_capacity(16);
    for byte in &hash[..8] {
        let _ = write!(suffix, "{byte:02x}");
    }
    let mut keep = MAX_NAME - 1 - cidr.len() - 1 - suffix.len();
    while !pool.is_char_boundary(keep) {
        keep -= 1;
    }
    // A label must end with a letter or digit, and the cut may land after `.` or `-`.
    let head = pool[..keep].trim_end_matches(['.', '-']);
    format!("{head}-{suffix}.{cidr}")
}

/// The block CIDR as one DNS label: hex groups for IPv6 (never the dotted IPv4-mapped
/// form, which could collide with a hex one), a leading `0` instead of `::` so the
/// label starts with a digit.
fn cidr_label(block: &IpNet) -> String {
    let mut label = match block.network() {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => {
            let groups = v6.segments();
            let (run_start, run_len) = longest_zero_run(&groups);
            let mut text = String::new();
            let mut i = 0;
            while i < groups.len() {
                if run_len >= 2 && i == run_start {
                    text.push_str(if i == 0 { "0--" } else { "-" });
                    i += run_len;
                    continue;
                }
                let _ = write!(text, "{:x}", groups[i]);
                if i + 1 < groups.len() {
                    text.push('-');
                }
                i += 1;
            }
            text
        }
    };
    let _ = write!(label, "-{}", block.prefix_len());
    label
}

/// Start and length of the first longest run of zero groups (RFC 5952 compression).
fn longest_zero_run(groups: &[u16; 8]) -> (usize, usize) {
    let (mut best, mut current) = ((0, 0), (0, 0));
    for (i, group) in groups.iter().enumerate() {
        if *group == 0 {
            if current.1 == 0 {
                current.0 = i;
            }
            current.1 += 1;
            if current.1 > best.1 {
                best = current;
            }
        } else {
            current.1 = 0;
        }
    }
    best
}

/// True when `name` is a DNS-1123 subdomain, the syntax of Kubernetes object names.
pub fn is_dns1123_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.split('.').all(|label| {
            let bytes = label.as_bytes();
            let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            !bytes.is_empty()
                && alnum(&bytes[0])
                && alnum(&bytes[bytes.len() - 1])
                && bytes.iter().all(|b| alnum(b) || *b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn names_are_readable() {
        assert_eq!(
            block_name("blue", &net("10.244.1.0/26")),
            "blue.10-244-1-0-26"
        );
        assert_eq!(
            block_name("blue", &net("fd00:10:244::40/122")),
            "blue.fd00-10-244--40-122"
        );
        assert_eq!(
            block_name("blue", &net("fd00:10:244::/122")),
            "blue.fd00-10-244---122"
        );
        assert_eq!(block_name("blue", &net("::/118")), "blue.0---118");
        assert_eq!(
            block_name("blue", &net("::ffff:10.0.0.0/120")),
            "blue.0--ffff-a00-0-120"
        );
        assert_eq!(
            block_name("blue", &net("1:0:0:1::/120")),
            "blue.1-0-0-1---120"
        );
        assert_eq!(
            block_name("blue", &net("1:2:3:4:5:6:7:8/128")),
            "blue.1-2-3-4-5-6-7-8-128"
        );
        for name in [
            block_name("blue", &net("::/118")),
            block_name("a.b-c", &net("fd00::/122")),
        ] {
            assert!(is_dns1123_subdomain(&name), "{name}");
        }
    }

    #[test]
    fn long_pool_names_are_cut_with_a_hash() {
        let block = net("fd00:1234:5678:9abc:def0:1234:5678:9a00/120");
        let long_a = format!("{}a", "p.".repeat(126));
        let long_b = format!("{}b", "p.".repeat(126));
        let (a, b) = (block_name(&long_a, &block), block_name(&long_b, &block));
        assert!(a.len() <= MAX_NAME && b.len() <= MAX_NAME);
        assert_ne!(a, b);
        assert_eq!(a, block_name(&long_a, &block));
        assert!(is_dns1123_subdomain(&a), "{a}");
        assert!(a.ends_with(".fd00-1234-5678-9abc-def0-1234-5678-9a00-120"));
    }

    #[test]
    fn subdomain_syntax() {
        assert!(is_dns1123_subdomain("a"));
        assert!(is_dns1123_subdomain("a-b.c0"));
        for bad in ["", "A", "-a", "a-", "a..b", "a_b", ".a"] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
    }
}
