//! Server-side apply, for one field manager at a time: the applied configuration is merged
//! into the object, fields this manager applied before and no longer applies are removed,
//! and `metadata.managedFields` records what each manager applied.
//!
//! Each entry is in the apiVersion its write was made in (field names included), as the
//! real server records it; entries of another version are compared in the writer's.
//!
//! Conflicts are detected between apply managers (a field another manager applied with a
//! different value, unless `force`). Not modelled: ownership of fields written by
//! non-apply operations, and per-item ownership inside lists (lists are owned whole).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::admission::Requester;
use super::events;
use super::patch::strategic_merge;

/// A path of field names from the object root.
type FieldPath = Vec<String>;

/// Who makes a write: as its managedFields entry names it (the field manager and the
/// apiVersion of the request; an empty name records nothing: the server's own writes and
/// server-side apply), and as admission sees it (the requester; none for the server's own
/// writes, which no admission policy sees).
#[derive(Clone, Copy, Debug, Default)]
pub struct FieldManager<'a> {
    /// The manager's name (`fieldManager`, else derived from the User-Agent).
    pub name: &'a str,
    /// The apiVersion the request was made in (`events.k8s.io/v1`, `v1`).
    pub api_version: &'a str,
    /// The API request's user, checked by validating admission policies.
    pub requester: Option<&'a Requester>,
}

/// `set`, named in apiVersion `from`, with the field names of apiVersion `to`: the same
/// but for Events, whose two groups name some top-level fields differently.
fn translate(set: BTreeSet<FieldPath>, from: &str, to: &str) -> BTreeSet<FieldPath> {
    if from == to {
        return set;
    }
    set.iter().map(|p| translate_path(p, from, to)).collect()
}

/// One field path named in apiVersion `from` as apiVersion `to` names it.
fn translate_path(path: &[String], from: &str, to: &str) -> FieldPath {
    let mut out = path.to_vec();
    if let Some(first) = out.first_mut() {
        *first = events::field_in(first, from, to).to_string();
    }
    out
}

/// The fields a managedFields entry holds, named as apiVersion `version` names them.
fn entry_set(entry: &Value, version: &str) -> BTreeSet<FieldPath> {
    let from = entry["apiVersion"].as_str().unwrap_or("");
    translate(from_fields_v1(&entry["fieldsV1"]), from, version)
}

/// Sets the fields of a managedFields entry to `set`, named in apiVersion `version`.
fn set_entry_fields(entry: &mut Value, set: BTreeSet<FieldPath>, version: &str) {
    let to = entry["apiVersion"].as_str().unwrap_or("").to_string();
    entry["fieldsV1"] = fields_v1(&translate(set, version, &to));
}

/// The leaves (and whole lists) a configuration sets, leaving out identity fields.
pub fn field_set(applied: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    if let Value::Object(map) = applied {
        for (k, v) in map {
            if matches!(k.as_str(), "apiVersion" | "kind") {
                continue;
            }
            if k == "metadata" {
                if let Value::Object(meta) = v {
                    for (mk, mv) in meta {
                        if matches!(
                            mk.as_str(),
                            "labels" | "annotations" | "finalizers" | "ownerReferences"
                        ) {
                            collect(mv, vec!["metadata".into(), mk.clone()], &mut out);
                        }
                    }
                }
                continue;
            }
            collect(v, vec![k.clone()], &mut out);
        }
    }
    out
}

fn collect(value: &Value, path: FieldPath, out: &mut BTreeSet<FieldPath>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let mut p = path.clone();
                p.push(k.clone());
                collect(v, p, out);
            }
        }
        _ => {
            out.insert(path);
        }
    }
}

/// `fieldsV1` of a field set: `{"f:spec": {"f:cidr": {}}}`.
pub fn fields_v1(set: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for part in path {
            let entry = node.entry(format!("f:{part}")).or_insert_with(|| json!({}));
            node = entry.as_object_mut().expect("inserted as an object");
        }
    }
    Value::Object(root)
}

