//! Decoding of the few protobuf request bodies kubectl's and helm's typed clients send
//! (ConfigMaps, Secrets, Namespaces): the `k8s\0` envelope around a `runtime.Unknown`,
//! then the object by the field numbers of the Kubernetes `generated.proto` files.
//! Responses stay JSON, which every client accepts.

use serde_json::{Map, Value, json};

/// The magic prefix of Kubernetes protobuf bodies.
const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, Copy)]
enum Kind {
    String,
    /// Bytes, base64-encoded in JSON (Secret data).
    Bytes,
    Bool,
    Int,
    Time,
    Message(&'static [Field]),
    MapStringString,
    MapStringBytes,
}

#[derive(Clone, Copy)]
struct Field {
    number: u64,
    name: &'static str,
    kind: Kind,
    repeated: bool,
}

const fn f(number: u64, name: &'static str, kind: Kind) -> Field {
    Field {
        number,
        name,
        kind,
        repeated: false,
    }
}

const fn list(number: u64, name: &'static str, kind: Kind) -> Field {
    Field {
        number,
        name,
        kind,
        repeated: true,
    }
}

const OWNER_REFERENCE: &[Field] = &[
    f(1, "kind", Kind::String),
    f(3, "name", Kind::String),
    f(4, "uid", Kind::String),
    f(5, "apiVersion", Kind::String),
    f(6, "controller", Kind::Bool),
    f(7, "blockOwnerDeletion", Kind::Bool),
];

const OBJECT_META: &[Field] = &[
    f(1, "name", Kind::String),
    f(2, "generateName", Kind::String),
    f(3, "namespace", Kind::String),
    f(5, "uid", Kind::String),
    f(6, "resourceVersion", Kind::String),
    f(7, "generation", Kind::Int),
    f(8, "creationTimestamp", Kind::Time),
    f(9, "deletionTimestamp", Kind::Time),
    f(10, "deletionGracePeriodSeconds", Kind::Int),
    f(11, "labels", Kind::MapStringString),
    f(12, "annotations", Kind::MapStringString),
    list(13, "ownerReferences", Kind::Message(OWNER_REFERENCE)),
    list(14, "finalizers", Kind::String),
];

const CONFIG_MAP: &[Field] = &[
    f(1, "metadata", Kind::Message(OBJECT_META)),
    f(2, "data", Kind::MapStringString),
    f(3, "binaryData", Kind::MapStringBytes),
    f(4, "immutable", Kind::Bool),
];

const SECRET: &[Field] = &[
    f(1, "metadata", Kind::Message(OBJECT_META)),
    f(2, "data", Kind::MapStringBytes),
    f(3, "type", Kind::String),
    f(4, "stringData", Kind::MapStringString),
    f(5, "immutable", Kind::Bool),
];

const NAMESPACE_SPEC: &[Field] = &[list(1, "finalizers", Kind::String)];

const NAMESPACE: &[Field] = &[
    f(1, "metadata", Kind::Message(OBJECT_META)),
    f(2, "spec", Kind::Message(NAMESPACE_SPEC)),
];

const PRECONDITIONS: &[Field] = &[
    f(1, "uid", Kind::String),
    f(2, "resourceVersion", Kind::String),
];

const DELETE_OPTIONS: &[Field] = &[
    f(1, "gracePeriodSeconds", Kind::Int),
    f(2, "preconditions", Kind::Message(PRECONDITIONS)),
    f(3, "orphanDependents", Kind::Bool),
    f(4, "propagationPolicy", Kind::String),
    list(5, "dryRun", Kind::String),
];

const RESOURCE_ATTRIBUTES: &[Field] = &[
    f(1, "namespace", Kind::String),
    f(2, "verb", Kind::String),
    f(3, "group", Kind::String),
    f(4, "version", Kind::String),
    f(5, "resource", Kind::String),
    f(6, "subresource", Kind::String),
    f(7, "name", Kind::String),
];

const NON_RESOURCE_ATTRIBUTES: &[Field] = &[f(1, "path", Kind::String), f(2, "verb", Kind::String)];

const SELF_SUBJECT_ACCESS_REVIEW_SPEC: &[Field] = &[
    f(1, "resourceAttributes", Kind::Message(RESOURCE_ATTRIBUTES)),
    f(
        2,
        "nonResourceAttributes",
        Kind::Message(NON_RESOURCE_ATTRIBUTES),
    ),
];

const SELF_SUBJECT_ACCESS_REVIEW: &[Field] = &[
    f(1, "metadata", Kind::Message(OBJECT_META)),
    f(2, "spec", Kind::Message(SELF_SUBJECT_ACCESS_REVIEW_SPEC)),
];

const BOUND_OBJECT_REFERENCE: &[Field] = &[
    f(1, "kind", Kind::String),
    f(2, "apiVersion", Kind::String),
    f(3, "name", Kind::String),
    f(4, "uid", Kind::String),
];

const TOKEN_REQUEST_SPEC: &[Field] = &[
    list(1, "audiences", Kind::String),
    f(3, "boundObjectRef", Kind::Message(BOUND_OBJECT_REFERENCE)),
    f(4, "expirationSeconds", Kind::Int),
];

const TOKEN_REQUEST: &[Field] = &[
    f(1, "metadata", Kind::Message(OBJECT_META)),
    f(2, "spec", Kind::Message(TOKEN_REQUEST_SPEC)),
];

const SERVICE_ACCOUNT: &[Field] = &[
    f(1, "metadata", Kind::Message(OBJECT_META)),
    f(4, "automountServiceAccountToken", Kind::Bool),
];

const POLICY_RULE: &[Field] = &[
    list(1, "verbs", Kind::String),
    list(2, "apiGroups", Kind::String),
    list(3, "resources", Kind::String),
    list(4, "resourceNames", Kind::String),
    list(5, "nonResourceURLs", Kind::String),
];

const ROLE: &[Field] = &[
    f(1, "metadata", Kind::Message(OBJECT_META)),
    list(2, "rules", Kind::Message(POLICY_RULE)),
];

const SUBJECT: &[Field] = &[
    f(1, "kind", Kind::String),
    f(2, "apiGroup", Kind::String),
    f(3, "name", Kind::String),
    f(4, "namespace", Kind::String),
];

const ROLE_REF: &[Field] = &[
    f(1, "apiGroup", Kind::String),
    f(2, "kind", Kind::String),
    f(3, "name", Kind::String),
];

const ROLE_BINDING: &[Field] = &[
    f(1, "metadata", Kind::Message(OBJECT_META)),
    list(2, "subjects", Kind::Message(SUBJECT)),
    f(3, "roleRef", Kind::Message(ROLE_REF)),
];

const UNKNOWN: &[Field] = &[f(2, "raw", Kind::Bytes), f(4, "contentType", Kind::String)];

/// The field table and apiVersion of the kinds whose protobuf bodies are decoded.
fn schema(kind: &str) -> Option<(&'static [Field], &'static str)> {
    const RBAC: &str = "rbac.authorization.k8s.io/v1";
    Some(match kind {
        "ConfigMap" => (CONFIG_MAP, "v1"),
        "Secret" => (SECRET, "v1"),
        "Namespace" => (NAMESPACE, "v1"),
        "ServiceAccount" => (SERVICE_ACCOUNT, "v1"),
        "DeleteOptions" => (DELETE_OPTIONS, "meta.k8s.io/v1"),
        "Role" | "ClusterRole" => (ROLE, RBAC),
        "RoleBinding" | "ClusterRoleBinding" => (ROLE_BINDING, RBAC),
        "SelfSubjectAccessReview" => (SELF_SUBJECT_ACCESS_REVIEW, "authorization.k8s.io/v1"),
        "TokenRequest" => (TOKEN_REQUEST, "authentication.k8s.io/v1"),
        _ => return None,
    })
}

/// Whether protobuf bodies of `kind` are decoded.
pub fn decodes(kind: &str) -> bool {
    schema(kind).is_some()
}

/// Decodes a protobuf body of `kind`: the core/v1 ConfigMap, Secret, Namespace and
/// ServiceAccount, the RBAC kinds, DeleteOptions, and the SelfSubjectAccessReview and
/// TokenRequest of `kubectl auth can-i` and `kubectl create token`, all of which kubectl's
/// typed clients send as protobuf; Err names what is not supported.
pub fn decode(kind: &str, body: &[u8]) -> Result<Value, String> {
    let Some((fields, api_version)) = schema(kind) else {
        return Err(format!(
            "protobuf bodies are decoded for ConfigMap, Secret, Namespace, ServiceAccount and the RBAC kinds only, not {kind}"
        ));
    };
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or("the protobuf body lacks the k8s envelope")?;
    let unknown = message_raw(envelope, UNKNOWN)?;
    let raw = unknown.get(&2).cloned().unwrap_or_default();
    let mut obj = message(&raw, fields)?;
    obj.insert("apiVersion".into(), api_version.into());
    obj.insert("kind".into(), kind.into());
    Ok(Value::Object(obj))
}

/// One decoded wire value.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint too long".into())
}

