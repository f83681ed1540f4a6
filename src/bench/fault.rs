//! The verdicts' self-test (`--inject-duplicate`): a duplicate that did not come from
//! ipledger, which the duplicates verdict must catch.

use std::time::Duration;

use kube::Client;
use kube::api::Api;

use super::BenchError;
use super::load::{self, Caller, Flow, Pods};
use super::parts::Owned;
use crate::api::IPBlock;

/// The verdicts' self-test: a second record of a live pod's address, in its block, for
/// a new pod on the same node, as an allocator that handed the address out twice would
/// have written it; then that pod's ADD, which returns the recorded address (ADD is
/// idempotent), so that the history holds the duplicate too.
pub(super) async fn inject_duplicate(
    client: &Client,
    owned: &Owned,
    caller: &Caller,
    pods: &Pods,
    flows: &mut [Flow],
) -> Result<(), BenchError> {
    let fault = |what: String| BenchError::Setup(format!("injecting the duplicate: {what}"));
    let flow = flows
        .iter_mut()
        .find(|f| !f.live.is_empty())
        .ok_or_else(|| fault("no pod is attached".into()))?;
    // The newest: the end's vanishing takes the oldest first.
    let victim = flow.live.back().expect("a live pod");
    let address = victim.addresses[0];
    let blocks = Api::<IPBlock>::all(client.clone());
    let pod = load::create_pod(
        pods,
        &format!("{}-duplicate", flow.target.node),
        &flow.target.node,
    )
    .await
    .map_err(|e| fault(e.msg))?;
    // ipledger refuses to read a block that records one address twice, so the second
    // record goes into a copy of the block under another name, as a broken allocator
    // that claimed the block twice would have left it.
    let block = owned
        .blocks()
        .await
        .map_err(|e| fault(e.to_string()))?
        .into_iter()
        .find(|b| b.spec.allocations.iter().any(|a| a.address == address))
        .ok_or_else(|| fault(format!("no block records {address}")))?;
    let mut record = block
        .spec
        .allocations
        .iter()
        .find(|a| a.address == address)
        .cloned()
        .expect("found above");
    record.container_id = pod.container_id().to_string();
    record.pod = Some(crate::api::PodRef {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        uid: pod.uid.clone(),
    });
    let mut copy = IPBlock::new(
        &format!("{}-copy", block.metadata.name.clone().unwrap_or_default()),
        crate::api::IPBlockSpec {
            allocations: vec![record],
            released: Vec::new(),
            ..block.spec.clone()
        },
    );
    copy.metadata.labels = block.metadata.labels.clone();
    copy.metadata.annotations = block.metadata.annotations.clone();
    blocks
        .create(&Default::default(), &copy)
        .await
        .map_err(|e| fault(e.to_string()))?;
    // The agent's watch must have seen the record before the ADD asks for it.
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let got = caller
            .call("ADD", &flow.target, &pod)
            .await
            .map_err(|e| fault(format!("ADD of {}: {}", pod.name, e.msg)))?;
        if got.contains(&address) {
            flow.adopt(pod, got);
            return Ok(());
        }
        // The agent allocated afresh before it saw the record: give that back, retry.
        caller
            .call("DEL", &flow.target, &pod)
            .await
            .map_err(|e| fault(e.msg))?;
    }
    Err(fault(format!(
        "the agent never returned {address} for {}",
        pod.name
    )))
}