/// The field set a `fieldsV1` describes (inverse of [`fields_v1`]).
pub fn from_fields_v1(v: &Value) -> BTreeSet<FieldPath> {
    fn walk(v: &Value, path: FieldPath, out: &mut BTreeSet<FieldPath>) {
        match v.as_object() {
            Some(map) if !map.is_empty() => {
                for (k, child) in map {
                    if let Some(name) = k.strip_prefix("f:") {
                        let mut p = path.clone();
                        p.push(name.to_string());
                        walk(child, p, out);
                    }
                }
            }
            _ if !path.is_empty() => {
                out.insert(path);
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(v, Vec::new(), &mut out);
    out
}

fn remove_path(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = obj;
    for p in parents {
        match node.get_mut(p) {
            Some(n) => node = n,
            None => return,
        }
    }
    if let Some(map) = node.as_object_mut() {
        map.remove(last);
    }
}

/// Applies `applied` for `manager` to `current` (Null when the object does not exist yet).
/// `custom` resources merge like JSON merge patch, built-ins like strategic merge.
pub fn apply(
    current: &Value,
    applied: &Value,
    manager: &str,
    subresource: Option<&str>,
    custom: bool,
    force: bool,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let entries: Vec<Value> = current["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let version = applied["apiVersion"].as_str().unwrap_or("");
    // An applier is one manager whatever version it applies in (the real server leaves
    // apiVersion out of an Apply entry's identity).
    let is_mine = |e: &Value| {
        e["manager"] == manager
            && e["operation"] == "Apply"
            && e["subresource"].as_str() == subresource
    };
    let before = entries
        .iter()
        .find(|e| is_mine(e))
        .map(|e| entry_set(e, version))
        .unwrap_or_default();
    let others: BTreeSet<FieldPath> = entries
        .iter()
        .filter(|e| !is_mine(e))
        .flat_map(|e| entry_set(e, version))
        .collect();
    let now_set = field_set(applied);
    if !force && !current.is_null() {
        let conflicts = conflicts(current, applied, &now_set, &entries, &is_mine);
        if !conflicts.is_empty() {
            return Err(conflicts);
        }
    }
    let mut merged = if current.is_null() {
        applied.clone()
    } else if custom {
        let mut m = current.clone();
        json_patch::merge(&mut m, applied);
        m
    } else {
        strategic_merge(current, applied, "")
    };
    for gone in before.difference(&now_set) {
        if !others.contains(gone) {
            remove_path(&mut merged, gone);
        }
    }
    let mut entry = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": applied["apiVersion"],
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields_v1(&now_set),
    });
    if let Some(sub) = subresource {
        entry["subresource"] = sub.into();
    }
    // A forced apply takes the fields it changes away from the managers that had them.
    let taken: BTreeSet<FieldPath> = now_set
        .iter()
        .filter(|p| value_at(current, p) != value_at(applied, p))
        .cloned()
        .collect();
    let mut kept: Vec<Value> = entries
        .into_iter()
        .filter(|e| !is_mine(e))
        .map(|mut e| {
            if !taken.is_empty() {
                let left = entry_set(&e, version).difference(&taken).cloned().collect();
                set_entry_fields(&mut e, left, version);
            }
            e
        })
        .filter(|e| !from_fields_v1(&e["fieldsV1"]).is_empty())
        .collect();
    kept.push(entry);
    if !merged["metadata"].is_object() {
        merged["metadata"] = json!({});
    }
    merged["metadata"]["managedFields"] = Value::Array(kept);
    Ok(merged)
}

/// Records a non-apply write by `manager` (create, update, patch): the fields it changed
/// become its own (an `Update` entry, in the request's apiVersion) and leave every other
/// manager; removed fields leave everyone. Nothing changes when no field changed, so no-op
/// writes stay no-ops. `old` and `new` may be in another version than the request (Events
/// are stored as core Events).
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: FieldManager<'_>,
    subresource: Option<&str>,
    now: &str,
) {
    let empty = Value::Null;
    let old_obj = old.unwrap_or(&empty);
    // The version `old` and `new` name their fields in.
    let stored = new["apiVersion"].as_str().unwrap_or("").to_string();
    let before = field_set(old_obj);
    let after = field_set(new);
    let changed: BTreeSet<FieldPath> = after
        .iter()
        .filter(|p| value_at(old_obj, p) != value_at(new, p))
        .cloned()
        .collect();
    let removed: BTreeSet<FieldPath> = before.difference(&after).cloned().collect();
    let mut entries: Vec<Value> = old_obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if changed.is_empty() && removed.is_empty() {
        if !entries.is_empty() {
            new["metadata"]["managedFields"] = Value::Array(entries);
        }
        return;
    }
    // An updater writing in two versions is two managers, as the real server keys Update
    // entries by apiVersion too.
    let is_mine = |e: &Value| {
        e["manager"] == manager.name
            && e["operation"] == "Update"
            && e["apiVersion"] == manager.api_version
            && e["subresource"].as_str() == subresource
    };
    let mut mine: BTreeSet<FieldPath> = entries
        .iter()
        .find(|e| is_mine(e))
        .map(|e| entry_set(e, &stored))
        .unwrap_or_default();
    entries.retain(|e| !is_mine(e));
    for e in &mut entries {
        let left = entry_set(e, &stored)
            .into_iter()
            .filter(|p| !changed.contains(p) && !removed.contains(p))
            .collect();
        set_entry_fields(e, left, &stored);
    }
    entries.retain(|e| !from_fields_v1(&e["fieldsV1"]).is_empty());
    mine.extend(changed);
    mine.retain(|p| !removed.contains(p));
    let mut entry = json!({
        "manager": manager.name,
        "operation": "Update",
        "apiVersion": manager.api_version,
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields_v1(&translate(mine, &stored, manager.api_version)),
    });
    if let Some(sub) = subresource {
        entry["subresource"] = sub.into();
    }
    entries.push(entry);
    new["metadata"]["managedFields"] = Value::Array(entries);
}

/// A field another manager applied with a different value.
#[derive(Clone, Debug, PartialEq)]
pub struct Conflict {
    /// The other manager.
    pub manager: String,
    /// The field, as the server prints it (`.spec.cidr`).
    pub field: String,
    /// For a manager that wrote with an update rather than an apply: its apiVersion.
    pub update_api_version: Option<String>,
}

fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |v, p| v.get(p))
}

