//! The load's verdicts, from what the load itself saw and what the API holds at the end,
//! never from ipledger's own bookkeeping: pure functions over plain data.
//!
//! An attachment holds its addresses from the moment its ADD returned them until the
//! moment its DEL was called (or its pod deleted without DEL): a runtime may hand the
//! address to the pod as soon as ADD returns, and stops using it no earlier than it
//! calls DEL. Two attachments whose intervals for one address overlap were both live
//! with it: a duplicate.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

/// What the load recorded of one attachment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The attachment's `CNI_CONTAINERID` (the bench's attachments all use `eth0`).
    pub container_id: String,
    /// The addresses its ADD returned.
    pub addresses: Vec<IpAddr>,
    /// When its ADD returned, from the start of the run.
    pub from: Duration,
    /// When its DEL was called or its pod deleted; `None` while it is live.
    pub until: Option<Duration>,
}

/// Two attachments that held one address at overlapping times.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Overlap {
    pub address: IpAddr,
    /// The attachment that held it first.
    pub first: String,
    /// The attachment that got it while the first still held it.
    pub second: String,
    /// Seconds into the run at which the second got it.
    pub at_seconds: f64,
}

/// Every pair of attachments of `history` that held one address at overlapping times,
/// each overlap once, in address order.
pub fn overlaps(history: &[Held]) -> Vec<Overlap> {
    let mut by_address: BTreeMap<IpAddr, Vec<&Held>> = BTreeMap::new();
    for held in history {
        for address in &held.addresses {
            by_address.entry(*address).or_default().push(held);
        }
    }
    let mut found = Vec::new();
    for (address, mut holders) in by_address {
        holders.sort_by_key(|h| h.from);
        // Sweep in start order: every holder still live when a later one starts overlaps
        // it. `open` keeps the holders whose interval has not ended yet.
        let mut open: Vec<&Held> = Vec::new();
        for held in holders {
            open.retain(|o| o.until.is_none_or(|until| until > held.from));
            for earlier in &open {
                // A retried ADD of one attachment gets its own address back: not two
                // attachments.
                if earlier.container_id != held.container_id {
                    found.push(Overlap {
                        address,
                        first: earlier.container_id.clone(),
                        second: held.container_id.clone(),
                        at_seconds: held.from.as_secs_f64(),
                    });
                }
            }
            open.push(held);
        }
    }
    found
}

/// The attachments of `history` live at its end: ADDed and neither DELeted nor deleted.
pub fn live(history: &[Held]) -> BTreeSet<&str> {
    history
        .iter()
        .filter(|h| h.until.is_none())
        .map(|h| h.container_id.as_str())
        .collect()
}

/// One allocation record as the API holds it at the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub address: IpAddr,
    pub container_id: String,
}

/// An address the API records for more than one attachment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Shared {
    pub address: IpAddr,
    pub holders: Vec<String>,
}

/// The addresses `records` hold more than once, in address order.
pub fn shared_addresses(records: &[Record]) -> Vec<Shared> {
    let mut by_address: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
    for record in records {
        by_address
            .entry(record.address)
            .or_default()
            .push(record.container_id.clone());
    }
    by_address
        .into_iter()
        .filter(|(_, holders)| holders.len() > 1)
        .map(|(address, holders)| Shared { address, holders })
        .collect()
}

/// How the API's records stand against the live attachments.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Ledger {
    /// Records whose attachment is not live: leaked addresses.
    pub leaked: Vec<String>,
    /// Live attachments the API holds no record of: an address that could be handed out
    /// again while its pod uses it.
    pub lost: Vec<String>,
}

impl Ledger {
    /// Nothing leaked and nothing lost.
    pub fn settled(&self) -> bool {
        self.leaked.is_empty() && self.lost.is_empty()
    }
}

