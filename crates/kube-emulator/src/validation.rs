//! What the real server checks on the few built-in types whose rules clients trip over:
//! the decoding of `MicroTime` and `Time` fields (a 400 before anything else), and the
//! validation of Events (core/v1 and events.k8s.io/v1) and Leases (422). Also the
//! qualified-name rule that label keys and label selectors share.

use serde_json::Value;

use super::error::{ApiError, ApiResult, Cause};
use super::events;
use super::resources::ResourceType;

/// Go's layout of `metav1.MicroTime` (RFC 3339 with exactly six fractional digits).
const MICRO_LAYOUT: &str = "2006-01-02T15:04:05.000000Z07:00";
/// Go's `time.RFC3339`, the layout of `metav1.Time`.
const RFC3339_LAYOUT: &str = "2006-01-02T15:04:05Z07:00";

const QUALIFIED_NAME_RULE: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const DNS_SUBDOMAIN_RULE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// The messages of apimachinery's `IsDNS1123Subdomain` (empty when valid).
pub fn dns_subdomain_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    if !is_dns_subdomain(value) {
        errs.push(DNS_SUBDOMAIN_RULE.to_string());
    }
    errs
}

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// The messages of apimachinery's `IsQualifiedName` (`[prefix/]name`, as label keys are);
/// empty when valid.
pub fn qualified_name_errors(value: &str) -> Vec<String> {
    let parts: Vec<&str> = value.split('/').collect();
    let mut errs = Vec::new();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    dns_subdomain_errors(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {QUALIFIED_NAME_RULE} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    }
    if !is_qualified_name_part(name) {
        errs.push(format!("name part {QUALIFIED_NAME_RULE}"));
    }
    errs
}

/// The messages of apimachinery's `IsValidLabelValue` (empty when valid).
pub fn label_value_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errs.push("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".to_string());
    }
    errs
}

/// One element of a Go time layout.
#[derive(Clone, Copy)]
enum Elem {
    Lit(&'static str),
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Micros,
    Zone,
}

impl Elem {
    fn layout(self) -> &'static str {
        match self {
            Self::Lit(s) => s,
            Self::Year => "2006",
            Self::Month => "01",
            Self::Day => "02",
            Self::Hour => "15",
            Self::Minute => "04",
            Self::Second => "05",
            Self::Micros => ".000000",
            Self::Zone => "Z07:00",
        }
    }
}

fn two_digits(v: &str) -> Option<(u32, &str)> {
    let b = v.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_digit() && b[1].is_ascii_digit() {
        Some((v[..2].parse().ok()?, &v[2..]))
    } else {
        None
    }
}

