//! CRD structural schemas: pruning of unknown fields, OpenAPI value validation and CEL
//! `x-kubernetes-validations` (through `kube-cel`), reported as the real server reports them.

use std::collections::HashMap;
use std::sync::Mutex;

use kube_cel::{CompiledSchema, Validator, compile_schema};
use serde_json::{Map, Value};

use super::error::Cause;

/// A compiled `openAPIV3Schema` of one CRD version.
pub struct Schema {
    root: Value,
    cel: Option<CompiledSchema>,
    patterns: Mutex<HashMap<String, Option<regex::Regex>>>,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema").field("root", &self.root).finish()
    }
}

fn has_rules(schema: &Value) -> bool {
    match schema {
        Value::Object(map) => {
            map.contains_key("x-kubernetes-validations") || map.values().any(has_rules)
        }
        Value::Array(items) => items.iter().any(has_rules),
        _ => false,
    }
}

impl Schema {
    /// Compiles a schema; CEL rules that do not compile are an error, as in the real server.
    pub fn compile(root: &Value) -> Result<Self, String> {
        if !root.is_object() {
            return Err("Required value: must be an object schema".into());
        }
        let cel = if has_rules(root) {
            let compiled = compile_schema(root);
            if let Some(err) = first_compile_error(&compiled) {
                return Err(format!("Invalid value: compilation failed: {err}"));
            }
            Some(compiled)
        } else {
            None
        };
        Ok(Self {
            root: root.clone(),
            cel,
            patterns: Mutex::new(HashMap::new()),
        })
    }

    /// The schema as declared.
    pub fn root(&self) -> &Value {
        &self.root
    }

    /// Drops fields the schema does not declare (keeping `apiVersion`, `kind`, `metadata`
    /// at the root) and nulls of non-nullable fields, then applies `default`s. Returns the
    /// paths of the unknown fields dropped, for `fieldValidation=Strict|Warn`.
    pub fn prune_and_default(&self, object: &mut Value) -> Vec<String> {
        let dropped = self.prune(object);
        *object = kube_cel::apply_defaults(&self.root, object);
        dropped
    }

