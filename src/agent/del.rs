//! DEL: releases whatever the attachment holds; succeeds when it holds nothing.

use std::net::IpAddr;

use kube::ResourceExt;

use super::allocator::{Allocator, holds};
use crate::agent::error::AgentError;
use ipledger_cni::protocol::{DelRequest, DelResponse};
use ipledger_core::{Attachment, Change};

impl Allocator {
    /// DEL: releases whatever the attachment holds; succeeds when it holds nothing.
    pub async fn del(&self, request: DelRequest) -> Result<DelResponse, AgentError> {
        request.validate().map_err(AgentError::BadRequest)?;
        let attachment = Attachment::try_from(&request.attachment)?;
        let released = self.release_everywhere(&attachment).await?;
        Ok(DelResponse { released })
    }

    pub(super) async fn release_everywhere(
        &self,
        attachment: &Attachment,
    ) -> Result<Vec<IpAddr>, AgentError> {
        // Only blocks that may hold the attachment: every allocation this agent made is in
        // its writer's copy or, for blocks it has not written since it started, in the
        // watch cache. A writer without a copy (its last write failed) is asked anyway.
        let candidates = self
            .known_blocks(None)
            .into_iter()
            .filter(|block| match self.writers.knowledge(&block.name_any()) {
                None => holds(&block.spec, attachment),
                Some(None) => true,
                Some(Some(copy)) => holds(&copy.spec, attachment),
            })
            .collect();
        let release = Change::Release {
            attachment: attachment.clone(),
        };
        let (released, failures) = self.submit_to(candidates, &release).await;
        if !failures.is_empty() {
            return Err(AgentError::Unavailable(format!(
                "could not release {attachment}: {}",
                failures.join("; ")
            )));
        }
        Ok(released.into_iter().map(|(_, ip)| ip).collect())
    }
}