fn conflicts(
    current: &Value,
    applied: &Value,
    fields: &BTreeSet<FieldPath>,
    entries: &[Value],
    is_mine: &dyn Fn(&Value) -> bool,
) -> Vec<Conflict> {
    let version = applied["apiVersion"].as_str().unwrap_or("");
    let mut out = Vec::new();
    for e in entries.iter().filter(|e| !is_mine(e)) {
        let theirs_version = e["apiVersion"].as_str().unwrap_or("");
        let theirs = entry_set(e, version);
        for path in fields.intersection(&theirs) {
            if value_at(current, path) != value_at(applied, path) {
                // Reported as the other manager's version names the field.
                let field = translate_path(path, version, theirs_version);
                out.push(Conflict {
                    manager: e["manager"].as_str().unwrap_or("").to_string(),
                    field: format!(".{}", field.join(".")),
                    update_api_version: (e["operation"] == "Update")
                        .then(|| theirs_version.to_string()),
                });
            }
        }
    }
    out
}

/// How a conflict names the other manager: `conflict with "m"`, plus `using v1` for a
/// manager that wrote with an update.
pub fn conflict_with(c: &Conflict) -> String {
    match &c.update_api_version {
        Some(v) => format!("conflict with \"{}\" using {v}", c.manager),
        None => format!("conflict with \"{}\"", c.manager),
    }
}

