//! The image's plugin check (`scripts/check-plugin.sh`, run by `scripts/build-release.sh`
//! on what the image ships): it passes only a static ELF executable under 5 MB that
//! answers CNI VERSION, so a dynamically linked plugin never reaches a node.

use std::path::Path;
use std::process::Command;

fn check(plugin: &Path) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check-plugin.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(plugin)
        .output()
        .expect("bash runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn a_dynamically_linked_plugin_is_refused() {
    if Command::new("readelf").arg("--version").output().is_err() {
        return test_support::skip("no readelf (binutils)");
    }
    // The test build's plugin is linked against this machine's glibc.
    let (ok, said) = check(&test_support::binary("ipledger-cni"));
    assert!(!ok, "a dynamic plugin passed: {said}");
    assert!(said.contains("dynamically linked"), "{said}");
}

#[test]
fn a_file_that_is_not_an_executable_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("plugin");
    std::fs::write(&script, "#!/bin/sh\necho '{}'\n").unwrap();
    let (ok, said) = check(&script);
    assert!(!ok && said.contains("not an executable file"), "{said}");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (ok, said) = check(&script);
    assert!(!ok && said.contains("not an ELF file"), "{said}");
}
