//! The standalone CNI network configuration list the agent writes with
//! `--write-conflist`, for clusters that use ipledger as their only CNI IPAM.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use ipledger_cni::protocol::DEFAULT_SOCKET_PATH;
use serde_json::{Value, json};

use super::install::write_atomically;

/// The network configuration list: the reference `bridge` plugin with ipledger as its
/// IPAM, chained with `portmap` for `hostPort`s. `ipam.socket` is written only when the
/// agent does not listen on the plugin's default path, so the default config stays the
/// one an operator would write by hand.
pub fn render(network: &str, bridge: &str, socket: &Path) -> Value {
    let mut ipam = json!({"type": "ipledger"});
    if socket != Path::new(DEFAULT_SOCKET_PATH) {
        ipam["socket"] = json!(socket);
    }
    json!({
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                // The bridge gets the pool's gateway, and pods their default route via it.
                "isGateway": true,
                "isDefaultGateway": true,
                "ipMasq": true,
                // A pod reaching itself through a Service comes back on its own port.
                "hairpinMode": true,
                "ipam": ipam,
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    })
}

/// Checks the names that go into the config before anything is written: a runtime
/// would reject the whole network for a bad one, on every pod.
pub fn validate(network: &str, bridge: &str) -> Result<(), String> {
    ipledger_cni::validate::network_name("--conflist-network", network)?;
    ipledger_cni::validate::if_name("--conflist-bridge", bridge)
}

/// Writes the configuration list to `path` atomically, mode 0644: a runtime reading the
/// directory sees the old file or the new one, never a partial one.
pub fn write(path: &Path, network: &str, bridge: &str, socket: &Path) -> io::Result<PathBuf> {
    validate(network, bridge).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let (dir, name) = match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        (Some(dir), Some(name)) => (
            if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            },
            name,
        ),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a file path", path.display()),
            ));
        }
    };
    let text = format!("{:#}\n", render(network, bridge, socket));
    write_atomically(dir, name, 0o644, |file| file.write_all(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn renders_bridge_with_ipledger_ipam_then_portmap() {
        let config = render("pods", "br-pods", Path::new(DEFAULT_SOCKET_PATH));

        assert_eq!(config["cniVersion"], "1.0.0");
        assert_eq!(config["name"], "pods");
        let bridge = &config["plugins"][0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["bridge"], "br-pods");
        for flag in ["isGateway", "isDefaultGateway", "ipMasq", "hairpinMode"] {
            assert_eq!(bridge[flag], true, "{flag}");
        }
        assert_eq!(
            bridge["ipam"],
            json!({"type": "ipledger"}),
            "no socket for the default path"
        );
        assert_eq!(
            config["plugins"][1],
            json!({"type": "portmap", "capabilities": {"portMappings": true}})
        );
        assert_eq!(config["plugins"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn names_a_socket_other_than_the_default() {
        let config = render("ipledger", "cni0", Path::new("/var/run/other/agent.sock"));

        assert_eq!(
            config["plugins"][0]["ipam"],
            json!({"type": "ipledger", "socket": "/var/run/other/agent.sock"})
        );
    }

    #[test]
    fn replaces_the_old_file_atomically_with_mode_0644() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("10-ipledger.conflist");
        std::fs::write(&path, b"old").unwrap();

        let written = write(&path, "ipledger", "cni0", Path::new(DEFAULT_SOCKET_PATH)).unwrap();

        assert_eq!(written, path);
        let text = std::fs::read_to_string(&path).unwrap();
        let config: Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(
            config,
            render("ipledger", "cni0", Path::new(DEFAULT_SOCKET_PATH))
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            files,
            vec![std::ffi::OsString::from("10-ipledger.conflist")],
            "temporary files left behind"
        );
    }

    #[test]
    fn refuses_bad_names_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("10-ipledger.conflist");

        let long = write(&path, "ipledger", "a-bridge-name-too-long", Path::new("/s"));
        let odd = write(&path, "no spaces", "cni0", Path::new("/s"));

        assert!(long.unwrap_err().to_string().contains("--conflist-bridge"));
        assert!(odd.unwrap_err().to_string().contains("--conflist-network"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