/// Splits a message into (field number, value) pairs.
fn wire(buf: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let (number, wire_type) = (key >> 3, key & 7);
        let value = match wire_type {
            0 => Wire::Varint(varint(buf, &mut pos)?),
            2 => {
                let len =
                    usize::try_from(varint(buf, &mut pos)?).map_err(|_| "length too large")?;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or("truncated field")?;
                let bytes = &buf[pos..end];
                pos = end;
                Wire::Bytes(bytes)
            }
            1 => {
                pos += 8;
                Wire::Varint(0)
            }
            5 => {
                pos += 4;
                Wire::Varint(0)
            }
            other => return Err(format!("unsupported wire type {other}")),
        };
        if pos > buf.len() {
            return Err("truncated field".into());
        }
        out.push((number, value));
    }
    Ok(out)
}

fn message_raw(
    buf: &[u8],
    fields: &[Field],
) -> Result<std::collections::HashMap<u64, Vec<u8>>, String> {
    let mut out = std::collections::HashMap::new();
    for (number, value) in wire(buf)? {
        if let (Some(_), Wire::Bytes(b)) = (fields.iter().find(|f| f.number == number), value) {
            out.insert(number, b.to_vec());
        }
    }
    Ok(out)
}

fn text(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string field is not UTF-8".to_string())
}