/// Compares `records` with the `live` attachments.
pub fn ledger(records: &[Record], live: &BTreeSet<&str>) -> Ledger {
    let recorded: BTreeSet<&str> = records.iter().map(|r| r.container_id.as_str()).collect();
    Ledger {
        leaked: recorded
            .iter()
            .filter(|id| !live.contains(*id))
            .map(|id| id.to_string())
            .collect(),
        lost: live
            .iter()
            .filter(|id| !recorded.contains(*id))
            .map(|id| id.to_string())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn held(id: &str, address: &str, from: u64, until: Option<u64>) -> Held {
        Held {
            container_id: id.into(),
            addresses: vec![ip(address)],
            from: Duration::from_millis(from),
            until: until.map(Duration::from_millis),
        }
    }

    #[test]
    fn an_address_handed_on_after_its_del_is_no_duplicate() {
        let history = [
            held("a", "10.0.0.1", 0, Some(10)),
            held("b", "10.0.0.1", 10, Some(20)),
            held("c", "10.0.0.1", 25, None),
        ];
        assert_eq!(overlaps(&history), vec![]);
    }

    #[test]
    fn an_address_handed_out_before_the_holders_del_is_a_duplicate() {
        let history = [
            held("a", "10.0.0.1", 0, Some(10)),
            held("b", "10.0.0.1", 9, Some(20)),
            held("c", "10.0.0.2", 0, None),
            held("d", "10.0.0.2", 50, None),
        ];
        assert_eq!(
            overlaps(&history),
            vec![
                Overlap {
                    address: ip("10.0.0.1"),
                    first: "a".into(),
                    second: "b".into(),
                    at_seconds: 0.009
                },
                Overlap {
                    address: ip("10.0.0.2"),
                    first: "c".into(),
                    second: "d".into(),
                    at_seconds: 0.05
                },
            ]
        );
    }

    #[test]
    fn a_long_holder_overlaps_every_later_one() {
        // b ends before c starts, but a is live across both.
        let history = [
            held("a", "10.0.0.1", 0, None),
            held("b", "10.0.0.1", 5, Some(6)),
            held("c", "10.0.0.1", 7, Some(8)),
        ];
        let found: Vec<(String, String)> = overlaps(&history)
            .into_iter()
            .map(|o| (o.first, o.second))
            .collect();
        assert_eq!(
            found,
            vec![("a".into(), "b".into()), ("a".into(), "c".into())]
        );
    }

    #[test]
    fn one_attachment_added_twice_is_not_two() {
        let history = [
            held("a", "10.0.0.1", 0, None),
            held("a", "10.0.0.1", 5, None),
        ];
        assert_eq!(overlaps(&history), vec![]);
    }

    #[test]
    fn dual_stack_addresses_are_each_checked() {
        let mut a = held("a", "10.0.0.1", 0, None);
        a.addresses.push(ip("fd00::1"));
        let b = held("b", "fd00::1", 3, None);
        let found = overlaps(&[a, b]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].address, ip("fd00::1"));
    }

    #[test]
    fn the_ledger_shows_shared_leaked_and_lost() {
        let records = [
            Record {
                address: ip("10.0.0.1"),
                container_id: "a".into(),
            },
            Record {
                address: ip("10.0.0.1"),
                container_id: "x".into(),
            },
            Record {
                address: ip("10.0.0.2"),
                container_id: "gone".into(),
            },
        ];
        assert_eq!(
            shared_addresses(&records),
            vec![Shared {
                address: ip("10.0.0.1"),
                holders: vec!["a".into(), "x".into()]
            }]
        );
        let history = [
            held("a", "10.0.0.1", 0, None),
            held("x", "10.0.0.1", 1, None),
            held("gone", "10.0.0.2", 0, Some(4)),
            held("b", "10.0.0.3", 0, None),
        ];
        let live = live(&history);
        let standing = ledger(&records, &live);
        assert_eq!(standing.leaked, vec!["gone".to_string()]);
        assert_eq!(standing.lost, vec!["b".to_string()]);
        assert!(!standing.settled());
        let settled = ledger(&records[..2], &["a", "x"].into_iter().collect());
        assert!(settled.settled());
    }
}
