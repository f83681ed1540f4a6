//! STATUS (CNI 1.1): whether an ADD on this network can succeed now.

use super::allocator::{Allocator, room};
use crate::agent::error::AgentError;
use crate::agent::pool_choice::{ChoiceError, ChoiceInput, choose_pools, overlapped_by};
use ipledger_cni::protocol::{StatusQuery, StatusResponse};
use ipledger_core::NextStep;

impl Allocator {
    /// STATUS: can an ADD on this network succeed now?
    pub async fn status(&self, query: StatusQuery) -> Result<StatusResponse, AgentError> {
        let cannot = |why: String| AgentError::CannotAllocate(why);
        self.client
            .apiserver_version()
            .await
            .map_err(|e| cannot(format!("the Kubernetes API is unreachable: {e}")))?;
        let named: Vec<String> = query.pool_names().into_iter().map(String::from).collect();
        let known = self.caches.pools.state();
        let node_labels = self
            .node_labels()
            .await
            .map_err(|e| cannot(e.to_string()))?;
        let input = ChoiceInput {
            config_pools: &named,
            node_labels: Some(&node_labels),
            ..Default::default()
        };
        let choice = match choose_pools(&input, &known) {
            Ok(choice) => choice,
            // Without a pod, annotations and namespace selectors are unknown: an ADD may
            // still find a pool through them, if any pool can allocate at all.
            Err(ChoiceError::NoPool) if named.is_empty() => {
                let usable = known
                    .iter()
                    .any(|p| !p.spec.disabled && overlapped_by(p, &known).is_none());
                if usable {
                    return Ok(StatusResponse {});
                }
                return Err(cannot(if known.is_empty() {
                    "no IPPool exists".to_string()
                } else {
                    format!(
                        "none of the {} IPPools can allocate: each is disabled or overlaps an older pool",
                        known.len()
                    )
                }));
            }
            Err(e) => return Err(cannot(e.to_string())),
        };
        for family in &choice.families {
            let mut reasons = Vec::new();
            for name in &family.pools {
                match self.has_room(name).await {
                    Ok(true) => break,
                    Ok(false) => reasons.push(format!("IPPool {name} has no free address")),
                    Err(e) => reasons.push(e.to_string()),
                }
            }
            if reasons.len() == family.pools.len() {
                return Err(cannot(reasons.join("; ")));
            }
        }
        Ok(StatusResponse {})
    }

    /// Whether an ADD could get an address from the pool now: room in this node's blocks,
    /// else a block to claim or borrow from, going by the block index (no block is read).
    async fn has_room(&self, name: &str) -> Result<bool, AgentError> {
        let (_, pool) = self.pools.get(name)?;
        if pool.is_disabled() {
            return Ok(false);
        }
        let own_room = self
            .known_blocks(Some(name))
            .iter()
            .filter(|b| b.spec.node == self.node)
            .any(|b| room(&pool, &self.freshest(b).spec) > 0);
        if own_room {
            return Ok(true);
        }
        let blocks = self.summaries(name).await?;
        Ok(matches!(
            pool.next_step(&self.node, &blocks, jiff::Timestamp::now()),
            NextStep::Claim(_) | NextStep::Borrow(_)
        ))
    }
}
