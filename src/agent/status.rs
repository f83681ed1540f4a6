//! STATUS (CNI 1.1): whether an ADD on this network can succeed now.

use ipnet::IpNet;

use super::allocator::{Allocator, room};
use crate::agent::error::AgentError;
use crate::agent::pool_choice::{ChoiceError, ChoiceInput, choose_pools};
use crate::api::IPBlock;
use crate::ledger::blocks::pool_blocks;
use ipledger_cni::protocol::{StatusQuery, StatusResponse};

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
            // still find a pool through them.
            Err(ChoiceError::NoPool) if named.is_empty() => {
                return Ok(StatusResponse {});
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

    async fn has_room(&self, name: &str) -> Result<bool, AgentError> {
        let (_, pool) = self.pools.get(name)?;
        if pool.is_disabled() {
            return Ok(false);
        }
        // Room in a block of this node answers without a list: runtimes ask often.
        let own_room = self
            .known_blocks(Some(name))
            .iter()
            .filter(|b| b.spec.node == self.node)
            .any(|b| room(&pool, &self.freshest(b).spec) > 0);
        if own_room {
            return Ok(true);
        }
        let blocks = pool_blocks(&self.blocks, name).await?;
        let existing: Vec<IpNet> = blocks.iter().map(|b| b.spec.cidr).collect();
        if pool.next_free_block(&self.node, &existing).is_some() {
            return Ok(true);
        }
        let usable = |b: &&IPBlock| b.spec.node == self.node || !pool.strict_affinity();
        Ok(blocks
            .iter()
            .filter(usable)
            .any(|b| (b.spec.allocations.len() as u128) < pool.block_capacity(&b.spec.cidr)))
    }
}