/// Parses `value` as Go's `time.Parse(layout, value)` does for the two layouts of
/// Kubernetes times, and fails with Go's words (`parsing time "…" as "…": cannot parse
/// "Z" as ".000000"`).
fn parse_go_time(value: &str, micro: bool) -> Result<(), String> {
    use Elem::*;
    let layout = if micro { MICRO_LAYOUT } else { RFC3339_LAYOUT };
    let mut elems = vec![
        Year,
        Lit("-"),
        Month,
        Lit("-"),
        Day,
        Lit("T"),
        Hour,
        Lit(":"),
        Minute,
        Lit(":"),
        Second,
    ];
    if micro {
        elems.push(Micros);
    }
    elems.push(Zone);
    let cannot = |rest: &str, elem: &str| {
        format!("parsing time \"{value}\" as \"{layout}\": cannot parse \"{rest}\" as \"{elem}\"")
    };
    let out_of_range = |what: &str| format!("parsing time \"{value}\": {what} out of range");
    let (mut year, mut month, mut day) = (0u32, 0u32, 0u32);
    let mut v = value;
    for elem in elems {
        let bad = || cannot(v, elem.layout());
        v = match elem {
            Lit(s) => v.strip_prefix(s).ok_or_else(bad)?,
            Year => {
                let b = v.as_bytes();
                if b.len() < 4 || !b[..4].iter().all(u8::is_ascii_digit) {
                    return Err(bad());
                }
                year = v[..4].parse().map_err(|_| bad())?;
                &v[4..]
            }
            Month | Day | Hour | Minute | Second => {
                let (n, rest) = two_digits(v).ok_or_else(bad)?;
                match elem {
                    Month if !(1..=12).contains(&n) => return Err(out_of_range("month")),
                    Hour if n >= 24 => return Err(out_of_range("hour")),
                    Minute if n >= 60 => return Err(out_of_range("minute")),
                    Second if n >= 60 => return Err(out_of_range("second")),
                    Month => month = n,
                    Day => day = n,
                    _ => {}
                }
                rest
            }
            Micros => {
                let b = v.as_bytes();
                if b.len() < 7 || !matches!(b[0], b'.' | b',') {
                    return Err(bad());
                }
                if !b[1..7].iter().all(u8::is_ascii_digit) {
                    return Err(bad());
                }
                &v[7..]
            }
            Zone => {
                if let Some(rest) = v.strip_prefix('Z') {
                    rest
                } else {
                    let b = v.as_bytes();
                    let ok = b.len() >= 6
                        && matches!(b[0], b'+' | b'-')
                        && b[1].is_ascii_digit()
                        && b[2].is_ascii_digit()
                        && b[3] == b':'
                        && b[4].is_ascii_digit()
                        && b[5].is_ascii_digit();
                    if !ok {
                        return Err(bad());
                    }
                    &v[6..]
                }
            }
        };
    }
    if !v.is_empty() {
        return Err(format!("parsing time \"{value}\": extra text: \"{v}\""));
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if day < 1 || day > days {
        return Err(out_of_range("day"));
    }
    Ok(())
}

/// The time fields of the types checked here, as `(path, micro)` in the shape of the
/// version the client writes.
fn time_fields(t: &ResourceType) -> &'static [(&'static [&'static str], bool)] {
    match (t.group.as_str(), t.plural.as_str()) {
        ("coordination.k8s.io", "leases") => &[
            (&["spec", "acquireTime"], true),
            (&["spec", "renewTime"], true),
        ],
        ("", "events") => &[
            (&["eventTime"], true),
            (&["series", "lastObservedTime"], true),
            (&["firstTimestamp"], false),
            (&["lastTimestamp"], false),
        ],
        ("events.k8s.io", "events") => &[
            (&["eventTime"], true),
            (&["series", "lastObservedTime"], true),
            (&["deprecatedFirstTimestamp"], false),
            (&["deprecatedLastTimestamp"], false),
        ],
        _ => &[],
    }
}

/// The decoding the real server does before anything else: a time that is not in its
/// layout cannot be decoded (the words of Go's `time.Parse`).
fn decode(t: &ResourceType, obj: &Value) -> Result<(), String> {
    for (path, micro) in time_fields(t) {
        let field = path.iter().fold(obj, |v, k| &v[*k]);
        if let Some(text) = field.as_str() {
            parse_go_time(text, *micro)?;
        }
    }
    Ok(())
}

fn invalid(field: &str, value: &str, why: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        field: field.into(),
        message: format!("Invalid value: \"{value}\": {why}"),
    }
}

fn required(field: &str) -> Cause {
    Cause {
        reason: "FieldValueRequired",
        field: field.into(),
        message: "Required value".into(),
    }
}

fn is_set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::Object(m) => m.values().any(is_set),
        _ => true,
    }
}

