//! `events.k8s.io/v1` Events are a second view of the core/v1 Events, as in the real
//! server: stored once, converted field by field on the way in and out.

use serde_json::{Map, Value};

use super::resources::ResourceType;

/// events.k8s.io/v1 field ↔ core/v1 field, for the fields whose names differ.
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// Whether `t` is the events.k8s.io view, stored as core/v1 Events.
pub fn is_view(t: &ResourceType) -> bool {
    t.group == "events.k8s.io" && t.plural == "events"
}

fn rename(obj: &Value, api_version: &str, to_core: bool) -> Value {
    let Value::Object(map) = obj else {
        return obj.clone();
    };
    let mut out = Map::with_capacity(map.len());
    for (k, v) in map {
        let renamed = RENAMED
            .iter()
            .find(|(v1, core)| if to_core { v1 == k } else { core == k })
            .map(|(v1, core)| if to_core { *core } else { *v1 });
        out.insert(renamed.unwrap_or(k).to_string(), v.clone());
    }
    out.insert("apiVersion".into(), api_version.into());
    out.insert("kind".into(), "Event".into());
    Value::Object(out)
}

/// A top-level Event field named in apiVersion `from` as apiVersion `to` names it, for
/// managedFields recorded through one group and compared in the other. Any other pair of
/// versions names its fields alike.
pub fn field_in<'a>(field: &'a str, from: &str, to: &str) -> &'a str {
    match (from, to) {
        ("events.k8s.io/v1", "v1") => RENAMED
            .iter()
            .find(|(v1, _)| *v1 == field)
            .map_or(field, |(_, core)| core),
        ("v1", "events.k8s.io/v1") => RENAMED
            .iter()
            .find(|(_, core)| *core == field)
            .map_or(field, |(v1, _)| v1),
        _ => field,
    }
}

/// An events.k8s.io/v1 Event as the core/v1 Event it is stored as.
pub fn to_core(obj: &Value) -> Value {
    rename(obj, "v1", true)
}

/// A stored core/v1 Event as events.k8s.io/v1 presents it.
pub fn to_events_v1(obj: &Value) -> Value {
    rename(obj, "events.k8s.io/v1", false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_are_renamed_both_ways() {
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "IPPool", "name": "p"}, "note": "pool is full", "reason": "PoolExhausted",
            "reportingController": "ipledger.io/controller", "type": "Warning"});
        let core = to_core(&v1);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], "pool is full");
        assert_eq!(core["reportingComponent"], "ipledger.io/controller");
        assert_eq!(core["reason"], "PoolExhausted");
        assert_eq!(to_events_v1(&core), v1);
        assert_eq!(field_in("note", "events.k8s.io/v1", "v1"), "message");
        assert_eq!(field_in("message", "v1", "events.k8s.io/v1"), "note");
        assert_eq!(field_in("reason", "v1", "events.k8s.io/v1"), "reason");
        assert_eq!(field_in("message", "v1", "v1"), "message");
    }
}
