//! What the tests of every crate share: one way to skip a test that this machine
//! cannot run, network namespaces for the end-to-end tests, where the workspace's
//! binaries are, and (feature `cluster`) a cluster to test against and kubectl bound to it.
//!
//! A skip prints `skipped: <why>` on a developer's machine. With
//! `IPLEDGER_REQUIRE_ALL=1` (set by `.ci/run`) it fails the test instead, so a missing
//! install step in CI can never pass green.

#[cfg(feature = "cluster")]
mod cluster;
#[cfg(feature = "cluster")]
pub mod kubectl;
pub mod netns;

#[cfg(feature = "cluster")]
pub use cluster::{
    Cluster, KUBECONFIG, api_error, client_with_token, client_without_retries, cluster,
    cluster_with, delete_namespace, fake_node, install_crds, namespace, pod_bound_token, unique,
    wait_for,
};

use std::path::PathBuf;

/// The variable that turns every skip into a failure.
pub const REQUIRE_ALL: &str = "IPLEDGER_REQUIRE_ALL";

/// Skips the calling test because `why`, or fails it when [`REQUIRE_ALL`] is `1`.
#[track_caller]
pub fn skip(why: &str) {
    skip_unless_required(why, std::env::var(REQUIRE_ALL).is_ok_and(|v| v == "1"));
}

#[track_caller]
fn skip_unless_required(why: &str, required: bool) {
    if required {
        panic!("{REQUIRE_ALL}=1 and this test cannot run: {why}");
    }
    eprintln!("skipped: {why}");
}

/// The path of the workspace binary `name` (`ipledger`, `ipledger-cni`), built beside
/// the running test: `cargo test` at the workspace root builds every package's binaries
/// before it runs any test. Only a package's own binaries have `CARGO_BIN_EXE_*`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run the tests from the workspace root (`cargo test`), or `cargo build --bin {name}` first",
        path.display()
    );
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "IPLEDGER_REQUIRE_ALL=1 and this test cannot run: no kubectl")]
    fn a_required_skip_fails() {
        skip_unless_required("no kubectl", true);
    }

    #[test]
    fn a_skip_on_a_developer_machine_returns() {
        skip_unless_required("no kubectl", false);
    }
}
