//! A node of the test cluster: an `ipledger agent` process with its socket, and the CNI
//! plugin binary invoked the way a container runtime invokes it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// A running `ipledger agent` for one node name.
pub struct Agent {
    /// The node name it serves.
    pub node: String,
    /// Its socket.
    pub socket: PathBuf,
    /// The port of its metrics endpoint on 127.0.0.1.
    pub metrics_port: u16,
    kubeconfig: PathBuf,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl Agent {
    /// Starts an agent for `node`, with its socket under `dir`, and waits until it serves.
    pub async fn start(kubeconfig: &Path, node: &str, dir: &Path) -> Agent {
        Self::start_with(kubeconfig, node, dir, &[]).await
    }

    /// Like [`Agent::start`], with more command-line arguments.
    pub async fn start_with(
        kubeconfig: &Path,
        node: &str,
        dir: &Path,
        extra_args: &[&str],
    ) -> Agent {
        let mut agent = Agent {
            node: node.to_string(),
            // A unix socket path has at most 107 bytes; node names may have 253.
            socket: dir.join(format!("{}.sock", &node[..node.len().min(40)])),
            metrics_port: free_port(),
            kubeconfig: kubeconfig.to_path_buf(),
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        agent.restart().await;
        agent
    }

    /// Starts the process again (after [`Agent::kill`]).
    pub async fn restart(&mut self) {
        // The metrics port was free when chosen; another process may have taken it since.
        // The agent then exits at once, and a new port is tried.
        for _ in 0..3 {
            if self.spawn().await {
                return;
            }
            self.metrics_port = free_port();
        }
        panic!("agent {} exited at start three times", self.node);
    }

    /// Spawns the agent and waits for its socket; false when it exited at start.
    async fn spawn(&mut self) -> bool {
        let child = Command::new(env!("CARGO_BIN_EXE_ipledger"))
            .args(["agent", "--node-name", &self.node])
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{}", self.metrics_port))
            .arg("--socket")
            .arg(&self.socket)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(&self.extra_args)
            .env(
                "IPLEDGER_LOG",
                std::env::var("IPLEDGER_TEST_AGENT_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the agent starts");
        self.child = Some(child);
        for _ in 0..300 {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return true;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                eprintln!("agent {} exited at start: {status}", self.node);
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "agent {} did not open {} within 15 s",
            self.node,
            self.socket.display()
        );
    }

    /// The value of the metric sample `name` (with its labels, as exposed), or 0.
    pub async fn metric(&self, sample: &str) -> f64 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.metrics_port))
            .await
            .expect("metrics endpoint");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).await.unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// SIGKILL: the agent dies at once, mid-request if it is in one.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// SIGTERM, and waits for a clean exit.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the agent runs");
        let pid = child.id().expect("a pid") as i32;
        // tokio only sends SIGKILL; SIGTERM goes through kill(1).
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .expect("the agent exits within 20 s of SIGTERM")
            .expect("wait for the agent")
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("a local address").port()
}

/// What the plugin printed and how it exited.
#[derive(Debug)]
pub struct PluginRun {
    /// The exit code.
    pub code: i32,
    /// stdout, parsed as JSON (Null when empty).
    pub result: Value,
    /// stderr, for failure messages.
    pub stderr: String,
}

impl PluginRun {
    /// The CNI error code of a failed run, or a panic naming what came instead.
    pub fn error_code(&self) -> u64 {
        assert_ne!(self.code, 0, "expected a failure, got {}", self.result);
        self.result["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("no error code in {}", self.result))
    }

    /// The addresses of a successful ADD result, or a panic with the error.
    pub fn addresses(&self) -> Vec<ipnet::IpNet> {
        assert_eq!(self.code, 0, "ADD failed: {} {}", self.result, self.stderr);
        self.result["ips"]
            .as_array()
            .expect("ips")
            .iter()
            .map(|ip| {
                ip["address"]
                    .as_str()
                    .expect("address")
                    .parse()
                    .expect("a CIDR")
            })
            .collect()
    }
}

/// A network configuration delegating IPAM to ipledger on `socket`.
pub fn network(name: &str, cni_version: &str, socket: &Path, pools: &[&str]) -> Value {
    json!({
        "cniVersion": cni_version,
        "name": name,
        "type": "bridge",
        "ipam": {"type": "ipledger", "socket": socket, "pools": pools},
    })
}

/// Runs the ipledger plugin for `command` as a runtime would.
pub async fn plugin(
    command: &str,
    config: &Value,
    container_id: &str,
    if_name: &str,
    cni_args: &str,
) -> PluginRun {
    run_plugin(
        &test_support::binary("ipledger-cni").to_string_lossy(),
        command,
        config,
        container_id,
        if_name,
        cni_args,
        None,
        None,
    )
    .await
}

/// Runs `binary` (a CNI plugin) with the CNI environment and `config` on stdin.
#[allow(clippy::too_many_arguments)]
pub async fn run_plugin(
    binary: &str,
    command: &str,
    config: &Value,
    container_id: &str,
    if_name: &str,
    cni_args: &str,
    netns: Option<&str>,
    cni_path: Option<&str>,
) -> PluginRun {
    let argv = [binary.to_string()];
    let netns = netns.unwrap_or("/var/run/netns/none");
    let cni_path = cni_path.unwrap_or("/opt/cni/bin");
    run_command(
        &argv,
        command,
        config,
        container_id,
        if_name,
        cni_args,
        netns,
        cni_path,
    )
    .await
}

/// Runs `argv` (a CNI plugin, perhaps behind `ip netns exec`) as a runtime would.
#[allow(clippy::too_many_arguments)]
pub async fn run_command(
    argv: &[String],
    command: &str,
    config: &Value,
    container_id: &str,
    if_name: &str,
    cni_args: &str,
    netns: &str,
    cni_path: &str,
) -> PluginRun {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_IFNAME", if_name)
        .env("CNI_NETNS", netns)
        .env("CNI_ARGS", cni_args)
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the plugin runs");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(config.to_string().as_bytes())
        .await
        .expect("write stdin");
    drop(stdin);
    let output = child.wait_with_output().await.expect("the plugin exits");
    let stdout = String::from_utf8_lossy(&output.stdout);
    PluginRun {
        code: output.status.code().unwrap_or(-1),
        result: if stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&stdout).unwrap_or(Value::String(stdout.to_string()))
        },
        stderr: String::from_utf8_lossy(&output.stderr).to_string(),
    }
}
