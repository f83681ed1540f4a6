//! PATCH bodies: JSON patch (RFC 6902, with `test`), JSON merge patch (RFC 7386) and
//! strategic merge patch for the built-in types.

use serde_json::{Map, Value};

use super::error::{ApiError, ApiResult};

/// The patch types of the `Content-Type` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`
    Json,
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply)
    Apply,
}

impl PatchType {
    /// Parses a `Content-Type`; unsupported ones are 415 as in the real server.
    pub fn from_content_type(content_type: &str) -> ApiResult<Self> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media {
            "application/json-patch+json" => Ok(Self::Json),
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(Self::Apply),
            other => Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got \"{other}\")"
            ))),
        }
    }
}

/// Applies a patch to the current object. `custom` resources refuse strategic merge
/// patches (415), as the real server does.
pub fn apply(
    current: &Value,
    patch_type: PatchType,
    body: &[u8],
    custom: bool,
) -> ApiResult<Value> {
    match patch_type {
        PatchType::Json => {
            let patch: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let mut doc = current.clone();
            for op in patch.0 {
                // The real server's JSON patch treats a missing value as equal to null in
                // `test` (kube-rs's finalizer helper relies on it).
                if let json_patch::PatchOperation::Test(t) = &op
                    && t.value.is_null()
                    && doc.pointer(t.path.as_str()).is_none()
                {
                    continue;
                }
                // A failed operation, `test` included, is 422 in the real server.
                json_patch::patch(&mut doc, &[op]).map_err(|e| {
                    ApiError::unprocessable(format!(
                        "the server rejected our request due to an error in our request: {e}"
                    ))
                })?;
            }
            Ok(doc)
        }
        PatchType::Merge => {
            let patch = parse_object(body)?;
            let mut doc = current.clone();
            json_patch::merge(&mut doc, &patch);
            Ok(doc)
        }
        PatchType::Strategic if custom => Err(ApiError::unsupported_media_type(
            "strategic merge patch is not supported for custom resources; use application/merge-patch+json or application/json-patch+json",
        )),
        PatchType::Strategic => {
            let patch = parse_object(body)?;
            Ok(strategic_merge(current, &patch, ""))
        }
        // Needs the field manager: the server handles it (`apply.rs`).
        PatchType::Apply => Err(ApiError::bad_request(
            "server-side apply is handled with its field manager, not as a plain patch",
        )),
    }
}

fn parse_object(body: &[u8]) -> ApiResult<Value> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("the patch must be a JSON object"));
    }
    Ok(value)
}

/// The merge key of list fields the built-ins declare with `patchStrategy:"merge"`.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "readinessGates" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "ports" => "port",
        _ => return None,
    })
}

/// Strategic merge: maps merge, `null` deletes, lists with a merge key merge by key,
/// `finalizers` merge as a set, other lists are replaced; `$patch` and `$setElementOrder`
/// directives are honoured or dropped.
pub fn strategic_merge(current: &Value, patch: &Value, field: &str) -> Value {
    match (current, patch) {
        (Value::Object(cur), Value::Object(p)) => {
            match p.get("$patch").and_then(Value::as_str) {
                Some("replace") => return Value::Object(without_directives(p)),
                Some("delete") => return Value::Null,
                _ => {}
            }
            let mut out = cur.clone();
            for (k, v) in p {
                // Directives (`$patch`, `$deleteFromPrimitiveList/...`) apply below.
                if k.starts_with('$') {
                    continue;
                }
                if v.is_null() {
                    out.remove(k);
                    continue;
                }
                let merged = match out.get(k) {
                    Some(existing) => strategic_merge(existing, v, k),
                    None => strip(v),
                };
                out.insert(k.clone(), merged);
            }
            for (k, v) in p {
                if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/")
                    && let (Some(Value::Array(items)), Some(remove)) =
                        (out.get_mut(list), v.as_array())
                {
                    items.retain(|i| !remove.contains(i));
                }
            }
            Value::Object(out)
        }
        (Value::Array(cur), Value::Array(p)) if field == "finalizers" => {
            let mut out = cur.clone();
            for item in p {
                if !out.contains(item) {
                    out.push(item.clone());
                }
            }
            Value::Array(out)
        }
        (Value::Array(cur), Value::Array(p)) => match merge_key(field) {
            Some(key) if p.iter().all(Value::is_object) && cur.iter().all(Value::is_object) => {
                let mut out = cur.clone();
                for item in p {
                    if item.get("$patch").and_then(Value::as_str) == Some("replace") {
                        return Value::Array(p.iter().map(strip).collect());
                    }
                    let pos = out
                        .iter()
                        .position(|c| c.get(key) == item.get(key) && item.get(key).is_some());
                    let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                    match (pos, delete) {
                        (Some(i), true) => {
                            out.remove(i);
                        }
                        (Some(i), false) => out[i] = strategic_merge(&out[i], item, ""),
                        (None, true) => {}
                        (None, false) => out.push(strip(item)),
                    }
                }
                Value::Array(out)
            }
            _ => Value::Array(p.iter().map(strip).collect()),
        },
        (_, p) => strip(p),
    }
}