    /// The pruning half of [`Schema::prune_and_default`]: drops undeclared fields and nulls
    /// of non-nullable fields; returns the paths of the unknown fields dropped.
    pub fn prune(&self, object: &mut Value) -> Vec<String> {
        let mut dropped = Vec::new();
        if let Value::Object(map) = object {
            let props = self.root.get("properties").and_then(Value::as_object);
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                match props.and_then(|p| p.get(&key)) {
                    Some(sub) => {
                        let child = map.get_mut(&key).expect("key listed above");
                        if child.is_null() && !sub["nullable"].as_bool().unwrap_or(false) {
                            map.remove(&key);
                        } else {
                            prune(sub, child, &key, &mut dropped);
                        }
                    }
                    None if self.root["x-kubernetes-preserve-unknown-fields"] == true => {}
                    None => {
                        map.remove(&key);
                        dropped.push(key);
                    }
                }
            }
        }
        dropped
    }

    /// Validates types, required fields, enums, patterns, bounds and CEL rules. `old` is the
    /// stored object on update, for transition rules (`oldSelf`).
    pub fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        let mut causes = Vec::new();
        if let Value::Object(map) = object {
            let props = self.root.get("properties").and_then(Value::as_object);
            for req in self.root["required"].as_array().into_iter().flatten() {
                if let Some(key) = req.as_str()
                    && !map.contains_key(key)
                {
                    causes.push(required(key));
                }
            }
            for (key, value) in map {
                if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if let Some(sub) = props.and_then(|p| p.get(key)) {
                    self.check(sub, value, key, &mut causes);
                }
            }
        }
        // CEL only runs on objects that pass the OpenAPI checks, as in the real server.
        if causes.is_empty()
            && let Some(cel) = &self.cel
        {
            let validator = Validator::new();
            // CEL sees a null in an object with declared properties as an absent field,
            // as the real server's CEL values do (`has(self.gateway)` is false for
            // `gateway: null`); the stored object keeps the null.
            let (object, old) = (
                without_nulls(&self.root, object),
                old.map(|o| without_nulls(&self.root, o)),
            );
            let old = old.as_deref();
            // Transition rules compare only the parts of the object the schema declares.
            if let Err(errors) = validator.validate_compiled(cel, &object, old) {
                for e in errors.iter() {
                    // The real server shows the value the rule judged when it is a scalar,
                    // and no value for a rule on an object or a list.
                    let kind = rule_owner_type(&self.root, &e.rule)
                        .unwrap_or_else(|| self.type_at(&e.field_path));
                    let message = if kind == "object" || kind == "array" {
                        format!("Invalid value: {}", e.message)
                    } else {
                        let value = value_at(&object, &e.field_path);
                        format!("Invalid value: {}: {}", go_value(value), e.message)
                    };
                    causes.push(Cause {
                        reason: "FieldValueInvalid",
                        field: e.field_path.clone(),
                        message,
                    });
                }
            }
        }
        causes
    }

    fn type_at(&self, path: &str) -> String {
        let mut schema = &self.root;
        for part in path.split('.').filter(|p| !p.is_empty()) {
            let name = part.split('[').next().unwrap_or(part);
            schema = &schema["properties"][name];
            if part.contains('[') {
                schema = &schema["items"];
            }
        }
        schema["type"].as_str().unwrap_or("object").to_string()
    }

    fn pattern_matches(&self, pattern: &str, value: &str) -> bool {
        let mut cache = self.patterns.lock().unwrap_or_else(|e| e.into_inner());
        let re = cache
            .entry(pattern.to_string())
            .or_insert_with(|| regex::Regex::new(pattern).ok());
        re.as_ref().is_none_or(|re| re.is_match(value))
    }

    fn check(&self, schema: &Value, value: &Value, path: &str, causes: &mut Vec<Cause>) {
        if value.is_null() {
            if !schema["nullable"].as_bool().unwrap_or(false) && schema.get("type").is_some() {
                causes.push(type_error(
                    path,
                    schema["type"].as_str().unwrap_or("object"),
                    value,
                ));
            }
            return;
        }
        let int_or_string = schema["x-kubernetes-int-or-string"] == true;
        if let Some(t) = schema["type"].as_str() {
            let ok = match t {
                "object" => value.is_object(),
                "array" => value.is_array(),
                "string" => value.is_string() || (int_or_string && value.is_i64()),
                "integer" => {
                    value.is_i64() || value.is_u64() || (int_or_string && value.is_string())
                }
                "number" => value.is_number(),
                "boolean" => value.is_boolean(),
                _ => true,
            };
            if !ok {
                causes.push(type_error(path, t, value));
                return;
            }
        }
        if let Some(options) = schema["enum"].as_array()
            && !options.contains(value)
        {
            let supported: Vec<String> = options.iter().map(Value::to_string).collect();
            causes.push(Cause {
                reason: "FieldValueNotSupported",
                field: path.to_string(),
                message: format!(
                    "Unsupported value: {value}: supported values: {}",
                    supported.join(", ")
                ),
            });
        }
        match value {
            Value::String(s) => {
                if let Some(max) = schema["maxLength"].as_u64()
                    && s.chars().count() as u64 > max
                {
                    causes.push(Cause {
                        reason: "FieldValueTooLong",
                        field: path.to_string(),
                        message: format!("Too long: may not be more than {max} bytes"),
                    });
                }
                if let Some(min) = schema["minLength"].as_u64()
                    && (s.chars().count() as u64) < min
                {
                    causes.push(invalid(
                        path,
                        value,
                        &format!("{path} in body should be at least {min} chars long"),
                    ));
                }
                if let Some(p) = schema["pattern"].as_str()
                    && !self.pattern_matches(p, s)
                {
                    causes.push(invalid(
                        path,
                        value,
                        &format!("{path} in body should match '{p}'"),
                    ));
                }
            }
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or_default();
                if let Some(max) = schema["maximum"].as_f64()
                    && x > max
                {
                    causes.push(invalid(
                        path,
                        value,
                        &format!(
                            "{path} in body should be less than or equal to {}",
                            number(max)
                        ),
                    ));
                }
                if let Some(min) = schema["minimum"].as_f64()
                    && x < min
                {
                    causes.push(invalid(
                        path,
                        value,
                        &format!(
                            "{path} in body should be greater than or equal to {}",
                            number(min)
                        ),
                    ));
                }
            }
            Value::Array(items) => {
                if let Some(max) = schema["maxItems"].as_u64()
                    && items.len() as u64 > max
                {
                    causes.push(Cause {
                        reason: "FieldValueTooMany",
                        field: path.to_string(),
                        message: format!(
                            "Too many: {}: must have at most {max} items",
                            items.len()
                        ),
                    });
                }
                if let Some(min) = schema["minItems"].as_u64()
                    && (items.len() as u64) < min
                {
                    causes.push(invalid(
                        path,
                        value,
                        &format!("{path} in body should have at least {min} items"),
                    ));
                }
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(item_schema, item, &format!("{path}[{i}]"), causes);
                    }
                }
            }
            Value::Object(map) => {
                for req in schema["required"].as_array().into_iter().flatten() {
                    if let Some(key) = req.as_str()
                        && !map.contains_key(key)
                    {
                        causes.push(required(&format!("{path}.{key}")));
                    }
                }
                let props = schema.get("properties").and_then(Value::as_object);
                let additional = schema.get("additionalProperties").filter(|a| a.is_object());
                for (key, child) in map {
                    if let Some(sub) = props.and_then(|p| p.get(key)) {
                        self.check(sub, child, &format!("{path}.{key}"), causes);
                    } else if let Some(sub) = additional {
                        self.check(sub, child, &format!("{path}[{key}]"), causes);
                    }
                }
            }
            _ => {}
        }
    }
}

