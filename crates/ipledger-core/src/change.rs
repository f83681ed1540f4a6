//! `Change`: what one request asks of one block, and how [`Block::apply`] decides it.
//!
//! A block's writer commits many changes in one compare-and-swap. Deciding them is pure,
//! so that after a conflict every change of the batch is decided again on the fresh
//! record, never on the stale one.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use jiff::Timestamp;

use crate::{AllocError, Attachment, Block, PodRef, Pool};

/// A change asked of a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Allocate an address to the attachment (the next free one, or `requested`);
    /// `borrower` names the allocating node when the block belongs to another node.
    Allocate {
        /// Who gets the address.
        attachment: Attachment,
        /// The pod, when the runtime named it.
        pod: Option<PodRef>,
        /// The address asked for, if any.
        requested: Option<IpAddr>,
        /// The borrowing node, when the block is another node's.
        borrower: Option<String>,
    },
    /// Release whatever the attachment holds in this block.
    Release {
        /// Whose address.
        attachment: Attachment,
    },
    /// CNI GC: release every allocation of `network` made for pods of `node` whose
    /// (containerID, ifName) is not in `live`, and that was made before `listed_at`.
    Collect {
        /// The CNI network being collected.
        network: String,
        /// The runtime's valid attachments: (containerID, ifName).
        live: Arc<HashSet<(String, String)>>,
        /// The node whose runtime sent the list.
        node: String,
        /// The earliest the runtime may have taken its list: an allocation made at or
        /// after it may belong to an ADD the list predates, and is kept.
        listed_at: Timestamp,
    },
}

/// What became of one [`Change`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The address now held (new, or held already).
    Allocated(IpAddr),
    /// The allocation was refused (block full, requested address taken, ...).
    Refused(AllocError),
    /// The addresses released (none when nothing was held).
    Released(Vec<(Attachment, IpAddr)>),
}

/// An allocation asked of a block whose pool is not known: only releases are decided
/// without the pool, so that a pool missing from a cache never keeps an address held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeedsPool;

