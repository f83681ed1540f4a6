//! The Helm chart as the tests see it: real `helm` rendering `charts/ipledger`, and its
//! output as JSON objects.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/ipledger")
}

/// The values file that sets every option (`charts/ipledger/ci/all-options.yaml`).
pub fn all_options() -> PathBuf {
    chart_dir().join("ci/all-options.yaml")
}

/// helm from `$HELM`, else /usr/local/bin/helm (`.ci/install-kube-tools.sh`); `None`,
/// after a skip, without one.
pub fn helm() -> Option<PathBuf> {
    let path = std::env::var("HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/local/bin/helm"));
    if path.exists() {
        Some(path)
    } else {
        test_support::skip(&format!(
            "no helm at {} ($HELM unset; run .ci/install-kube-tools.sh)",
            path.display()
        ));
        None
    }
}

/// `helm ARGS` to completion: (success, stdout, stderr). `HOME` is a scratch directory,
/// so no user's helm configuration takes part.
pub fn run(helm: &Path, args: &[&str]) -> (bool, String, String) {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(helm)
        .args(args)
        .env("HOME", home.path())
        .env_remove("KUBECONFIG")
        .output()
        .expect("helm runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `helm template` of the chart as release `ipledger` in namespace `namespace`, with
/// more helm arguments (`-f FILE`, `--set k=v`): the YAML, or a failure with helm's words.
pub fn template(helm: &Path, namespace: &str, extra: &[&str]) -> Result<String, String> {
    template_release(helm, "ipledger", namespace, extra)
}

/// [`template`] as release `release`.
pub fn template_release(
    helm: &Path,
    release: &str,
    namespace: &str,
    extra: &[&str],
) -> Result<String, String> {
    let chart = chart_dir().display().to_string();
    let mut args = vec![
        "template",
        release,
        chart.as_str(),
        "--namespace",
        namespace,
    ];
    args.extend_from_slice(extra);
    let (ok, stdout, stderr) = run(helm, &args);
    if ok { Ok(stdout) } else { Err(stderr) }
}

/// The objects of a multi-document YAML stream (empty documents dropped).
pub fn objects(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("helm rendered valid YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The one object of `kind` whose name ends with `suffix`.
pub fn find<'a>(objects: &'a [Value], kind: &str, suffix: &str) -> &'a Value {
    let found: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == kind)
        .filter(|o| {
            o["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with(suffix))
        })
        .collect();
    assert_eq!(found.len(), 1, "one {kind} named *{suffix}: {found:#?}");
    found[0]
}

/// The value of environment variable `name` of `container`.
pub fn env<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .and_then(|env| env.iter().find(|e| e["name"] == name))
        .unwrap_or_else(|| panic!("no env {name} in {container:#}"))
}
