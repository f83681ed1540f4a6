//! Real kubectl, default flags, against the emulator (or the cluster [`KUBECONFIG`]
//! names). kubectl comes from `$KUBECTL`, else /usr/local/bin/kubectl (installed by
//! `.ci/install-kube-tools.sh`); without one the tests skip, saying so.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kube_emulator::{Config, Emulator};

use crate::cluster::{KUBECONFIG, unique};

fn kubectl_binary() -> Option<PathBuf> {
    if let Ok(k) = std::env::var("KUBECTL") {
        return Some(PathBuf::from(k));
    }
    let default = PathBuf::from("/usr/local/bin/kubectl");
    default.exists().then_some(default)
}

/// A kubectl bound to one kubeconfig, run in a scratch directory removed on drop.
pub struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
    dir: PathBuf,
    _emulator: Option<Emulator>,
}

impl Kubectl {
    /// Starts an emulator (unless [`KUBECONFIG`] names a real cluster) and binds kubectl
    /// to it; `None`, after [`crate::skip`], when there is no kubectl.
    pub async fn start() -> Option<Self> {
        let Some(binary) = kubectl_binary() else {
            crate::skip(
                "no kubectl ($KUBECTL unset and /usr/local/bin/kubectl missing; run .ci/install-kube-tools.sh)",
            );
            return None;
        };
        let dir = std::env::temp_dir().join(unique("ipledger-kubectl"));
        std::fs::create_dir_all(&dir).unwrap();
        let (kubeconfig, emulator) = match std::env::var(KUBECONFIG) {
            Ok(path) => (PathBuf::from(path), None),
            Err(_) => {
                let emulator = Emulator::start(Config::default()).await.unwrap();
                let path = dir.join("kubeconfig");
                emulator.write_kubeconfig(&path).unwrap();
                (path, Some(emulator))
            }
        };
        Some(Self {
            binary,
            kubeconfig,
            dir,
            _emulator: emulator,
        })
    }

    /// The kubeconfig kubectl uses (for other tools, such as helm).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The scratch directory: kubectl's working directory and `$HOME`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `kubectl ARGS`, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.dir)
            .current_dir(&self.dir);
        cmd
    }

    /// Runs kubectl to completion off the async runtime (the emulator serves on it).
    pub async fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.command(args);
        tokio::task::spawn_blocking(move || cmd.output().expect("kubectl runs"))
            .await
            .unwrap()
    }

    /// Runs kubectl, fails the test unless it succeeds, and returns its stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes `content` to `name` in the scratch directory and returns its path.
    pub fn write(&self, name: &str, content: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, content).unwrap();
        path.display().to_string()
    }

    /// `kubectl apply -f PATH`, then waits until the CRDs `names` are established.
    pub async fn install_crds(&self, path: &Path, names: &[&str]) {
        self.ok(&["apply", "-f", &path.display().to_string()]).await;
        let mut wait = vec!["wait", "--for", "condition=established", "--timeout=30s"];
        let crds: Vec<String> = names.iter().map(|n| format!("crd/{n}")).collect();
        wait.extend(crds.iter().map(String::as_str));
        self.ok(&wait).await;
    }
}

impl Drop for Kubectl {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
