//! CHECK: every address of the previous result must still be held by the attachment.

use std::net::IpAddr;

use kube::ResourceExt;

use super::allocator::Allocator;
use crate::agent::error::AgentError;
use ipledger_cni::protocol::{CheckRequest, CheckResponse};
use ipledger_core::Attachment;

impl Allocator {
    /// CHECK: every address of the previous result must still be held by the attachment.
    pub async fn check(&self, request: CheckRequest) -> Result<CheckResponse, AgentError> {
        request.validate().map_err(AgentError::BadRequest)?;
        let attachment = Attachment::try_from(&request.attachment)?;
        for ip in &request.ips {
            let holder = self.holder_of(*ip).await?;
            if holder.as_ref() != Some(&attachment) {
                let held_by = holder.map_or("nobody".to_string(), |h| h.to_string());
                return Err(AgentError::Missing(format!(
                    "{ip} of prevResult is not allocated to {attachment}: the ledger records it as held by {held_by}"
                )));
            }
        }
        Ok(CheckResponse {
            verified: request.ips,
        })
    }

    /// Who holds `ip` according to the ledger.
    async fn holder_of(&self, ip: IpAddr) -> Result<Option<Attachment>, AgentError> {
        for object in self.caches.pools.state() {
            let Ok((_, pool)) = self.pools.get(&object.name_any()) else {
                continue;
            };
            let Some(cidr) = pool.block_for(ip) else {
                continue;
            };
            let Some(block) = self.block_named(&pool.block_name(&cidr)).await? else {
                continue;
            };
            let model = self.latest(&block).ok_or_else(|| {
                AgentError::Corrupt(format!("IPBlock {} does not parse", block.name_any()))
            })?;
            return Ok(model.holder(ip).map(|a| a.attachment.clone()));
        }
        Ok(None)
    }
}