/// The value at a field path such as `spec.exclude[0]` (null when there is none).
fn value_at<'a>(object: &'a Value, path: &str) -> &'a Value {
    let mut v = object;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, indices) = part.split_once('[').unwrap_or((part, ""));
        if !name.is_empty() {
            v = &v[name];
        }
        for index in indices.split('[').filter(|i| !i.is_empty()) {
            let index = index.trim_end_matches(']');
            v = match index.parse::<usize>() {
                Ok(i) => &v[i],
                Err(_) => &v[index.trim_matches('"')],
            };
        }
    }
    v
}

/// A value as Go's field errors print it: strings quoted, numbers and booleans bare.
fn go_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// The `type` of the schema node that declares `rule`.
fn rule_owner_type(schema: &Value, rule: &str) -> Option<String> {
    let declares = schema["x-kubernetes-validations"]
        .as_array()
        .is_some_and(|rules| rules.iter().any(|r| r["rule"] == rule));
    if declares {
        return Some(schema["type"].as_str().unwrap_or("object").to_string());
    }
    let children = schema["properties"]
        .as_object()
        .into_iter()
        .flat_map(|p| p.values())
        .chain(schema.get("items"))
        .chain(schema.get("additionalProperties").filter(|a| a.is_object()));
    for child in children {
        if let Some(found) = rule_owner_type(child, rule) {
            return Some(found);
        }
    }
    None
}

fn first_compile_error(compiled: &CompiledSchema) -> Option<String> {
    if let Some(e) = compiled.compilation_errors().first() {
        return Some(e.to_string());
    }
    compiled
        .properties
        .values()
        .chain(compiled.items.as_deref())
        .chain(compiled.additional_properties.as_deref())
        .find_map(first_compile_error)
}

fn number(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{}", x as i64)
    } else {
        x.to_string()
    }
}

fn required(path: &str) -> Cause {
    Cause {
        reason: "FieldValueRequired",
        field: path.to_string(),
        message: "Required value".to_string(),
    }
}

fn invalid(path: &str, value: &Value, why: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        field: path.to_string(),
        message: format!("Invalid value: {value}: {why}"),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_error(path: &str, expected: &str, value: &Value) -> Cause {
    let got = type_name(value);
    Cause {
        reason: "FieldValueTypeInvalid",
        field: path.to_string(),
        message: format!(
            "Invalid value: \"{got}\": {path} in body must be of type {expected}: \"{got}\""
        ),
    }
}

fn has_null(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.values().any(has_null),
        Value::Array(items) => items.iter().any(has_null),
        _ => false,
    }
}

/// `value` without the null fields of objects whose schema declares properties (borrowed
/// when there is none, the usual case).
fn without_nulls<'a>(schema: &Value, value: &'a Value) -> std::borrow::Cow<'a, Value> {
    if !has_null(value) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = value.clone();
    drop_nulls(schema, &mut out);
    std::borrow::Cow::Owned(out)
}

fn drop_nulls(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            if props.is_some() {
                map.retain(|_, v| !v.is_null());
            }
            for (k, v) in map.iter_mut() {
                let sub = props
                    .and_then(|p| p.get(k))
                    .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()));
                if let Some(sub) = sub {
                    drop_nulls(sub, v);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                for v in items {
                    drop_nulls(item, v);
                }
            }
        }
        _ => {}
    }
}

fn prune(schema: &Value, value: &mut Value, path: &str, dropped: &mut Vec<String>) {
    if schema["x-kubernetes-preserve-unknown-fields"] == true && schema.get("properties").is_none()
    {
        return;
    }
    match value {
        Value::Object(map) => prune_object(schema, map, path, dropped),
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(item_schema, item, &format!("{path}[{i}]"), dropped);
                }
            }
        }
        _ => {}
    }
}

