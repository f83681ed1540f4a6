//! Server-side printing: `meta.k8s.io/v1` Table output, with CRDs' printer columns.

use serde_json::{Value, json};

use super::resources::{PrinterColumn, ResourceType};

/// What each row carries besides its cells (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object.
    None,
    /// `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter.
    pub fn parse(s: Option<&str>) -> Result<Self, String> {
        match s {
            None | Some("") | Some("Metadata") => Ok(Self::Metadata),
            Some("None") => Ok(Self::None),
            Some("Object") => Ok(Self::Object),
            Some(other) => Err(format!(
                "includeObject: Unsupported value: \"{other}\": supported values: \"Metadata\", \"None\", \"Object\""
            )),
        }
    }
}

fn column(name: &str, type_: &str, format: &str, description: &str, priority: i64) -> Value {
    json!({"name": name, "type": type_, "format": format, "description": description, "priority": priority})
}

fn builtin_columns(t: &ResourceType) -> Vec<(PrinterColumn, bool)> {
    let col = |name: &str, type_: &str, path: &str| {
        (
            PrinterColumn {
                name: name.into(),
                type_: type_.into(),
                format: String::new(),
                description: String::new(),
                priority: 0,
                json_path: path.into(),
            },
            true,
        )
    };
    let wide = |(mut c, b): (PrinterColumn, bool)| {
        c.priority = 1;
        (c, b)
    };
    match (t.group.as_str(), t.plural.as_str()) {
        ("", "namespaces") => vec![
            col("Status", "string", ".status.phase"),
            col("Age", "date", ".metadata.creationTimestamp"),
        ],
        ("", "pods") => vec![
            col("Ready", "string", "@pod-ready"),
            col("Status", "string", "@pod-status"),
            col("Restarts", "string", "@pod-restarts"),
            col("Age", "date", ".metadata.creationTimestamp"),
            wide(col("IP", "string", ".status.podIP")),
            wide(col("Node", "string", ".spec.nodeName")),
        ],
        ("", "nodes") => vec![
            col("Status", "string", "@node-status"),
            col("Roles", "string", "@node-roles"),
            col("Age", "date", ".metadata.creationTimestamp"),
            col("Version", "string", ".status.nodeInfo.kubeletVersion"),
        ],
        ("", "secrets") => vec![
            col("Type", "string", ".type"),
            col("Data", "integer", "@data-count"),
            col("Age", "date", ".metadata.creationTimestamp"),
        ],
        ("", "configmaps") => vec![
            col("Data", "integer", "@data-count"),
            col("Age", "date", ".metadata.creationTimestamp"),
        ],
        ("apps", "deployments") => vec![
            col("Ready", "string", "@replicas-ready"),
            col("Up-to-date", "integer", ".status.updatedReplicas"),
            col("Available", "integer", ".status.availableReplicas"),
            col("Age", "date", ".metadata.creationTimestamp"),
        ],
        ("coordination.k8s.io", "leases") => vec![
            col("Holder", "string", ".spec.holderIdentity"),
            col("Age", "date", ".metadata.creationTimestamp"),
        ],
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            vec![col("Created At", "date", ".metadata.creationTimestamp")]
        }
        _ => vec![col("Age", "date", ".metadata.creationTimestamp")],
    }
}

/// The columns of a resource's table: Name, then the printer columns (or, without any,
/// the creation time, as the real server's default table does).
fn columns(t: &ResourceType, version: &str) -> Vec<PrinterColumn> {
    let declared = t
        .version(version)
        .map(|v| v.columns.clone())
        .unwrap_or_default();
    if !t.custom {
        return builtin_columns(t).into_iter().map(|(c, _)| c).collect();
    }
    if declared.is_empty() {
        return vec![PrinterColumn {
            name: "Age".into(),
            type_: "date".into(),
            format: String::new(),
            description: "CreationTimestamp is a timestamp representing the server time when this object was created.".into(),
            priority: 0,
            json_path: ".metadata.creationTimestamp".into(),
        }];
    }
    declared
}