fn without_directives(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), strip(v)))
        .collect()
}

/// Removes patch directives from a value that is inserted as a whole.
fn strip(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(without_directives(map)),
        Value::Array(items) => Value::Array(items.iter().map(strip).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_patch_test_op_guards_the_change() {
        let cur = json!({"metadata": {"resourceVersion": "5"}, "spec": {"a": 1}});
        let ok = br#"[{"op":"test","path":"/spec/a","value":1},{"op":"replace","path":"/spec/a","value":2}]"#;
        assert_eq!(
            apply(&cur, PatchType::Json, ok, true).unwrap()["spec"]["a"],
            2
        );
        let bad = br#"[{"op":"test","path":"/spec/a","value":9},{"op":"replace","path":"/spec/a","value":2}]"#;
        assert_eq!(
            apply(&cur, PatchType::Json, bad, true).unwrap_err().code,
            422
        );
    }

    #[test]
    fn json_patch_test_of_null_matches_a_missing_field() {
        let cur = json!({"metadata": {"name": "a"}});
        let add_first = br#"[{"op":"test","path":"/metadata/finalizers","value":null},{"op":"add","path":"/metadata/finalizers","value":["x"]}]"#;
        let out = apply(&cur, PatchType::Json, add_first, true).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["x"]));
        let again = apply(&out, PatchType::Json, add_first, true).unwrap_err();
        assert_eq!(again.code, 422, "the field exists now, so the test fails");
    }

    #[test]
    fn merge_patch_deletes_with_null() {
        let cur = json!({"spec": {"a": 1, "b": [1, 2]}});
        let out = apply(
            &cur,
            PatchType::Merge,
            br#"{"spec":{"a":null,"b":[3]}}"#,
            true,
        )
        .unwrap();
        assert_eq!(out, json!({"spec": {"b": [3]}}));
    }

    #[test]
    fn strategic_merge_merges_containers_by_name_and_finalizers_as_a_set() {
        let cur = json!({"metadata": {"finalizers": ["a"]}, "spec": {"containers": [{"name": "x", "image": "1"}, {"name": "y", "image": "1"}]}});
        let patch = json!({"metadata": {"finalizers": ["b"]}, "spec": {"$setElementOrder/containers": [{"name": "x"}], "containers": [{"name": "y", "image": "2"}, {"name": "x", "$patch": "delete"}]}});
        let out = strategic_merge(&cur, &patch, "");
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "y", "image": "2"}])
        );
    }

    #[test]
    fn strategic_merge_is_refused_for_custom_resources() {
        let err = apply(&json!({}), PatchType::Strategic, b"{}", true).unwrap_err();
        assert_eq!(err.code, 415);
        assert_eq!(
            PatchType::from_content_type("text/plain").unwrap_err().code,
            415
        );
    }
}
