//! Field checks shared by the environment and config parsers.
//!
//! Each check takes the field's name and returns a message that starts with it, so the
//! runtime's event says exactly what to fix.

use std::net::IpAddr;

use ipnet::IpNet;

use ipledger_core::is_cni_identifier;

/// Longest container id accepted (the ledger's limit); runtimes use 64 hex digits.
pub const MAX_CONTAINER_ID_BYTES: usize = ipledger_core::MAX_CONTAINER_ID;
/// Longest Linux interface name (IFNAMSIZ - 1).
pub const MAX_IF_NAME_BYTES: usize = ipledger_core::MAX_IF_NAME;
/// Longest CNI network name accepted (the ledger's limit).
pub const MAX_NETWORK_NAME_BYTES: usize = ipledger_core::MAX_NETWORK;
/// Longest network namespace path accepted (PATH_MAX).
pub const MAX_NETNS_BYTES: usize = 4096;

/// A network namespace path (`CNI_NETNS`), at most PATH_MAX bytes.
pub fn netns(field: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_NETNS_BYTES {
        return Err(format!("{field}: longer than {MAX_NETNS_BYTES} bytes"));
    }
    Ok(())
}

/// A container id as the CNI spec defines it, at most 128 bytes.
pub fn container_id(field: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_CONTAINER_ID_BYTES {
        return Err(format!(
            "{field}: longer than {MAX_CONTAINER_ID_BYTES} bytes ({} bytes)",
            value.len()
        ));
    }
    if !is_cni_identifier(value) {
        return Err(format!(
            "{field}: {value:?} must start with a letter or digit followed by letters, digits, '_', '.' or '-'"
        ));
    }
    Ok(())
}

/// A Linux interface name: 1–15 bytes, not `.` or `..`, no `/`, `:` or whitespace.
pub fn if_name(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{field}: empty"));
    }
    if value.len() > MAX_IF_NAME_BYTES {
        return Err(format!(
            "{field}: {value:?} is longer than {MAX_IF_NAME_BYTES} bytes"
        ));
    }
    if value == "." || value == ".." {
        return Err(format!("{field}: {value:?} is not a valid interface name"));
    }
    if let Some(c) = value
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!("{field}: {value:?} contains {c:?}"));
    }
    Ok(())
}

/// A CNI network name (`name` of the network configuration).
pub fn network_name(field: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_NETWORK_NAME_BYTES {
        return Err(format!(
            "{field}: longer than {MAX_NETWORK_NAME_BYTES} bytes"
        ));
    }
    if !is_cni_identifier(value) {
        return Err(format!(
            "{field}: {value:?} must start with a letter or digit followed by letters, digits, '_', '.' or '-'"
        ));
    }
    Ok(())
}

/// A Kubernetes DNS-1123 label (namespace names): 1–63 of `a-z0-9-`, alphanumeric ends.
pub fn dns_label(field: &str, value: &str) -> Result<(), String> {
    dns_name(field, value, 63, false)
}

/// A Kubernetes DNS-1123 subdomain (pod and IPPool names): dot-separated labels, up to
/// 253 of `a-z0-9-.`; the same rule block names are built with.
pub fn dns_subdomain(field: &str, value: &str) -> Result<(), String> {
    if ipledger_core::is_dns1123_subdomain(value) {
        Ok(())
    } else {
        Err(dns_name_error(field, value, 253, true))
    }
}

fn dns_name(field: &str, value: &str, max: usize, dots: bool) -> Result<(), String> {
    let allowed =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.');
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = !value.is_empty()
        && value.len() <= max
        && value.chars().all(allowed)
        && value.starts_with(alnum)
        && value.ends_with(alnum);
    if ok {
        Ok(())
    } else {
        Err(dns_name_error(field, value, max, dots))
    }
}

fn dns_name_error(field: &str, value: &str, max: usize, dots: bool) -> String {
    format!(
        "{field}: {value:?} is not a valid Kubernetes name (at most {max} lowercase letters, digits, '-'{}, starting and ending alphanumeric)",
        if dots { ", '.'" } else { "" }
    )
}

/// A pod UID: a UUID, at most as long as the ledger stores, of `A-Za-z0-9-`.
pub fn pod_uid(field: &str, value: &str) -> Result<(), String> {
    use ipledger_core::MAX_POD_UID;
    if !value.is_empty()
        && value.len() <= MAX_POD_UID
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        Ok(())
    } else {
        Err(format!(
            "{field}: {value:?} is not a valid pod UID (letters, digits and '-', at most {MAX_POD_UID})"
        ))
    }
}

/// Pools per request: one per IP family.
pub const MAX_POOLS: usize = 2;

