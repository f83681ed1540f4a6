//! Network namespaces for end-to-end tests with the reference CNI plugins.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where Debian's `containernetworking-plugins` installs the reference plugins.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// A network namespace made for one test, deleted on drop.
pub struct NetNs(pub String);

impl NetNs {
    /// Creates `ipl-ROLE-PID-N`.
    pub fn new(role: &str) -> NetNs {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "ipl-{role}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip netns add");
        assert!(status.success(), "ip netns add {name}");
        NetNs(name)
    }

    /// The path a runtime passes as `CNI_NETNS`.
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }

    /// `ip -o addr show dev DEV` inside the namespace.
    pub fn addresses(&self, dev: &str) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.0, "-o", "addr", "show", "dev", dev])
            .output()
            .expect("ip addr");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Why an end-to-end test with `plugin` from the reference plugins cannot run here, if
/// it cannot: the package is missing, or network namespaces need root.
pub fn reference_plugin_missing(plugin: &str) -> Option<String> {
    let path = Path::new(REFERENCE_PLUGINS).join(plugin);
    if !path.exists() {
        return Some(format!(
            "{} not found (Debian package containernetworking-plugins)",
            path.display()
        ));
    }
    if Command::new("ip")
        .arg("-V")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        return Some("the ip command (iproute2) is not available".into());
    }
    let probe = format!("ipl-probe-{}", std::process::id());
    let made = Command::new("ip")
        .args(["netns", "add", &probe])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !made {
        return Some("cannot create a network namespace (needs root)".into());
    }
    let _ = Command::new("ip").args(["netns", "del", &probe]).status();
    None
}
