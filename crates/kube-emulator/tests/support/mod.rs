//! The emulator tests' own CRDs (`tests/fixtures/`) and their Rust types. The cluster to
//! run against and the generic helpers come from `test_support`.
#![allow(dead_code)]

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Client, CustomResource};
use serde::{Deserialize, Serialize};

/// The API group of the test CRDs.
pub const GROUP: &str = "emulator.example.com";

/// The fixture CRDs' directory, for `kubectl apply -f`.
pub fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

/// The fixture CRDs' names, for `kubectl wait`.
pub const CRD_NAMES: [&str; 2] = [
    "subnets.emulator.example.com",
    "reservations.emulator.example.com",
];

/// The fixture CRDs.
pub fn crds() -> Vec<CustomResourceDefinition> {
    [
        include_str!("../fixtures/subnets.yaml"),
        include_str!("../fixtures/reservations.yaml"),
    ]
    .into_iter()
    .map(|yaml| serde_yaml_ng::from_str(yaml).expect("a fixture CRD"))
    .collect()
}

/// Installs the fixture CRDs (kept if already there) and waits until they are established.
pub async fn install_crds(client: &Client) {
    test_support::install_crds(client, crds()).await;
}

/// A cluster-scoped address range (`tests/fixtures/subnets.yaml`): CEL rules, a status
/// subresource, printer columns.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize)]
#[kube(
    group = "emulator.example.com",
    version = "v1",
    kind = "Subnet",
    status = "SubnetStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct SubnetSpec {
    /// The range, in CIDR notation; immutable.
    pub cidr: String,
    /// The prefix length of the blocks it is cut into; immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u8>,
    /// An address inside `cidr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Addresses or ranges not to hand out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// The subnet to use when none is named.
    #[serde(default)]
    pub default: bool,
    /// Nothing new is handed out.
    #[serde(default)]
    pub disabled: bool,
}

/// What a controller reports about a [`Subnet`].
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubnetStatus {
    /// How many addresses are in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated: Option<String>,
    /// How many are free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free: Option<String>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A subnet named `name` over `cidr`, everything else unset.
pub fn subnet(name: &str, cidr: &str) -> Subnet {
    Subnet::new(
        name,
        SubnetSpec {
            cidr: cidr.into(),
            ..Default::default()
        },
    )
}

/// A cluster-scoped part of a [`Subnet`] held for someone
/// (`tests/fixtures/reservations.yaml`); the garbage-collection tests make it a dependent
/// of its subnet.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize)]
#[kube(
    group = "emulator.example.com",
    version = "v1",
    kind = "Reservation",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ReservationSpec {
    /// The subnet's name.
    pub subnet: String,
    /// The reserved range, inside the subnet's.
    pub cidr: String,
    /// Who holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
}
