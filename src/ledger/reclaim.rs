//! The controller's writes to IPBlocks: releasing leaked records, keeping the finalizer
//! and borrower labels right, deleting blocks that hold nothing, and letting a deleted
//! block go once it holds nothing.
//!
//! Each write decides on the object as the API server holds it at that moment (a CAS
//! retry re-reads and decides again), so what the controller saw in its cache only
//! proposes: an address released and allocated again since is never freed, and a block
//! that got an allocation since is never deleted.

use std::collections::HashSet;
use std::net::IpAddr;

use ipledger_core::{Allocation, Block, BlockError};
use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Preconditions};

use super::cas::{self, CasError, Decision, RetryPolicy};
use crate::api::usage::record_usage;
use crate::api::{BLOCK_FINALIZER, BORROWER_PREFIX, IPBlock, IPBlockSpec, borrower_label};

/// Removes the borrower labels of nodes that hold no address of `block` any more.
pub fn prune_borrowers(block: &mut IPBlock) {
    let lent_to: HashSet<String> = block
        .spec
        .allocations
        .iter()
        .filter_map(|a| a.node.as_deref())
        .map(borrower_label)
        .collect();
    block
        .labels_mut()
        .retain(|key, _| !key.starts_with(BORROWER_PREFIX) || lent_to.contains(key));
}

/// True when [`tidy`] would change `block` even with nothing to release: a borrower
/// label left over, or the finalizer missing (a block claimed by an older agent).
pub fn needs_tidying(block: &IPBlock) -> bool {
    let mut pruned = block.clone();
    prune_borrowers(&mut pruned);
    pruned.labels() != block.labels()
        || (block.metadata.deletion_timestamp.is_none()
            && !block.finalizers().iter().any(|f| f == BLOCK_FINALIZER))
}

/// Releases exactly `records` of block `name` (each only while the same attachment holds
/// its address since the same time), prunes borrower labels, and puts the finalizer on a
/// block that lacks it. `first` is a recent copy (the cache's) that saves the first
/// read. Returns the addresses released and the block as the API server holds it after.
pub async fn tidy(
    api: &Api<IPBlock>,
    name: &str,
    first: Option<IPBlock>,
    records: &[Allocation],
    policy: &RetryPolicy,
) -> Result<(Vec<IpAddr>, IPBlock), CasError<BlockError>> {
    let written = cas::update(api, name, policy, first, |object: &IPBlock| {
        let mut block = Block::try_from(&object.spec)?;
        let now = Timestamp::now();
        let released: Vec<IpAddr> = records
            .iter()
            .filter(|record| block.release_record(record, now))
            .map(|record| record.address)
            .collect();
        let mut new = object.clone();
        if !released.is_empty() {
            new.spec = IPBlockSpec::from(&block);
        }
        prune_borrowers(&mut new);
        // Kubernetes refuses a new finalizer on an object being deleted.
        if new.metadata.deletion_timestamp.is_none()
            && !new.finalizers().iter().any(|f| f == BLOCK_FINALIZER)
        {
            new.finalizers_mut().push(BLOCK_FINALIZER.to_string());
        }
        record_usage(&mut new);
        Ok(if released.is_empty() && new.metadata == object.metadata {
            Decision::Keep(released)
        } else {
            Decision::Replace(new, released)
        })
    })
    .await?;
    Ok((written.value, written.object))
}

/// Deletes `block` on condition that it is unchanged since it was read (its uid and
/// resourceVersion): an allocation recorded in between makes the delete fail with 409,
/// and the block stays. Returns whether the delete was accepted; the block's finalizer
/// then holds it until [`finalize`] finds it empty.
pub async fn delete_unchanged(api: &Api<IPBlock>, block: &IPBlock) -> Result<bool, kube::Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: block.uid(),
            resource_version: block.resource_version(),
        }),
        ..Default::default()
    };
    match api.delete(&block.name_any(), &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(false),
        Err(error) => Err(error),
    }
}

/// Takes ipledger's finalizer off block `name` if it is being deleted and holds no
/// allocation, as the API server holds it at the write. Returns whether it came off.
pub async fn finalize(
    api: &Api<IPBlock>,
    name: &str,
    first: Option<IPBlock>,
    policy: &RetryPolicy,
) -> Result<bool, CasError<BlockError>> {
    let written = cas::update(api, name, policy, first, |object: &IPBlock| {
        let ours = object.finalizers().iter().any(|f| f == BLOCK_FINALIZER);
        if object.metadata.deletion_timestamp.is_none()
            || !object.spec.allocations.is_empty()
            || !ours
        {
            return Ok(Decision::Keep(false));
        }
        let mut new = object.clone();
        new.finalizers_mut().retain(|f| f != BLOCK_FINALIZER);
        Ok(Decision::Replace(new, true))
    });
    match written.await {
        Ok(written) => Ok(written.value),
        // Gone already: nothing holds it.
        Err(CasError::NotFound { .. }) => Ok(false),
        Err(error) => Err(error),
    }
}