/// IPPool names: Kubernetes names, at most one per IP family, none twice.
pub fn pool_names(field: &str, pools: &[String]) -> Result<(), String> {
    if pools.len() > MAX_POOLS {
        return Err(format!(
            "{field}: {} pools given; name at most one per IP family",
            pools.len()
        ));
    }
    for (i, pool) in pools.iter().enumerate() {
        dns_subdomain(&format!("{field}[{i}]"), pool)?;
        if pools[..i].contains(pool) {
            return Err(format!("{field}: {pool:?} is named twice"));
        }
    }
    Ok(())
}

/// At most one address per IP family, because ipledger allocates one per family.
pub fn one_address_per_family(field: &str, ips: &[IpAddr]) -> Result<(), String> {
    for (i, ip) in ips.iter().enumerate() {
        if let Some(other) = ips[..i].iter().find(|o| o.is_ipv4() == ip.is_ipv4()) {
            return Err(format!(
                "{field}: {other} and {ip} are of the same IP family; ipledger allocates one address per family"
            ));
        }
    }
    Ok(())
}

/// Requested addresses, each a bare address or an address with a prefix length
/// (`runtimeConfig.ips` uses CIDR form); at most one per IP family, because ipledger
/// allocates one address per family.
pub fn requested_ips<'a>(
    field: &str,
    items: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<IpAddr>, String> {
    let ips = items
        .into_iter()
        .map(|item| {
            item.parse::<IpAddr>()
                .or_else(|_| item.parse::<IpNet>().map(|net| net.addr()))
                .map_err(|_| format!("{field}: {item:?} is not an IP address"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    one_address_per_family(field, &ips)?;
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        for good in ["a", "0", "abc_def.g-h", &"f".repeat(128)] {
            assert!(container_id("id", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "_a",
            ".a",
            "-a",
            "a b",
            "a/b",
            "a;b",
            "ä",
            &"f".repeat(129),
        ] {
            let error = container_id("id", bad).unwrap_err();
            assert!(error.starts_with("id: "), "{error}");
        }
    }

    #[test]
    fn interface_names() {
        for good in ["eth0", "net1", "a", "123456789012345", "x.y", "..."] {
            assert!(if_name("ifname", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "1234567890123456",
            "a/b",
            "a:b",
            "a b",
            "a\nb",
        ] {
            let error = if_name("ifname", bad).unwrap_err();
            assert!(error.starts_with("ifname: "), "{error}");
        }
    }

    #[test]
    fn network_names() {
        assert!(network_name("name", "k8s-pod-network").is_ok());
        assert!(network_name("name", "net_1.a").is_ok());
        for bad in ["", "-net", "net work", "net/1"] {
            assert!(network_name("name", bad).unwrap_err().starts_with("name: "));
        }
    }

    #[test]
    fn kubernetes_names() {
        assert!(dns_label("ns", "kube-system").is_ok());
        assert!(dns_label("ns", "a.b").is_err());
        assert!(dns_label("ns", &"a".repeat(64)).is_err());
        assert!(dns_subdomain("pool", "v4.pool-1").is_ok());
        for bad in ["", "Upper", "-a", "a-", "a_b", &"a".repeat(254)] {
            assert!(
                dns_subdomain("pool", bad)
                    .unwrap_err()
                    .starts_with("pool: ")
            );
        }
        assert!(pod_uid("uid", "0b7d4c9e-7f1a-4c2b-9d55-0f9e1c2d3a4b").is_ok());
        assert!(pod_uid("uid", "a;b").is_err());
    }

    #[test]
    fn pool_name_lists() {
        assert!(pool_names("pools", &[]).is_ok());
        assert!(pool_names("pools", &["v4".into(), "v6".into()]).is_ok());
        let cases: [(&[&str], &str); 3] = [
            (&["a", "b", "c"], "pools: 3 pools given"),
            (&["a", "a"], "pools: \"a\" is named twice"),
            (&["a", "B"], "pools[1]: "),
        ];
        for (pools, prefix) in cases {
            let pools: Vec<String> = pools.iter().map(|p| p.to_string()).collect();
            let error = pool_names("pools", &pools).unwrap_err();
            assert!(error.starts_with(prefix), "{error}");
        }
    }

    #[test]
    fn requested_addresses() {
        let ips = requested_ips("ips", ["10.0.0.5/24", "fd00::5"]).unwrap();
        assert_eq!(
            ips,
            vec![
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        let error = requested_ips("ips", ["10.0.0.5", "10.0.0.6"]).unwrap_err();
        assert!(error.starts_with("ips: 10.0.0.5 and 10.0.0.6"), "{error}");
        let error = requested_ips("ips", ["10.0.0"]).unwrap_err();
        assert_eq!(error, "ips: \"10.0.0\" is not an IP address");
        assert!(requested_ips("ips", []).unwrap().is_empty());
    }
}