impl Block {
    /// Decides `change` on this block at `now`.
    pub fn apply(
        &mut self,
        pool: Option<&Pool>,
        change: &Change,
        now: Timestamp,
    ) -> Result<Outcome, NeedsPool> {
        Ok(match change {
            Change::Allocate {
                attachment,
                pod,
                requested,
                borrower,
            } => {
                let pool = pool.ok_or(NeedsPool)?;
                let result = match requested {
                    None => self.allocate(pool, attachment, pod.as_ref(), now),
                    Some(ip) => self.allocate_requested(pool, *ip, attachment, pod.as_ref(), now),
                };
                match result {
                    Ok(ip) => {
                        if let Some(node) = borrower {
                            self.lend(ip, node);
                        }
                        Outcome::Allocated(ip)
                    }
                    Err(e) => Outcome::Refused(e),
                }
            }
            Change::Release { attachment } => Outcome::Released(
                self.release(attachment, now)
                    .map(|ip| (attachment.clone(), ip))
                    .into_iter()
                    .collect(),
            ),
            Change::Collect {
                network,
                live,
                node,
                listed_at,
            } => {
                let stale: Vec<Attachment> = self
                    .allocations()
                    .filter(|a| a.attachment.network() == network)
                    // The ledger stores whole seconds rounded down: `<` keeps every
                    // allocation that may be as young as the list.
                    .filter(|a| a.allocated_at < *listed_at)
                    // Only the runtime of the node holding the pod knows whether it lives.
                    .filter(|a| a.node.as_deref().unwrap_or(self.node()) == node)
                    .filter(|a| {
                        !live.contains(&(
                            a.attachment.container_id().to_string(),
                            a.attachment.if_name().to_string(),
                        ))
                    })
                    .map(|a| a.attachment.clone())
                    .collect();
                Outcome::Released(
                    stale
                        .into_iter()
                        .filter_map(|a| self.release(&a, now).map(|ip| (a, ip)))
                        .collect(),
                )
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PoolSpec;

    fn pool() -> Pool {
        let spec = PoolSpec {
            cidr: "10.0.0.0/24".into(),
            block_size: Some(28),
            ..Default::default()
        };
        Pool::parse("p", &spec).unwrap()
    }

    fn att(network: &str, id: &str) -> Attachment {
        Attachment::new(network, id, "eth0").unwrap()
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn later(seconds: i64) -> Timestamp {
        now() + jiff::SignedDuration::from_secs(seconds)
    }

    fn allocate(block: &mut Block, pool: &Pool, a: &Attachment, borrower: Option<&str>) -> IpAddr {
        let change = Change::Allocate {
            attachment: a.clone(),
            pod: None,
            requested: None,
            borrower: borrower.map(String::from),
        };
        match block.apply(Some(pool), &change, now()) {
            Ok(Outcome::Allocated(ip)) => ip,
            other => panic!("expected an address, got {other:?}"),
        }
    }

    #[test]
    fn collect_releases_only_this_nodes_dead_attachments_of_the_network() {
        let pool = pool();
        let mut block = Block::new(&pool, "10.0.0.0/28".parse().unwrap(), "n1").unwrap();
        allocate(&mut block, &pool, &att("net", "live"), None);
        allocate(&mut block, &pool, &att("net", "dead"), None);
        allocate(&mut block, &pool, &att("other", "dead-elsewhere"), None);
        allocate(&mut block, &pool, &att("net", "borrowed"), Some("n2"));
        let live = Arc::new(HashSet::from([("live".to_string(), "eth0".to_string())]));
        let collect = Change::Collect {
            network: "net".into(),
            live,
            node: "n1".into(),
            listed_at: later(60),
        };

        let Ok(Outcome::Released(released)) = block.apply(None, &collect, later(60)) else {
            panic!("collect releases, without the pool too");
        };

        let ids: Vec<&str> = released.iter().map(|(a, _)| a.container_id()).collect();
        assert_eq!(
            ids,
            ["dead"],
            "n2's borrowed address and the other network stay"
        );
        assert_eq!(block.allocations().count(), 3);
    }

    /// GC racing ADD: the runtime takes its list, an ADD commits, then the GC built on
    /// the older list arrives. The new allocation survives; once the grace has passed
    /// since it, a GC without it releases it.
    #[test]
    fn collect_keeps_allocations_younger_than_its_list() {
        let pool = pool();
        let mut block = Block::new(&pool, "10.0.0.0/28".parse().unwrap(), "n1").unwrap();
        let grace = jiff::SignedDuration::from_secs(60);
        // The runtime lists its attachments at now(), before the ADD.
        let listed = Arc::new(HashSet::new());
        // The ADD commits half a second later.
        let change = Change::Allocate {
            attachment: att("net", "new"),
            pod: None,
            requested: None,
            borrower: None,
        };
        let added_at = now() + jiff::SignedDuration::from_millis(500);
        assert!(matches!(
            block.apply(Some(&pool), &change, added_at),
            Ok(Outcome::Allocated(_))
        ));
        // The GC arrives 2 s after the list: the agent spares what the grace covers.
        let gc_at = later(2);
        let collect = |at: Timestamp| Change::Collect {
            network: "net".into(),
            live: listed.clone(),
            node: "n1".into(),
            listed_at: at - grace,
        };
        assert_eq!(
            block.apply(None, &collect(gc_at), gc_at),
            Ok(Outcome::Released(vec![]))
        );
        // Exactly at the grace it is still spared (whole seconds, rounded down).
        let edge = now() + grace;
        assert_eq!(
            block.apply(None, &collect(edge), edge),
            Ok(Outcome::Released(vec![]))
        );
        let after = edge + jiff::SignedDuration::from_secs(1);
        let Ok(Outcome::Released(released)) = block.apply(None, &collect(after), after) else {
            panic!("collect releases");
        };
        assert_eq!(released.len(), 1, "the grace is over: {released:?}");
    }

    #[test]
    fn an_unknown_pool_fails_allocations_but_not_releases() {
        let pool = pool();
        let mut block = Block::new(&pool, "10.0.0.0/28".parse().unwrap(), "n1").unwrap();
        let ip = allocate(&mut block, &pool, &att("net", "c1"), None);
        let change = Change::Allocate {
            attachment: att("net", "c2"),
            pod: None,
            requested: None,
            borrower: None,
        };
        assert_eq!(block.apply(None, &change, now()), Err(NeedsPool));
        let release = Change::Release {
            attachment: att("net", "c1"),
        };
        assert_eq!(
            block.apply(None, &release, now()),
            Ok(Outcome::Released(vec![(att("net", "c1"), ip)]))
        );
    }

    #[test]
    fn a_borrowed_allocation_names_its_node() {
        let pool = pool();
        let mut block = Block::new(&pool, "10.0.0.0/28".parse().unwrap(), "n1").unwrap();
        let ip = allocate(&mut block, &pool, &att("net", "c1"), Some("n2"));
        assert_eq!(block.holder(ip).unwrap().node.as_deref(), Some("n2"));
    }
}