/// The real server's message for apply conflicts.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [only] = conflicts {
        return format!(
            "Apply failed with 1 conflict: {}: {}",
            conflict_with(only),
            only.field
        );
    }
    let lines: Vec<String> = conflicts
        .iter()
        .map(|c| format!("{}: {}", conflict_with(c), c.field))
        .collect();
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn updater<'a>(name: &'a str, api_version: &'a str) -> FieldManager<'a> {
        FieldManager {
            name,
            api_version,
            requester: None,
        }
    }

    #[test]
    fn fields_v1_round_trips() {
        let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labels": {"x": "1"}}, "data": {"k": "v", "j": "w"}});
        let set = field_set(&applied);
        assert_eq!(
            fields_v1(&set),
            json!({"f:data": {"f:j": {}, "f:k": {}}, "f:metadata": {"f:labels": {"f:x": {}}}})
        );
        assert_eq!(from_fields_v1(&fields_v1(&set)), set);
    }

    #[test]
    fn fields_no_longer_applied_are_removed_but_others_are_kept() {
        let first = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v", "old": "x"}});
        let created = apply(&Value::Null, &first, "me", None, false, false, "t").unwrap();
        let mut live = created.clone();
        live["data"]["theirs"] = "y".into();
        let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v2"}});
        let out = apply(&live, &second, "me", None, false, false, "t").unwrap();
        assert_eq!(out["data"], json!({"k": "v2", "theirs": "y"}));
        let managers: Vec<_> = out["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].clone())
            .collect();
        assert_eq!(managers, [json!("me")]);
    }

    #[test]
    fn another_managers_fields_survive_my_removal() {
        let a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"shared": "1"}});
        let live = apply(&Value::Null, &a, "one", None, false, false, "t").unwrap();
        let live = apply(&live, &a, "two", None, false, false, "t").unwrap();
        let b =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {}});
        let out = apply(&live, &b, "one", None, false, false, "t").unwrap();
        assert_eq!(out["data"]["shared"], "1");
    }

    #[test]
    fn applying_another_managers_field_with_a_new_value_conflicts_unless_forced() {
        let a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "1"}});
        let live = apply(&Value::Null, &a, "one", None, false, false, "t").unwrap();
        let b = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "2"}});
        let err = apply(&live, &b, "two", None, false, false, "t").unwrap_err();
        assert_eq!(
            conflict_message(&err),
            "Apply failed with 1 conflict: conflict with \"one\": .data.k"
        );
        assert!(
            apply(&live, &a, "two", None, false, false, "t").is_ok(),
            "the same value is shared"
        );
        let forced = apply(&live, &b, "two", None, false, true, "t").unwrap();
        assert_eq!(forced["data"]["k"], "2");
        let managers: Vec<_> = forced["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].clone())
            .collect();
        assert_eq!(
            managers,
            [json!("two")],
            "the forced field changed hands; a manager left with nothing goes"
        );
    }

    #[test]
    fn updates_take_the_fields_they_change() {
        let a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "1", "j": "1"}});
        let live = apply(&Value::Null, &a, "applier", None, false, false, "t").unwrap();
        let mut edited = live.clone();
        edited["data"]["k"] = "2".into();
        record_update(
            Some(&live),
            &mut edited,
            updater("kubectl-edit", "v1"),
            None,
            "t",
        );
        let entries = edited["metadata"]["managedFields"].as_array().unwrap();
        let owned = |m: &str| {
            from_fields_v1(&entries.iter().find(|e| e["manager"] == m).unwrap()["fieldsV1"])
        };
        assert!(owned("kubectl-edit").contains(&vec!["data".to_string(), "k".to_string()]));
        assert!(!owned("applier").contains(&vec!["data".to_string(), "k".to_string()]));
        let err = apply(&edited, &a, "applier", None, false, false, "t").unwrap_err();
        assert_eq!(
            conflict_message(&err),
            "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using v1: .data.k"
        );
        let mut same = edited.clone();
        record_update(Some(&edited), &mut same, updater("other", "v1"), None, "t2");
        assert_eq!(same, edited, "a write that changes nothing records nothing");
    }

    #[test]
    fn updates_are_recorded_in_the_version_of_the_request() {
        // An Event created through events.k8s.io/v1 (stored as a core Event).
        let stored = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"},
            "involvedObject": {"name": "p"}, "message": "full", "reason": "Exhausted"});
        let mut created = stored.clone();
        record_update(
            None,
            &mut created,
            updater("recorder", "events.k8s.io/v1"),
            None,
            "t",
        );
        let entries = created["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(entries[0]["apiVersion"], "events.k8s.io/v1");
        assert_eq!(
            entries[0]["fieldsV1"],
            json!({"f:note": {}, "f:reason": {}, "f:regarding": {"f:name": {}}})
        );
        // The same manager changing the message through core/v1 is a second manager; the
        // field leaves the first entry under its events.k8s.io name.
        let mut edited = created.clone();
        edited["message"] = "still full".into();
        record_update(
            Some(&created),
            &mut edited,
            updater("recorder", "v1"),
            None,
            "t2",
        );
        let entries = edited["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0]["fieldsV1"],
            json!({"f:reason": {}, "f:regarding": {"f:name": {}}})
        );
        assert_eq!(entries[1]["apiVersion"], "v1");
        assert_eq!(entries[1]["fieldsV1"], json!({"f:message": {}}));
        // An apply through events.k8s.io/v1 sees the core manager's field as its own name.
        let live = crate::events::to_events_v1(&edited);
        let applied = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e"}, "note": "empty"});
        let err = apply(&live, &applied, "kubectl", None, false, false, "t3").unwrap_err();
        assert_eq!(
            conflict_message(&err),
            "Apply failed with 1 conflict: conflict with \"recorder\" using v1: .message"
        );
    }
}
