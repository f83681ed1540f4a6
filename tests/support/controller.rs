//! An `ipledger controller` process of the test cluster.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// Short election timings, so the tests wait seconds rather than the defaults' tens.
pub const LEASE: Duration = Duration::from_secs(3);
pub const TIMINGS: [&str; 6] = [
    "--lease-duration",
    "3s",
    "--renew-deadline",
    "2s",
    "--retry-period",
    "500ms",
];

/// One controller process.
pub struct Controller {
    pub identity: String,
    pub child: Child,
}

impl Controller {
    /// Starts a controller electing on Lease `default/{lease}` as `identity`.
    pub fn start(kubeconfig: &Path, lease: &str, identity: &str) -> Controller {
        Controller::start_with(kubeconfig, lease, identity, &[])
    }

    /// [`Controller::start`] with more flags.
    pub fn start_with(
        kubeconfig: &Path,
        lease: &str,
        identity: &str,
        flags: &[&str],
    ) -> Controller {
        Controller::start_in(kubeconfig, "default", lease, identity, flags)
    }

    /// [`Controller::start_with`] electing on Lease `{namespace}/{lease}`.
    pub fn start_in(
        kubeconfig: &Path,
        namespace: &str,
        lease: &str,
        identity: &str,
        flags: &[&str],
    ) -> Controller {
        let child = Command::new(env!("CARGO_BIN_EXE_ipledger"))
            .arg("controller")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--identity", identity, "--lease-name", lease])
            .args(["--lease-namespace", namespace])
            .args([
                "--metrics-addr",
                "127.0.0.1:0",
                "--health-addr",
                "127.0.0.1:0",
            ])
            .args(TIMINGS)
            .args(flags)
            .env(
                "IPLEDGER_LOG",
                std::env::var("IPLEDGER_TEST_CONTROLLER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start the controller");
        Controller {
            identity: identity.into(),
            child,
        }
    }

    /// Sends `signal` through kill(1): tokio's `Child` only sends SIGKILL.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("kill(1)");
        assert!(sent.success(), "kill -{signal} {pid}");
    }
}
