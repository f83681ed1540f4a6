//! What the `ipledger` binary writes to stderr: log lines that a file, journald or
//! `kubectl logs` show as they are.

use std::process::{Command, Stdio};

/// Colour codes are for terminals only: in a pipe (a container's log, CI) they would be
/// stored as `\x1b[...m` garbage around every level and field name.
#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    // The agent installs only an ELF executable: the real plugin.
    let plugin = test_support::binary("ipledger-cni");
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    // Installing the plugin logs at info; the missing kubeconfig then stops the agent.
    let output = Command::new(env!("CARGO_BIN_EXE_ipledger"))
        .args(["agent", "--node-name", "n", "--install-cni-bin-dir"])
        .arg(&bin_dir)
        .arg("--cni-binary")
        .arg(&plugin)
        .arg("--kubeconfig")
        .arg(dir.path().join("missing-kubeconfig"))
        .arg("--socket")
        .arg(dir.path().join("agent.sock"))
        .env("IPLEDGER_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("ipledger runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("installed the CNI plugin"), "{stderr}");
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
}