/// `ValidateEvent{Create,Update}` of the real server, on the core/v1 form of the Event.
/// Strict checks apply to writes through events.k8s.io/v1 only.
fn event_causes(core: &Value, namespace: &str, strict: bool, create: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    let text = |k: &str| core[k].as_str().unwrap_or("");
    let involved_ns = core["involvedObject"]["namespace"].as_str().unwrap_or("");
    let has_event_time = is_set(&core["eventTime"]);
    let mismatch = || {
        invalid(
            "involvedObject.namespace",
            involved_ns,
            "does not match event.namespace",
        )
    };
    if !has_event_time {
        let fine = if involved_ns.is_empty() {
            namespace.is_empty() || namespace == "default"
        } else {
            namespace == involved_ns
        };
        if !fine {
            causes.push(mismatch());
        }
    } else {
        if involved_ns.is_empty() && namespace != "default" && namespace != "kube-system" {
            causes.push(mismatch());
        }
        let controller = text("reportingComponent");
        if controller.is_empty() {
            causes.push(required("reportingController"));
        }
        for m in qualified_name_errors(controller) {
            causes.push(invalid("reportingController", controller, &m));
        }
        for (field, core_field, limit) in [
            ("reportingInstance", "reportingInstance", 128),
            ("action", "action", 128),
            ("reason", "reason", 128),
        ] {
            let value = text(core_field);
            if value.is_empty() {
                causes.push(required(field));
            }
            if value.len() > limit {
                causes.push(invalid(
                    field,
                    "",
                    &format!("can have at most {limit} characters"),
                ));
            }
        }
        if text("message").len() > 1024 {
            causes.push(invalid("message", "", "can have at most 1024 characters"));
        }
    }
    if !strict {
        return causes;
    }
    let series = &core["series"];
    if series.is_object() {
        if series["count"].as_i64().unwrap_or(0) < 2 {
            causes.push(invalid("series.count", "", "should be at least 2"));
        }
        if !is_set(&series["lastObservedTime"]) {
            causes.push(required("series.lastObservedTime"));
        }
    }
    if !create {
        return causes;
    }
    if !has_event_time {
        causes.push(required("eventTime"));
    }
    let ty = text("type");
    if ty != "Normal" && ty != "Warning" {
        causes.push(invalid("type", "", &format!("has invalid value: {ty}")));
    }
    for field in ["firstTimestamp", "lastTimestamp", "count", "source"] {
        if is_set(&core[field]) {
            causes.push(invalid(field, "", "needs to be unset"));
        }
    }
    causes
}