fn map_entry(b: &[u8]) -> Result<(String, &[u8]), String> {
    let (mut key, mut value): (String, &[u8]) = (String::new(), &[]);
    for (n, w) in wire(b)? {
        match (n, w) {
            (1, Wire::Bytes(k)) => key = text(k)?,
            (2, Wire::Bytes(v)) => value = v,
            _ => {}
        }
    }
    Ok((key, value))
}

/// Standard base64 with padding.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
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

fn time(b: &[u8]) -> Result<Value, String> {
    let mut seconds = 0i64;
    for (n, w) in wire(b)? {
        if let (1, Wire::Varint(v)) = (n, w) {
            seconds = v as i64;
        }
    }
    Ok(chrono::DateTime::from_timestamp(seconds, 0)
        .map(|t| Value::from(t.format("%Y-%m-%dT%H:%M:%SZ").to_string()))
        .unwrap_or(Value::Null))
}

fn message(buf: &[u8], fields: &[Field]) -> Result<Map<String, Value>, String> {
    let mut obj = Map::new();
    for (number, value) in wire(buf)? {
        let Some(field) = fields.iter().find(|f| f.number == number) else {
            continue;
        };
        let decoded = match (field.kind, value) {
            (Kind::String, Wire::Bytes(b)) => Value::from(text(b)?),
            (Kind::Bytes, Wire::Bytes(b)) => Value::from(base64(b)),
            (Kind::Bool, Wire::Varint(v)) => Value::from(v != 0),
            (Kind::Int, Wire::Varint(v)) => Value::from(v as i64),
            (Kind::Time, Wire::Bytes(b)) => time(b)?,
            (Kind::Message(sub), Wire::Bytes(b)) => Value::Object(message(b, sub)?),
            (Kind::MapStringString, Wire::Bytes(b)) => {
                let (k, v) = map_entry(b)?;
                let map = obj.entry(field.name).or_insert_with(|| json!({}));
                map[k] = text(v)?.into();
                continue;
            }
            (Kind::MapStringBytes, Wire::Bytes(b)) => {
                let (k, v) = map_entry(b)?;
                let map = obj.entry(field.name).or_insert_with(|| json!({}));
                map[k] = base64(v).into();
                continue;
            }
            _ => return Err(format!("field {} has an unexpected wire type", field.name)),
        };
        // Protobuf writes empty optional strings and zero numbers; JSON omits them.
        if !field.repeated && (decoded == "" || decoded == 0) {
            continue;
        }
        if field.repeated {
            let items = obj.entry(field.name).or_insert_with(|| json!([]));
            if let Some(a) = items.as_array_mut() {
                a.push(decoded);
            }
        } else {
            obj.insert(field.name.to_string(), decoded);
        }
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(number: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3 | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    fn entry(k: &str, v: &[u8]) -> Vec<u8> {
        [field(1, k.as_bytes()), field(2, v)].concat()
    }

    #[test]
    fn decodes_a_secret_in_its_envelope() {
        let meta = [
            field(1, b"s"),
            field(3, b"ns"),
            field(11, &entry("app", b"web")),
            field(14, b"a/b"),
        ]
        .concat();
        let secret = [
            field(1, &meta),
            field(2, &entry("k", b"hello")),
            field(3, b"Opaque"),
        ]
        .concat();
        let unknown = [
            field(1, &[field(1, b"v1"), field(2, b"Secret")].concat()),
            field(2, &secret),
        ]
        .concat();
        let body = [MAGIC, &unknown].concat();
        let obj = decode("Secret", &body).unwrap();
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": {"k": "aGVsbG8="},
                   "metadata": {"name": "s", "namespace": "ns", "labels": {"app": "web"}, "finalizers": ["a/b"]}})
        );
    }

    #[test]
    fn decodes_a_role_binding_with_its_subjects() {
        let subject = [
            field(1, b"ServiceAccount"),
            field(3, b"agent"),
            field(4, b"a"),
        ]
        .concat();
        let role_ref = [
            field(1, b"rbac.authorization.k8s.io"),
            field(2, b"Role"),
            field(3, b"r"),
        ]
        .concat();
        let binding = [
            field(1, &field(1, b"b")),
            field(2, &subject),
            field(3, &role_ref),
        ]
        .concat();
        let body = [MAGIC, &field(2, &binding)].concat();
        assert_eq!(
            decode("RoleBinding", &body).unwrap(),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "b"},
                   "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": "a"}],
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}})
        );
    }

    #[test]
    fn base64_pads_like_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }

    #[test]
    fn bad_bodies_are_errors_not_panics() {
        assert!(decode("Secret", b"not protobuf").is_err());
        assert!(decode("Secret", b"k8s\0\x12\x7f").is_err());
        assert!(decode("Pod", b"k8s\0").unwrap_err().contains("not Pod"));
    }
}