/// Builds a Table of `items`.
pub fn table(
    t: &ResourceType,
    version: &str,
    items: &[Value],
    list_meta: Value,
    include: IncludeObject,
    now: chrono::DateTime<chrono::Utc>,
) -> Value {
    let cols = columns(t, version);
    let mut defs = vec![column(
        "Name",
        "string",
        "name",
        "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated.",
        0,
    )];
    for c in &cols {
        defs.push(column(
            &c.name,
            &c.type_,
            &c.format,
            &c.description,
            c.priority,
        ));
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|obj| row(&cols, obj, include, now))
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

fn row(
    cols: &[PrinterColumn],
    obj: &Value,
    include: IncludeObject,
    now: chrono::DateTime<chrono::Utc>,
) -> Value {
    let mut cells = vec![obj["metadata"]["name"].clone()];
    for c in cols {
        if let Some(computed) = c.json_path.strip_prefix('@') {
            cells.push(computed_cell(computed, obj));
            continue;
        }
        let found = find(obj, &c.json_path);
        let cell = match found.first() {
            // The built-in "Created At" column shows the timestamp itself.
            Some(v) if c.type_ == "date" && c.name == "Created At" => (*v).clone(),
            // Like the real server's tableconvertor, only the first result counts.
            Some(v) => printer_cell(&c.type_, v, now),
            None => Value::Null,
        };
        cells.push(cell);
    }
    let object = match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Metadata => {
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
        }
        IncludeObject::Object => obj.clone(),
    };
    let mut r = json!({"cells": cells});
    if !object.is_null() {
        r["object"] = object;
    }
    r
}

/// A printer column's cell for the first value its JSONPath found, as the real server's
/// tableconvertor makes it: `string` columns print the value as client-go's jsonpath
/// does, the other types keep a value of their JSON type (`date` becomes an age) and
/// turn any other into null.
fn printer_cell(type_: &str, value: &Value, now: chrono::DateTime<chrono::Utc>) -> Value {
    match (type_, value) {
        ("string", v) => print_result(v).into(),
        // cellForJSONValue: a JSON null is no value whatever the column's type.
        (_, Value::Null) => Value::Null,
        // Go decodes integral JSON numbers as int64, the others as float64, and
        // truncates a float64 for an integer column.
        ("integer", Value::Number(n)) => match n.as_i64() {
            Some(i) => i.into(),
            None => (n.as_f64().unwrap_or_default() as i64).into(),
        },
        ("number", Value::Number(n)) => match n.as_i64() {
            Some(i) => go_json_float(i as f64),
            None => go_json_float(n.as_f64().unwrap_or_default()),
        },
        ("boolean", Value::Bool(b)) => (*b).into(),
        ("date", Value::String(s)) => date_cell(s, now).into(),
        _ => Value::Null,
    }
}

/// A value as client-go's jsonpath PrintResults prints it: strings as themselves, numbers
/// and booleans as Go's `fmt.Print` writes them, objects and arrays as JSON, and a JSON
/// null as text/template's `<no value>`.
fn print_result(value: &Value) -> String {
    match value {
        Value::Null => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => go_print_float(n.as_f64().unwrap_or_default()),
        },
        Value::Array(_) | Value::Object(_) => go_json(value),
    }
}

