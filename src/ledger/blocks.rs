//! Claiming and finding IPBlocks.

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::{Resource, ResourceExt};

use crate::api::usage::record_usage;
use crate::api::{
    BLOCK_FINALIZER, IPBlock, IPBlockSpec, IPPool, LABEL_NODE, LABEL_POOL, label_value,
};

/// The outcome of trying to claim a block.
#[derive(Debug)]
pub enum Claim {
    /// This node created the block and owns it.
    Won(Box<IPBlock>),
    /// The block exists already and another node holds it.
    Taken,
}

/// Claims the block `cidr` of `pool` for `node` by creating its IPBlock under the
/// deterministic `name`. The API server's create is the arbiter: of two nodes racing for
/// one block exactly one create succeeds, the other gets 409 AlreadyExists. A block that
/// exists already and is this node's was claimed by an earlier attempt whose answer was
/// lost (a 504 retried, a reset connection): it is won, not wasted.
pub async fn claim_block(
    api: &Api<IPBlock>,
    name: &str,
    pool: &IPPool,
    cidr: IpNet,
    node: &str,
) -> Result<Claim, kube::Error> {
    let pool_name = pool.name_any();
    let block = IPBlock {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(
                [
                    (LABEL_POOL.to_string(), label_value(&pool_name)),
                    (LABEL_NODE.to_string(), label_value(node)),
                ]
                .into(),
            ),
            // Deleting the pool deletes its blocks, but only the finalizer's holding
            // nothing go: the others stay, Terminating, until the controller has seen
            // their last address released.
            owner_references: pool
                .controller_owner_ref(&())
                .map(|mut owner: OwnerReference| {
                    owner.block_owner_deletion = Some(true);
                    vec![owner]
                }),
            finalizers: Some(vec![BLOCK_FINALIZER.to_string()]),
            ..Default::default()
        },
        spec: IPBlockSpec {
            pool: pool_name,
            cidr,
            node: node.to_string(),
            last_allocated: None,
            allocations: Vec::new(),
            released: Vec::new(),
        },
    };
    let mut block = block;
    record_usage(&mut block);
    match api.create(&PostParams::default(), &block).await {
        Ok(created) => Ok(Claim::Won(Box::new(created))),
        Err(kube::Error::Api(status)) if status.code == 409 => match api.get_opt(name).await? {
            Some(existing)
                if existing.spec.node == node && existing.metadata.deletion_timestamp.is_none() =>
            {
                Ok(Claim::Won(Box::new(existing)))
            }
            // Gone again already (deleted as empty), or on its way out (it is not
            // claimed again under its name until it is gone): another search looks on.
            Some(_) | None => Ok(Claim::Taken),
        },
        Err(e) => Err(e),
    }
}

/// Every block of `pool`, whoever holds it (for claiming: which blocks exist; for
/// borrowing: which foreign blocks have room).
pub async fn pool_blocks(api: &Api<IPBlock>, pool: &str) -> Result<Vec<IPBlock>, kube::Error> {
    let params = ListParams::default().labels(&format!("{LABEL_POOL}={}", label_value(pool)));
    let mut blocks = Vec::new();
    let mut params = params.limit(500);
    loop {
        let page = api.list(&params).await?;
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        blocks.extend(page.items);
        match next {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(blocks),
        }
    }
}
