//! The API types: the `ipledger.io/v1alpha1` custom resources and their CRDs.
//!
//! These Rust types are the single source of the CRDs: `ipledger crds` prints
//! [`crds_yaml`], and `crds/` is that output, checked in.

mod block;
mod pool;

pub use block::{AllocationRecord, IPBlock, IPBlockSpec, IPBlockStatus, PodRef, ReleasedAddress};
pub use pool::{Dns, IPPool, IPPoolSpec, IPPoolStatus, Route};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every ipledger resource.
pub const GROUP: &str = "ipledger.io";

/// Label on an IPBlock naming the pool it belongs to.
pub const LABEL_POOL: &str = "ipledger.io/pool";
/// Label on an IPBlock naming the node it is affine to.
pub const LABEL_NODE: &str = "ipledger.io/node";

/// Every CRD ipledger installs, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![IPPool::crd(), IPBlock::crd()]
}

/// The CRDs as one multi-document YAML stream, exactly as checked in under `crds/`.
pub fn crds_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    Ok(out)
}
