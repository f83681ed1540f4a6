//! Claim ahead: once this node's own blocks of a pool run low, the next block is claimed
//! in the background, so that the ADDs of a burst of pod starts find room claimed already
//! instead of queueing behind a claim (DESIGN.md, "The allocation path", 5).
//!
//! How low is the core's rule ([`Pool::claim_ahead_reserve`]), the same rule by which the
//! controller keeps an empty block the node needs.

use std::sync::Arc;

use jiff::Timestamp;

use super::allocator::{Allocator, taken};
use crate::agent::error::AgentError;
use crate::api::IPPool;
use crate::api::usage::summary_of;
use crate::ledger::blocks::Claim;
use crate::metrics::PoolLabels;
use ipledger_core::{NextStep, Pool};

/// Blocks tried in one claim ahead before the next ADD tries again.
const MAX_TRIES: usize = 4;

impl Allocator {
    /// Starts a claim of `pool`'s next block for this node when its own blocks have fewer
    /// free addresses than the pool's reserve and no claim ahead of that pool runs yet.
    pub(super) fn claim_ahead(self: &Arc<Self>, object: &Arc<IPPool>, pool: &Arc<Pool>) {
        if !self.below_reserve(pool) {
            return;
        }
        if !self
            .claiming_ahead
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pool.name().to_string())
        {
            return;
        }
        let (this, object, pool) = (self.clone(), object.clone(), pool.clone());
        tokio::spawn(async move {
            {
                // Behind the claims of ADDs that found no room: theirs may make this one
                // unneeded.
                let lock = this.claim_lock(pool.name());
                let _claiming = lock.lock().await;
                if let Err(error) = this.claim_next(&object, &pool).await {
                    // Nothing waits for it: the next ADD claims when it needs to.
                    tracing::debug!(pool = pool.name(), %error, "could not claim a block ahead");
                }
            }
            this.claiming_ahead
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(pool.name());
        });
    }

    /// Whether this node's own blocks of `pool` hold fewer free addresses than its reserve.
    /// Addresses still cooling down after release are not free: an ADD cannot take them.
    fn below_reserve(&self, pool: &Pool) -> bool {
        let now = Timestamp::now();
        let free: u128 = self
            .known_blocks(Some(pool.name()))
            .iter()
            .filter(|b| b.spec.node == self.node && b.metadata.deletion_timestamp.is_none())
            .map(|b| summary_of(&self.freshest(b), &self.node).free(pool, now))
            .sum();
        // The largest reserve first: it spares counting the pool's blocks on most ADDs.
        free < pool.claim_ahead_reserve(0)
            && free < pool.claim_ahead_reserve(self.caches.pool_block_count(pool.name()))
    }

    async fn claim_next(&self, object: &IPPool, pool: &Pool) -> Result<(), AgentError> {
        if pool.is_disabled()
            || object.metadata.deletion_timestamp.is_some()
            || !self.below_reserve(pool)
        {
            return Ok(());
        }
        let mut blocks = self.summaries(pool.name()).await?;
        // Nodes starting pods together race for blocks: a block another node won is
        // skipped, and the next one tried.
        for _ in 0..MAX_TRIES {
            // Only a free block: borrowing ahead would take another node's addresses for
            // pods that may never come.
            let NextStep::Claim(cidr) = pool.next_step(&self.node, &blocks, Timestamp::now())
            else {
                return Ok(());
            };
            match self.claim(object, pool, cidr).await? {
                Claim::Won(_) => {
                    self.metrics
                        .claims_ahead
                        .get_or_create(&PoolLabels {
                            pool: pool.name().to_string(),
                        })
                        .inc();
                    return Ok(());
                }
                Claim::Taken => blocks.push(taken(pool, cidr)),
            }
        }
        Ok(())
    }
}
