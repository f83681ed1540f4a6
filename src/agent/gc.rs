//! GC (CNI 1.1): releases this node's allocations of a network that the runtime no
//! longer lists as valid attachments.
//!
//! The runtime takes its list, then sends it; an ADD may commit in between. So GC spares
//! allocations younger than the grace (`--cni-gc-grace`) and attachments with an ADD in
//! progress: the list cannot speak for them.

use std::collections::HashSet;
use std::sync::Arc;

use super::allocator::Allocator;
use crate::agent::error::AgentError;
use ipledger_cni::protocol::{self, GcRequest, GcResponse};
use ipledger_core::Change;

impl Allocator {
    /// GC: releases this node's allocations of the network that the runtime no longer
    /// lists; carries on past failures and reports them together.
    pub async fn gc(&self, request: GcRequest) -> Result<GcResponse, AgentError> {
        request.validate().map_err(AgentError::BadRequest)?;
        let live: Arc<HashSet<(String, String)>> = Arc::new(
            request
                .valid_attachments
                .iter()
                .map(|a| (a.container_id.clone(), a.if_name.clone()))
                .chain(self.adds_in_progress(&request.network))
                .collect(),
        );
        let grace =
            jiff::SignedDuration::try_from(self.gc_grace).unwrap_or(jiff::SignedDuration::MAX);
        let listed_at = jiff::Timestamp::now()
            .checked_sub(grace)
            .unwrap_or(jiff::Timestamp::MIN);
        let change = Change::Collect {
            network: request.network.clone(),
            live,
            node: self.node.clone(),
            listed_at,
        };
        let (released, failures) = self.submit_everywhere(&change).await;
        if !failures.is_empty() {
            return Err(AgentError::GcIncomplete(format!(
                "released {} allocations but could not check {} blocks: {}",
                released.len(),
                failures.len(),
                failures.join("; ")
            )));
        }
        let released = released
            .into_iter()
            .map(|(a, _)| protocol::Attachment {
                network: a.network().to_string(),
                container_id: a.container_id().to_string(),
                if_name: a.if_name().to_string(),
            })
            .collect();
        Ok(GcResponse { released })
    }
}