fn prune_object(
    schema: &Value,
    map: &mut Map<String, Value>,
    path: &str,
    dropped: &mut Vec<String>,
) {
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
    let embedded = schema["x-kubernetes-embedded-resource"] == true;
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        if embedded && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        let sub = props
            .and_then(|p| p.get(&key))
            .or_else(|| additional.filter(|a| a.is_object()));
        match sub {
            Some(sub) => {
                let child = map.get_mut(&key).expect("key listed above");
                if child.is_null() && !sub["nullable"].as_bool().unwrap_or(false) {
                    map.remove(&key);
                } else {
                    prune(sub, child, &format!("{path}.{key}"), dropped);
                }
            }
            None if preserve || additional == Some(&Value::Bool(true)) => {}
            None => {
                map.remove(&key);
                dropped.push(format!("{path}.{key}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn subnet_schema() -> Schema {
        let crd = crate::subnet_crd();
        Schema::compile(&crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]).unwrap()
    }

    fn pool(spec: Value) -> Value {
        json!({"apiVersion": "emulator.example.com/v1", "kind": "Subnet", "metadata": {"name": "p"}, "spec": spec})
    }

    #[test]
    fn unknown_fields_are_pruned_and_reported() {
        let mut obj = pool(json!({"cidr": "10.0.0.0/16", "colour": "blue"}));
        obj["extra"] = json!(1);
        let dropped = subnet_schema().prune_and_default(&mut obj);
        assert_eq!(
            dropped,
            vec!["extra".to_string(), "spec.colour".to_string()]
        );
        assert_eq!(obj["spec"], json!({"cidr": "10.0.0.0/16"}));
        assert_eq!(obj["metadata"]["name"], "p");
    }

    #[test]
    fn type_required_and_bounds_are_checked() {
        let schema = subnet_schema();
        let causes = schema.validate(&pool(json!({"blockSize": "x"})), None);
        let fields: Vec<_> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["spec.cidr", "spec.blockSize"]);
        assert_eq!(causes[0].message, "Required value");
        let causes = schema.validate(
            &pool(json!({"cidr": "10.0.0.0/16", "blockSize": 200})),
            None,
        );
        assert_eq!(
            causes[0].render(),
            "spec.blockSize: Invalid value: 200: spec.blockSize in body should be less than or equal to 128"
        );
    }

    #[test]
    fn cel_rules_run_with_the_kubernetes_ip_library() {
        let schema = subnet_schema();
        assert!(
            schema
                .validate(&pool(json!({"cidr": "10.0.0.0/16"})), None)
                .is_empty()
        );
        let causes = schema.validate(&pool(json!({"cidr": "10.0.0.1/16"})), None);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.cidr");
        assert!(
            causes[0].message.ends_with(
                "cidr must be a network address in CIDR notation, such as 10.244.0.0/16"
            )
        );
    }

    #[test]
    fn nulls_are_absent_fields_to_cel() {
        let schema = subnet_schema();
        let mut obj = pool(
            json!({"cidr": "10.0.0.0/16", "gateway": null, "blockSize": null, "default": null}),
        );
        schema.prune_and_default(&mut obj);
        // Not nullable: pruned. Nullable: kept, but absent to `has()`.
        assert!(obj["spec"].get("default").is_none());
        assert!(obj["spec"]["gateway"].is_null());
        let causes = schema.validate(&obj, Some(&pool(json!({"cidr": "10.0.0.0/16"}))));
        assert!(causes.is_empty(), "{causes:?}");
    }

    #[test]
    fn rules_on_objects_show_no_value_and_rules_on_scalars_the_value() {
        let schema = subnet_schema();
        let old = pool(json!({"cidr": "10.0.0.0/16", "blockSize": 26}));
        let causes = schema.validate(
            &pool(json!({"cidr": "10.0.0.0/16", "blockSize": 27})),
            Some(&old),
        );
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(
            causes[0].render(),
            "spec.blockSize: Invalid value: blockSize is immutable"
        );
    }

    #[test]
    fn defaults_fill_missing_fields_and_bad_rules_do_not_compile() {
        let schema = Schema::compile(&json!({
            "type": "object",
            "properties": {"spec": {"type": "object", "properties": {
                "size": {"type": "integer", "default": 3},
                "mode": {"type": "string", "enum": ["fast", "slow"]},
            }}},
        }))
        .unwrap();
        let mut obj = json!({"spec": {"mode": "fast"}});
        schema.prune_and_default(&mut obj);
        assert_eq!(obj["spec"], json!({"mode": "fast", "size": 3}));
        let causes = schema.validate(&json!({"spec": {"mode": "medium"}}), None);
        assert_eq!(
            causes[0].render(),
            "spec.mode: Unsupported value: \"medium\": supported values: \"fast\", \"slow\""
        );
        let bad = Schema::compile(
            &json!({"type": "object", "x-kubernetes-validations": [{"rule": "self.x >", "message": "m"}]}),
        );
        assert!(bad.unwrap_err().contains("compilation failed"));
    }

    #[test]
    fn transition_rules_refuse_a_changed_cidr() {
        let schema = subnet_schema();
        let old = pool(json!({"cidr": "10.0.0.0/16"}));
        let causes = schema.validate(&pool(json!({"cidr": "10.1.0.0/16"})), Some(&old));
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(
            causes[0].render(),
            "spec.cidr: Invalid value: \"10.1.0.0/16\": cidr is immutable"
        );
    }
}