/// JSON as Go's `json.Marshal` writes it: keys sorted (as serde_json's map keeps them),
/// and `<`, `>`, `&`, U+2028 and U+2029 escaped (they occur only inside strings).
fn go_json(value: &Value) -> String {
    let mut out = String::new();
    for ch in value.to_string().chars() {
        match ch {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// A float64 as Go's `%v` prints it: the shortest digits that round-trip, in exponent
/// form (`1e+06`, `1.5e-07`) when the exponent is below -4 or at least 6 (strconv's
/// `'g'` with the shortest precision decides on a fixed 6).
fn go_print_float(f: f64) -> String {
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        format!("{f}")
    }
}

/// A float64 cell as Go's encoding/json writes it: integral values without a fraction,
/// which serde_json keeps only for a number held as an integer.
fn go_json_float(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.2e18 {
        (f as i64).into()
    } else {
        f.into()
    }
}

/// A `date` cell: the age of an RFC 3339 time, `<unknown>` for an empty (zero) one and
/// `<invalid>` for one that does not parse, as metav1.Time and the tableconvertor have it.
fn date_cell(s: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    if s.is_empty() || s == "null" {
        return "<unknown>".into();
    }
    if chrono::DateTime::parse_from_rfc3339(s).is_err() {
        return "<invalid>".into();
    }
    human_age(s, now)
}

/// Cells the real server's printers compute rather than read (`@name` columns).
fn computed_cell(name: &str, obj: &Value) -> Value {
    let count = |v: &Value| v.as_object().map_or(0, |m| m.len()) as u64;
    match name {
        "pod-ready" => {
            let statuses = obj["status"]["containerStatuses"].as_array();
            let ready = statuses.map_or(0, |s| s.iter().filter(|c| c["ready"] == true).count());
            let total = obj["spec"]["containers"].as_array().map_or(0, Vec::len);
            format!("{ready}/{total}").into()
        }
        "pod-status" if !obj["metadata"]["deletionTimestamp"].is_null() => "Terminating".into(),
        "pod-status" => obj["status"]["reason"]
            .as_str()
            .or(obj["status"]["phase"].as_str())
            .unwrap_or("Pending")
            .into(),
        "pod-restarts" => {
            let statuses = obj["status"]["containerStatuses"].as_array();
            statuses
                .map_or(0, |s| {
                    s.iter()
                        .filter_map(|c| c["restartCount"].as_u64())
                        .sum::<u64>()
                })
                .to_string()
                .into()
        }
        "node-status" => {
            let ready = obj["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .and_then(|c| c["status"].as_str());
            match ready {
                Some("True") => "Ready",
                Some("False") => "NotReady",
                _ => "Unknown",
            }
            .into()
        }
        "node-roles" => {
            let roles: Vec<&str> = obj["metadata"]["labels"]
                .as_object()
                .map(|l| {
                    l.keys()
                        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                        .collect()
                })
                .unwrap_or_default();
            if roles.is_empty() {
                "<none>".into()
            } else {
                roles.join(",").into()
            }
        }
        "data-count" => (count(&obj["data"]) + count(&obj["binaryData"])).into(),
        "replicas-ready" => {
            let ready = obj["status"]["readyReplicas"].as_u64().unwrap_or(0);
            let wanted = obj["spec"]["replicas"].as_u64().unwrap_or(1);
            format!("{ready}/{wanted}").into()
        }
        _ => Value::Null,
    }
}

/// Evaluates the JSONPath subset printer columns use: `.a.b`, `[0]`, `[*]`,
/// `[?(@.type=="Ready")]`.
pub fn find<'a>(obj: &'a Value, path: &str) -> Vec<&'a Value> {
    let path = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('$');
    let mut current = vec![obj];
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            // A backslash escapes the next character: `.annotations.example\.com/x`
            // names the key `example.com/x`, as in client-go's jsonpath.
            let mut field = String::new();
            let mut end = r.len();
            let mut chars = r.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => field.extend(chars.next().map(|(_, escaped)| escaped)),
                    '.' | '[' => {
                        end = i;
                        break;
                    }
                    c => field.push(c),
                }
            }
            current = current
                .into_iter()
                .filter_map(|v| v.get(field.as_str()))
                .collect();
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else {
                return Vec::new();
            };
            let inner = &r[..end];
            rest = &r[end + 1..];
            if inner == "*" {
                current = current
                    .into_iter()
                    .flat_map(|v| v.as_array().into_iter().flatten())
                    .collect();
            } else if let Ok(i) = inner.parse::<usize>() {
                current = current.into_iter().filter_map(|v| v.get(i)).collect();
            } else if let Some(filter) =
                inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')'))
            {
                let Some((field, value)) = filter.split_once("==") else {
                    return Vec::new();
                };
                let value = value.trim().trim_matches('"').trim_matches('\'');
                current = current
                    .into_iter()
                    .flat_map(|v| v.as_array().into_iter().flatten())
                    .filter(|item| {
                        let got = find(item, &format!(".{}", field.trim()));
                        got.first().is_some_and(|g| match g {
                            Value::String(s) => s == value,
                            other => {
                                serde_json::from_str::<Value>(value).is_ok_and(|v| &v == *other)
                            }
                        })
                    })
                    .collect();
            } else {
                return Vec::new();
            }
        } else {
            return Vec::new();
        }
    }
    current
}

