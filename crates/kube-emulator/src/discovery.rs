//! Discovery documents (`/version`, `/api`, `/apis`, group and group-version resource
//! lists) and the OpenAPI documents kubectl reads for validation and apply.

use serde_json::{Value, json};

use super::resources::{Registry, ResourceType};

/// The Kubernetes version the emulator answers as (the API level of k8s-openapi's `v1_33`).
pub const KUBERNETES_MINOR: &str = "33";

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBERNETES_MINOR,
        "emulationMajor": "1",
        "emulationMinor": KUBERNETES_MINOR,
        "gitVersion": format!("v1.{KUBERNETES_MINOR}.0"),
        "gitCommit": "ipledger-emulator",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": format!("{}", KUBERNETES_MINOR.parse::<u32>().unwrap_or(1) - 1),
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "none (kube-emulator)",
        "compiler": "rustc",
        "platform": "linux/amd64",
    })
}

/// The `storageVersionHash` of discovery, as the real server computes it: the first
/// eight bytes of the SHA-256 of `group/version/kind` of the storage version, in base64.
pub fn storage_version_hash(group: &str, version: &str, kind: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{group}/{version}/{kind}").as_bytes());
    base64(&digest[..8])
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `/api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_doc(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({
        "name": name,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

/// `/apis`.
pub fn groups(registry: &Registry) -> Value {
    let groups: Vec<Value> = registry
        .groups()
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_doc(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/GROUP`, if the group is served.
pub fn group(registry: &Registry, name: &str) -> Option<Value> {
    let groups = registry.groups();
    let (_, versions) = groups.iter().find(|(g, _)| g == name && !g.is_empty())?;
    let mut doc = group_doc(name, versions);
    doc["kind"] = "APIGroup".into();
    doc["apiVersion"] = "v1".into();
    Some(doc)
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// `/api/v1` or `/apis/GROUP/VERSION`, if served.
pub fn resources(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut list = Vec::new();
    for t in registry
        .all()
        .filter(|t| t.group == group && t.version(version).is_some())
    {
        // Reviews can only be created (and are never stored).
        let review = matches!(
            t.group.as_str(),
            "authorization.k8s.io" | "authentication.k8s.io"
        );
        let verbs: &[&str] = if review { &["create"] } else { &VERBS };
        let mut entry = json!({
            "name": t.plural,
            "singularName": t.singular,
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": verbs,
            "shortNames": t.short_names,
            "categories": t.categories,
        });
        if !review {
            // events.k8s.io Events are stored as core/v1 Events.
            let (g, v) = if t.group == "events.k8s.io" {
                ("", "v1")
            } else {
                (t.group.as_str(), t.storage_version())
            };
            entry["storageVersionHash"] = storage_version_hash(g, v, &t.kind).into();
        }
        list.push(entry);
        if t.status_subresource {
            list.push(json!({
                "name": format!("{}/status", t.plural),
                "singularName": "",
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        // The TokenRequest subresource, of another group's kind.
        if t.group.is_empty() && t.plural == "serviceaccounts" {
            list.push(json!({
                "name": "serviceaccounts/token",
                "singularName": "",
                "namespaced": true,
                "group": "authentication.k8s.io",
                "version": "v1",
                "kind": "TokenRequest",
                "verbs": ["create"],
            }));
        }
    }
    if list.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": list}),
    )
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: the index of group-version documents.
pub fn openapi_v3_index(registry: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    for (g, versions) in registry.groups() {
        for v in versions {
            let p = gv_path(&g, &v);
            let hash = format!(
                "{:016X}",
                fingerprint(&openapi_v3_group_version(registry, &g, &v).to_string())
            );
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
            );
        }
    }
    json!({"paths": paths})
}

fn fingerprint(s: &str) -> u64 {
    // FNV-1a: stable across runs, so the hash changes only when the document does.
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn schema_name(t: &ResourceType, version: &str) -> String {
    let group: Vec<&str> = t.group.split('.').rev().collect();
    format!("{}.{}.{}", group.join("."), version, t.kind)
}

fn query_param(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

/// `/openapi/v3/api/v1` or `/openapi/v3/apis/G/V`: paths with their query parameters
/// (kubectl looks for `fieldValidation` to use server-side validation) and, for custom
/// resources, the schemas. Built-ins carry no schema here, so kubectl uses its own
/// compiled-in types for strategic merge patches.
pub fn openapi_v3_group_version(registry: &Registry, group: &str, version: &str) -> Value {
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for t in registry
        .all()
        .filter(|t| t.group == group && t.version(version).is_some())
    {
        let gvk = json!({"group": t.group, "version": version, "kind": t.kind});
        let base = if t.namespaced {
            format!(
                "/{}/namespaces/{{namespace}}/{}",
                gv_path(group, version),
                t.plural
            )
        } else {
            format!("/{}/{}", gv_path(group, version), t.plural)
        };
        let op = |action: &str| {
            json!({
                "operationId": format!("{action}{}", t.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [query_param("dryRun"), query_param("fieldManager"), query_param("fieldValidation")],
                "responses": {"200": {"description": "OK"}},
            })
        };
        paths.insert(base.clone(), json!({"post": op("post"), "get": op("list")}));
        paths.insert(format!("{base}/{{name}}"), json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}));
        if let Some(schema) = t.version(version).and_then(|v| v.schema.as_ref()) {
            let mut s = schema.root().clone();
            if let Some(props) = s.get_mut("properties").and_then(Value::as_object_mut) {
                props.insert("apiVersion".into(), json!({"type": "string"}));
                props.insert("kind".into(), json!({"type": "string"}));
                props.insert(
                    "metadata".into(),
                    json!({"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}]}),
                );
            }
            s["x-kubernetes-group-version-kind"] = json!([gvk]);
            schemas.insert(schema_name(t, version), s);
        }
    }
    if !schemas.is_empty() {
        schemas.insert(
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta".into(),
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (kube-emulator)", "version": format!("v1.{KUBERNETES_MINOR}.0")},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_version_hashes_are_the_real_servers() {
        // As a real cluster's /api/v1 lists them.
        assert_eq!(storage_version_hash("", "v1", "Pod"), "xPOwRZ+Yhw8=");
        assert_eq!(storage_version_hash("", "v1", "ConfigMap"), "qFsyl6wFWjQ=");
        let doc = resources(&Registry::builtin(), "", "v1").unwrap();
        let pods = doc["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "pods")
            .unwrap();
        assert_eq!(pods["storageVersionHash"], "xPOwRZ+Yhw8=");
    }

    #[test]
    fn groups_list_apps_and_leave_out_core() {
        let doc = groups(&Registry::builtin());
        let names: Vec<_> = doc["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"apps"));
        assert!(names.contains(&"coordination.k8s.io"));
        assert!(!names.contains(&""));
    }

    #[test]
    fn resource_lists_include_status_subresources() {
        let doc = resources(&Registry::builtin(), "", "v1").unwrap();
        let names: Vec<_> = doc["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"pods"));
        assert!(names.contains(&"pods/status"));
        assert!(!names.contains(&"configmaps/status"));
        assert!(resources(&Registry::builtin(), "nope", "v1").is_none());
    }
}