/// What the real server's `ValidateRoleBinding` and `ValidateClusterRoleBinding` check of
/// a binding's `roleRef` and `subjects`: a ClusterRoleBinding can only grant a ClusterRole,
/// and its ServiceAccount subjects must name their namespace (a RoleBinding's default to
/// its own).
fn binding_causes(obj: &Value, namespaced: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    let required = |field: String| Cause {
        reason: "FieldValueRequired",
        field,
        message: "Required value".into(),
    };
    let unsupported = |field: &str, value: &str, supported: &[&str]| Cause {
        reason: "FieldValueNotSupported",
        field: field.into(),
        message: format!(
            "Unsupported value: \"{value}\": supported values: {}",
            supported
                .iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let role_ref = &obj["roleRef"];
    let kind = role_ref["kind"].as_str().unwrap_or_default();
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !kinds.contains(&kind) {
        causes.push(unsupported("roleRef.kind", kind, kinds));
    }
    if role_ref["name"].as_str().unwrap_or_default().is_empty() {
        causes.push(required("roleRef.name".into()));
    }
    let subjects = obj["subjects"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    for (i, subject) in subjects.iter().enumerate() {
        let text = |key: &str| subject[key].as_str().unwrap_or_default();
        if text("name").is_empty() {
            causes.push(required(format!("subjects[{i}].name")));
        }
        match text("kind") {
            "ServiceAccount" => {
                if !namespaced && text("namespace").is_empty() {
                    causes.push(required(format!("subjects[{i}].namespace")));
                }
            }
            "User" | "Group" => {}
            other => causes.push(unsupported(
                &format!("subjects[{i}].kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
    causes
}

fn lease_causes(obj: &Value) -> Vec<Cause> {
    let spec = &obj["spec"];
    let mut causes = Vec::new();
    if let Some(d) = spec["leaseDurationSeconds"].as_i64()
        && d <= 0
    {
        causes.push(Cause {
            reason: "FieldValueInvalid",
            field: "spec.leaseDurationSeconds".into(),
            message: format!("Invalid value: {d}: must be greater than 0"),
        });
    }
    if let Some(n) = spec["leaseTransitions"].as_i64()
        && n < 0
    {
        causes.push(Cause {
            reason: "FieldValueInvalid",
            field: "spec.leaseTransitions".into(),
            message: format!("Invalid value: {n}: must be greater than or equal to 0"),
        });
    }
    let strategy = spec["strategy"].as_str();
    if let Some(s) = strategy {
        // The real server names the field twice (`spec.strategy.strategy`).
        let field = "spec.strategy.strategy";
        if !s.contains('/') {
            if s != "OldestEmulationVersion" {
                causes.push(Cause {
                    reason: "FieldValueNotSupported",
                    field: field.into(),
                    message: format!(
                        "Unsupported value: \"{s}\": supported values: \"OldestEmulationVersion\""
                    ),
                });
            }
        } else {
            for m in qualified_name_errors(s) {
                causes.push(invalid(field, s, &m));
            }
        }
    }
    let preferred = spec["preferredHolder"].as_str().unwrap_or("");
    if !preferred.is_empty() && strategy.is_none_or(str::is_empty) {
        causes.push(Cause {
            reason: "FieldValueForbidden",
            field: "spec.preferredHolder".into(),
            message: "Forbidden: may only be specified if `strategy` is defined".into(),
        });
    }
    causes
}

/// How an object reached the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// POST (or an apply that creates).
    Create,
    /// PUT.
    Update,
    /// PATCH of any type: `obj` is the patched object.
    Patch,
}

/// Decodes and validates a write of `obj` (in the shape of `t`, the resource the client
/// addressed, at `version`) into `namespace`.
pub fn admit(
    t: &ResourceType,
    version: &str,
    namespace: &str,
    obj: &Value,
    write: Write,
) -> ApiResult<()> {
    if let Err(e) = decode(t, obj) {
        return Err(match write {
            // A body that cannot be decoded.
            Write::Create | Write::Update => ApiError::bad_request(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: {e}",
                kind = t.kind
            )),
            // A patched object that cannot be decoded: the real server reports the patched
            // JSON as an invalid `patch` of no kind.
            Write::Patch => ApiError::invalid(
                "",
                "",
                "",
                "",
                vec![Cause {
                    reason: "FieldValueInvalid",
                    field: "patch".into(),
                    message: format!("Invalid value: {}: {e}", Value::String(obj.to_string())),
                }],
            ),
        });
    }
    let create = write == Write::Create;
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let causes = match (t.group.as_str(), t.plural.as_str()) {
        ("", "events") => event_causes(obj, namespace, false, create),
        ("events.k8s.io", "events") => event_causes(&events::to_core(obj), namespace, true, create),
        ("coordination.k8s.io", "leases") => lease_causes(obj),
        ("rbac.authorization.k8s.io", "rolebindings") => binding_causes(obj, true),
        ("rbac.authorization.k8s.io", "clusterrolebindings") => binding_causes(obj, false),
        _ => return Ok(()),
    };
    if causes.is_empty() {
        return Ok(());
    }
    // Events of both groups are one internal type of the core group.
    let (qualified, group) = if t.kind == "Event" {
        ("Event".to_string(), "")
    } else {
        (t.qualified_kind(), t.group.as_str())
    };
    Err(ApiError::invalid(&qualified, group, &t.kind, name, causes))
}

/// The fields a JSON body names twice, as strict decoding reports them (`spec.cidr`,
/// `spec.exclude[0].x`); a body that is not JSON has none (it fails elsewhere).
pub fn duplicate_fields(body: &[u8]) -> Vec<String> {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use std::cell::RefCell;

    struct Walk<'a> {
        path: String,
        found: &'a RefCell<Vec<String>>,
    }

    impl<'a> Walk<'a> {
        fn child(&self, part: &str) -> Walk<'a> {
            let path = if self.path.is_empty() {
                part.to_string()
            } else if part.starts_with('[') {
                format!("{}{part}", self.path)
            } else {
                format!("{}.{part}", self.path)
            };
            Walk {
                path,
                found: self.found,
            }
        }
    }

    impl<'de> DeserializeSeed<'de> for Walk<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Walk<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                let child = self.child(&key);
                if !seen.insert(key) {
                    self.found.borrow_mut().push(child.path.clone());
                }
                map.next_value_seed(child)?;
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0;
            while seq
                .next_element_seed(self.child(&format!("[{i}]")))?
                .is_some()
            {
                i += 1;
            }
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
    }

    let found = RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_slice(body);
    let walk = Walk {
        path: String::new(),
        found: &found,
    };
    if walk.deserialize(&mut de).is_err() {
        return Vec::new();
    }
    found.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_fail_with_go_words() {
        assert!(parse_go_time("2026-01-01T10:00:20.123456Z", true).is_ok());
        assert!(parse_go_time("2026-01-01T10:00:20+02:00", false).is_ok());
        assert_eq!(
            parse_go_time("2026-01-01T10:00:20Z", true).unwrap_err(),
            "parsing time \"2026-01-01T10:00:20Z\" as \"2006-01-02T15:04:05.000000Z07:00\": cannot parse \"Z\" as \".000000\""
        );
        assert_eq!(
            parse_go_time("yesterday", false).unwrap_err(),
            "parsing time \"yesterday\" as \"2006-01-02T15:04:05Z07:00\": cannot parse \"yesterday\" as \"2006\""
        );
        assert_eq!(
            parse_go_time("2026-13-01T10:00:20Z", false).unwrap_err(),
            "parsing time \"2026-13-01T10:00:20Z\": month out of range"
        );
        assert_eq!(
            parse_go_time("2026-02-30T10:00:20Z", false).unwrap_err(),
            "parsing time \"2026-02-30T10:00:20Z\": day out of range"
        );
    }

    #[test]
    fn duplicate_fields_are_found_with_their_paths() {
        let body =
            br#"{"spec": {"cidr": "a", "exclude": [{"x": 1, "x": 2}], "cidr": "b"}, "kind": "K"}"#;
        assert_eq!(
            duplicate_fields(body),
            vec!["spec.exclude[0].x", "spec.cidr"]
        );
        assert!(duplicate_fields(b"{\"a\": {\"a\": 1}}").is_empty());
    }

    #[test]
    fn qualified_names_are_checked_like_label_keys() {
        assert!(qualified_name_errors("example.com/my-key").is_empty());
        assert_eq!(
            qualified_name_errors("a b"),
            vec![format!("name part {QUALIFIED_NAME_RULE}")]
        );
        assert_eq!(qualified_name_errors("a/b/c").len(), 1);
        assert_eq!(
            qualified_name_errors("/b"),
            vec!["prefix part must be non-empty".to_string()]
        );
    }

    #[test]
    fn bindings_are_validated_as_the_real_server_does() {
        let registry = crate::resources::Registry::builtin();
        let t = |plural: &str| {
            registry
                .lookup("rbac.authorization.k8s.io", "v1", plural)
                .unwrap()
        };
        let binding = |kind: &str, subject: Value| {
            json!({"metadata": {"name": "b"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": "r"},
                "subjects": [subject]})
        };
        let sa = json!({"kind": "ServiceAccount", "name": "agent"});
        // A RoleBinding's ServiceAccount defaults to the binding's namespace.
        admit(
            &t("rolebindings"),
            "v1",
            "a",
            &binding("Role", sa.clone()),
            Write::Create,
        )
        .unwrap();
        let err = admit(
            &t("clusterrolebindings"),
            "v1",
            "",
            &binding("Role", sa),
            Write::Create,
        )
        .unwrap_err();
        assert_eq!(
            err.message,
            "ClusterRoleBinding.rbac.authorization.k8s.io \"b\" is invalid: [roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\", subjects[0].namespace: Required value]"
        );
        let err = admit(
            &t("rolebindings"),
            "v1",
            "a",
            &binding("Role", json!({"kind": "Robot", "name": "x"})),
            Write::Create,
        )
        .unwrap_err();
        assert!(
            err.message.ends_with("subjects[0].kind: Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\""),
            "{}",
            err.message
        );
    }
}