/// The real server's human-readable age: `45s`, `3m20s`, `5h`, `12d`.
pub fn human_age(timestamp: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(timestamp) else {
        return "<unknown>".into();
    };
    let d = now.signed_duration_since(t.with_timezone(&chrono::Utc));
    let secs = d.num_seconds();
    if secs < -1 {
        return "<invalid>".into();
    }
    let secs = secs.max(0);
    let (m, h, days) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        if secs % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", secs % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{}h", h % 24)
        }
    } else if days < 365 * 2 {
        format!("{days}d")
    } else if days < 365 * 8 {
        format!("{}y{}d", days / 365, days % 365)
    } else {
        format!("{}y", days / 365)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_reads_keys_with_escaped_dots() {
        let obj = json!({"metadata": {"annotations": {"example.com/count": "3", "example": {"com/count": "no"}}}});
        let found = find(&obj, ".metadata.annotations.example\\.com/count");
        assert_eq!(found, vec![&json!("3")]);
    }

    #[test]
    fn jsonpath_filters_conditions() {
        let obj = json!({"status": {"conditions": [{"type": "Exhausted", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        let got = find(&obj, ".status.conditions[?(@.type==\"Ready\")].status");
        assert_eq!(got, vec![&json!("True")]);
        assert!(find(&obj, ".spec.cidr").is_empty());
        assert_eq!(
            find(&obj, ".status.conditions[0].type"),
            vec![&json!("Exhausted")]
        );
    }

    #[test]
    fn ages_read_like_kubectl() {
        let now = chrono::DateTime::parse_from_rfc3339("2024-01-02T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(human_age("2024-01-01T23:59:15Z", now), "45s");
        assert_eq!(human_age("2024-01-01T23:56:40Z", now), "3m20s");
        assert_eq!(human_age("2024-01-01T19:00:00Z", now), "5h");
        assert_eq!(human_age("2023-12-20T00:00:00Z", now), "13d");
    }

    #[test]
    fn custom_resource_tables_have_their_printer_columns() {
        let t = crate::resources::from_crd(&crate::subnet_crd()).unwrap();
        let pool = json!({"metadata": {"name": "p", "creationTimestamp": "2024-01-01T00:00:00Z"}, "spec": {"cidr": "10.0.0.0/16"}, "status": {"allocated": "3"}});
        let now = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:30Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let tbl = table(
            &t,
            "v1",
            &[pool],
            json!({"resourceVersion": "7"}),
            IncludeObject::Metadata,
            now,
        );
        let names: Vec<_> = tbl["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Name", "CIDR", "Allocated", "Free", "Ready", "Age"]);
        assert_eq!(
            tbl["rows"][0]["cells"],
            json!(["p", "10.0.0.0/16", "3", null, null, "30s"])
        );
        assert_eq!(tbl["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }

    #[test]
    fn string_cells_print_the_first_result_and_null_as_no_value() {
        let t = crate::resources::from_crd(&crate::subnet_crd()).unwrap();
        let pool = json!({"metadata": {"name": "p", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"cidr": "10.0.0.0/16"},
            "status": {"allocated": null, "free": 7, "conditions": [
                {"type": "Ready", "status": "True"}, {"type": "Ready", "status": "False"}]}});
        let now = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:30Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let tbl = table(&t, "v1", &[pool], json!({}), IncludeObject::None, now);
        assert_eq!(
            tbl["rows"][0]["cells"],
            json!(["p", "10.0.0.0/16", "<no value>", "7", "True", "30s"])
        );
    }

    #[test]
    fn cells_keep_values_of_their_columns_type_only() {
        let now = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:30Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let cell = |type_: &str, v: Value| printer_cell(type_, &v, now);
        assert_eq!(cell("string", json!("a")), json!("a"));
        assert_eq!(cell("string", json!(3)), json!("3"));
        assert_eq!(cell("string", json!(true)), json!("true"));
        assert_eq!(cell("string", json!(1.5)), json!("1.5"));
        assert_eq!(cell("string", json!(1e6)), json!("1e+06"));
        assert_eq!(cell("string", json!(123456.0)), json!("123456"));
        assert_eq!(cell("string", json!(0.00001)), json!("1e-05"));
        assert_eq!(
            cell("string", json!({"b": 1, "a": "<x>"})),
            json!("{\"a\":\"\\u003cx\\u003e\",\"b\":1}")
        );
        assert_eq!(cell("string", json!([1, "b"])), json!("[1,\"b\"]"));
        assert_eq!(cell("string", Value::Null), json!("<no value>"));
        assert_eq!(cell("integer", json!(3)), json!(3));
        assert_eq!(cell("integer", json!(-3.7)), json!(-3));
        assert_eq!(cell("integer", json!("3")), Value::Null);
        assert_eq!(cell("integer", Value::Null), Value::Null);
        assert_eq!(cell("number", json!(3)), json!(3));
        assert_eq!(cell("number", json!(2.0)).to_string(), "2");
        assert_eq!(cell("number", json!(2.5)), json!(2.5));
        assert_eq!(cell("number", json!(true)), Value::Null);
        assert_eq!(cell("boolean", json!(false)), json!(false));
        assert_eq!(cell("boolean", json!("true")), Value::Null);
        assert_eq!(cell("date", json!("2024-01-01T00:00:00Z")), json!("30s"));
        assert_eq!(cell("date", json!("yesterday")), json!("<invalid>"));
        assert_eq!(cell("date", json!("")), json!("<unknown>"));
        assert_eq!(cell("date", json!(5)), Value::Null);
        assert_eq!(cell("date", Value::Null), Value::Null);
    }

    #[test]
    fn pod_rows_compute_ready_status_and_restarts() {
        let t = crate::resources::Registry::builtin()
            .lookup("", "v1", "pods")
            .unwrap();
        let pod = json!({
            "metadata": {"name": "p", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [{"ready": true, "restartCount": 2}, {"ready": false, "restartCount": 1}]},
        });
        let now = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:01:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let tbl = table(&t, "v1", &[pod], json!({}), IncludeObject::None, now);
        assert_eq!(
            tbl["rows"][0]["cells"],
            json!(["p", "1/2", "Running", "3", "60s", "10.0.0.5", "n1"])
        );
        assert_eq!(tbl["columnDefinitions"][5]["priority"], 1);
        assert!(tbl["rows"][0].get("object").is_none());
    }
}
