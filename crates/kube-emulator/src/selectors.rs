//! Label and field selectors, with the syntax of `labelSelector=` and `fieldSelector=`.
//!
//! Label selectors are lexed and parsed by the grammar of apimachinery's `labels.Parse`,
//! so a malformed one fails with the real server's words.

use serde_json::Value;

use super::validation::{label_value_errors, qualified_name_errors};

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
    GreaterThan(String, i64),
    LessThan(String, i64),
}

/// A parsed label selector: every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

/// A token of the selector language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    End,
    ClosePar,
    Comma,
    Not,
    DoubleEquals,
    Equals,
    Greater,
    Ident,
    In,
    Less,
    NotEquals,
    NotIn,
    OpenPar,
}

fn is_special(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn symbol(s: &str) -> Option<Tok> {
    Some(match s {
        ")" => Tok::ClosePar,
        "," => Tok::Comma,
        "!" => Tok::Not,
        "==" => Tok::DoubleEquals,
        "=" => Tok::Equals,
        ">" => Tok::Greater,
        "<" => Tok::Less,
        "!=" => Tok::NotEquals,
        "(" => Tok::OpenPar,
        "in" => Tok::In,
        "notin" => Tok::NotIn,
        _ => return None,
    })
}

/// Splits a selector into tokens: runs of operator characters are the longest operator
/// they start with; anything else up to whitespace or an operator is an identifier (or
/// the keywords `in`, `notin`).
fn lex(s: &str) -> Vec<(Tok, String)> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    loop {
        while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
            i += 1;
        }
        if i >= b.len() {
            out.push((Tok::End, String::new()));
            return out;
        }
        let start = i;
        if is_special(b[i]) {
            let mut best = (Tok::End, start);
            while i < b.len() && is_special(b[i]) {
                i += 1;
                match symbol(&s[start..i]) {
                    Some(t) => best = (t, i),
                    None => break,
                }
            }
            i = best.1;
            out.push((best.0, s[start..i].to_string()));
        } else {
            while i < b.len() && !is_special(b[i]) && !matches!(b[i], b' ' | b'\t' | b'\r' | b'\n')
            {
                i += 1;
            }
            let word = &s[start..i];
            let tok = match word {
                "in" => Tok::In,
                "notin" => Tok::NotIn,
                _ => Tok::Ident,
            };
            out.push((tok, word.to_string()));
        }
    }
}

struct Parser {
    items: Vec<(Tok, String)>,
    pos: usize,
}

/// `in` and `notin` are identifiers where values are expected.
fn as_value(tok: Tok) -> Tok {
    match tok {
        Tok::In | Tok::NotIn => Tok::Ident,
        t => t,
    }
}

/// A label-key error as `labels.Parse` words it (its field path is unset: `<nil>`).
fn key_error(key: &str) -> Option<String> {
    let errs = qualified_name_errors(key);
    (!errs.is_empty()).then(|| format!("<nil>: Invalid value: \"{key}\": {}", errs.join("; ")))
}

impl Parser {
    fn peek(&self, values: bool) -> (Tok, &str) {
        let (t, lit) = &self.items[self.pos.min(self.items.len() - 1)];
        (if values { as_value(*t) } else { *t }, lit)
    }

    fn next(&mut self, values: bool) -> (Tok, String) {
        let (t, lit) = self.items[self.pos.min(self.items.len() - 1)].clone();
        self.pos += 1;
        (if values { as_value(t) } else { t }, lit)
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut reqs = Vec::new();
        loop {
            let (tok, lit) = self.peek(true);
            match tok {
                Tok::Ident | Tok::Not => {
                    let r = self
                        .requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    let (t, l) = self.next(true);
                    match t {
                        Tok::End => return Ok(reqs),
                        Tok::Comma => {
                            let (t2, l2) = self.peek(true);
                            if t2 != Tok::Ident && t2 != Tok::Not {
                                return Err(format!(
                                    "found '{l2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => {
                            return Err(format!("found '{l}', expected: ',' or 'end of string'"));
                        }
                    }
                }
                Tok::End => return Ok(reqs),
                _ => {
                    return Err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let (mut tok, mut key) = self.next(true);
        let negated = tok == Tok::Not;
        if negated {
            (tok, key) = self.next(true);
        }
        if tok != Tok::Ident {
            return Err(format!("found '{key}', expected: identifier"));
        }
        if let Some(e) = key_error(&key) {
            return Err(e);
        }
        if negated {
            return Ok(Requirement::DoesNotExist(key));
        }
        if matches!(self.peek(true).0, Tok::End | Tok::Comma) {
            return Ok(Requirement::Exists(key));
        }
        let (op, lit) = self.next(false);
        let values = match op {
            Tok::In | Tok::NotIn => self.set_values()?,
            Tok::Equals | Tok::DoubleEquals | Tok::NotEquals | Tok::Greater | Tok::Less => {
                vec![self.exact_value()?]
            }
            _ => {
                return Err(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                ));
            }
        };
        // What `NewRequirement` checks of the values, with its field paths.
        let mut errs = Vec::new();
        let number = |v: &str| v.parse::<i64>().ok();
        if matches!(op, Tok::Greater | Tok::Less) && number(&values[0]).is_none() {
            errs.push(format!(
                "values[0]: Invalid value: \"{}\": for 'Gt', 'Lt' operators, the value must be an integer",
                values[0]
            ));
        }
        for (i, v) in values.iter().enumerate() {
            let msgs = label_value_errors(v);
            if !msgs.is_empty() {
                errs.push(format!(
                    "values[{i}][{key}]: Invalid value: \"{v}\": {}",
                    msgs.join("; ")
                ));
            }
        }
        match errs.len() {
            0 => {}
            1 => return Err(errs.remove(0)),
            _ => return Err(format!("[{}]", errs.join(", "))),
        }
        let one = || values[0].clone();
        Ok(match op {
            Tok::In => Requirement::In(key, values),
            Tok::NotIn => Requirement::NotIn(key, values),
            Tok::NotEquals => Requirement::NotEquals(key, one()),
            Tok::Greater => Requirement::GreaterThan(key, number(&values[0]).unwrap_or(0)),
            Tok::Less => Requirement::LessThan(key, number(&values[0]).unwrap_or(0)),
            _ => Requirement::Equals(key, one()),
        })
    }

    /// `( v1, v2, ... )`, sorted and without duplicates; empty items are the empty value.
    fn set_values(&mut self) -> Result<Vec<String>, String> {
        let (tok, lit) = self.next(true);
        if tok != Tok::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.peek(true);
        let lit = lit.to_string();
        let mut set = std::collections::BTreeSet::new();
        match tok {
            Tok::Ident | Tok::Comma => {
                loop {
                    let (t, l) = self.next(true);
                    match t {
                        Tok::Ident => {
                            set.insert(l);
                            let (t2, l2) = self.peek(true);
                            match t2 {
                                Tok::Comma => continue,
                                Tok::ClosePar => break,
                                _ => return Err(format!("found '{l2}', expected: ',' or ')'")),
                            }
                        }
                        Tok::Comma => {
                            if set.is_empty() {
                                set.insert(String::new());
                            }
                            match self.peek(true).0 {
                                Tok::ClosePar => {
                                    set.insert(String::new());
                                    break;
                                }
                                Tok::Comma => {
                                    self.next(true);
                                    set.insert(String::new());
                                }
                                _ => {}
                            }
                        }
                        _ => return Err(format!("found '{l}', expected: ',', or identifier")),
                    }
                }
                if self.next(true).0 != Tok::ClosePar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
            }
            Tok::ClosePar => {
                self.next(true);
                set.insert(String::new());
            }
            _ => return Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
        Ok(set.into_iter().collect())
    }

    fn exact_value(&mut self) -> Result<String, String> {
        if matches!(self.peek(true).0, Tok::End | Tok::Comma) {
            return Ok(String::new());
        }
        let (tok, lit) = self.next(true);
        if tok == Tok::Ident {
            Ok(lit)
        } else {
            Err(format!("found '{lit}', expected: identifier"))
        }
    }
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (f,g),h notin (i),j,!k,l>3` as `labels.Parse` does.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parser = Parser {
            items: lex(s),
            pos: 0,
        };
        parser.parse().map(Self)
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        let number = |k: &str| get(k).and_then(|v| v.parse::<i64>().ok());
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
            Requirement::GreaterThan(k, n) => number(k).is_some_and(|v| v > *n),
            Requirement::LessThan(k, n) => number(k).is_some_and(|v| v < *n),
        })
    }
}

/// A parsed field selector over the fields the real server indexes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses `metadata.name=x,spec.nodeName!=y`; only fields `supported` lists are allowed.
    pub fn parse(s: &str, supported: &[&str]) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, negate, value) = if let Some((k, v)) = part.split_once("!=") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, false, v)
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            let field = field.trim();
            if !supported.contains(&field) {
                return Err(format!("field label not supported: {field}"));
            }
            reqs.push((field.to_string(), negate, value.trim().to_string()));
        }
        Ok(Self(reqs))
    }

    /// The value `field` must equal (`field=v` or `field==v`), if a requirement says so,
    /// as Go's `fields.Selector.RequiresExactMatch` answers it.
    pub fn requires_exact(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, negate, _)| f == field && !negate)
            .map(|(_, _, value)| value.as_str())
    }

    /// Whether the object's fields satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, negate, value)| {
            let actual = field
                .split('.')
                .fold(object, |v, part| &v[part])
                .as_str()
                .unwrap_or("");
            (actual == value) != *negate
        })
    }
}

/// The fields a resource can be selected by: `metadata.name` and `metadata.namespace`
/// everywhere, plus the few per-resource ones the real server offers.
pub fn supported_fields(group: &str, plural: &str) -> &'static [&'static str] {
    match (group, plural) {
        ("", "pods") => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "namespaces") => &["metadata.name", "metadata.namespace", "status.phase"],
        ("", "nodes") => &["metadata.name", "metadata.namespace", "spec.unschedulable"],
        ("", "secrets") => &["metadata.name", "metadata.namespace", "type"],
        ("events.k8s.io", "events") => &[
            "metadata.name",
            "metadata.namespace",
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingController",
            "type",
        ],
        ("", "events") => &[
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        _ => &["metadata.name", "metadata.namespace"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": labels}, "spec": {"nodeName": "n1"}})
    }

    #[test]
    fn every_label_operator_works() {
        let o = obj(json!({"app": "web", "tier": "front"}));
        let yes = [
            "app=web",
            "app==web",
            "app!=db",
            "app in (web,db)",
            "tier notin (back)",
            "app",
            "!missing",
            "app=web,tier in (front)",
            "missing notin (x)",
        ];
        for s in yes {
            assert!(
                LabelSelector::parse(s).unwrap().matches(&o),
                "{s} should match"
            );
        }
        let no = [
            "app=db",
            "app!=web",
            "app in (db)",
            "tier notin (front)",
            "missing",
            "!app",
            "app=web,tier=back",
        ];
        for s in no {
            assert!(
                !LabelSelector::parse(s).unwrap().matches(&o),
                "{s} should not match"
            );
        }
    }

    #[test]
    fn bad_label_selectors_fail_with_the_real_parser_words() {
        let err = |s: &str| LabelSelector::parse(s).unwrap_err();
        assert_eq!(
            err("a in x"),
            "unable to parse requirement: found 'x' expected: '('"
        );
        assert_eq!(err("a=b c"), "found 'c', expected: ',' or 'end of string'");
        assert_eq!(
            err("a b=c"),
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(err("a,"), "found '', expected: identifier after ','");
        assert_eq!(
            err("=a"),
            "found '=', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            err("a in (b c)"),
            "unable to parse requirement: found 'c', expected: ',' or ')'"
        );
        assert!(
            err("a$=b").starts_with(
                "unable to parse requirement: <nil>: Invalid value: \"a$\": name part must consist of"
            ),
            "{}",
            err("a$=b")
        );
        assert!(
            err("a=b$").starts_with(
                "unable to parse requirement: values[0][a]: Invalid value: \"b$\": a valid label"
            ),
            "{}",
            err("a=b$")
        );
        assert_eq!(
            err("a>b"),
            "unable to parse requirement: values[0]: Invalid value: \"b\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
    }

    #[test]
    fn sets_and_comparisons_parse_like_the_real_parser() {
        let o = obj(json!({"app": "web", "n": "5", "in": "notin"}));
        for s in [
            "n>4",
            "n<6",
            "app in (web,)",
            "in in (notin)",
            "app notin ()",
            " app , n ",
        ] {
            assert!(LabelSelector::parse(s).unwrap().matches(&o), "{s}");
        }
        for s in ["n>5", "app<9", "app in (,)"] {
            assert!(!LabelSelector::parse(s).unwrap().matches(&o), "{s}");
        }
    }

    #[test]
    fn field_selectors_use_supported_fields_only() {
        let o = obj(json!({}));
        let pods = supported_fields("", "pods");
        assert!(
            FieldSelector::parse("spec.nodeName=n1,metadata.name=a", pods)
                .unwrap()
                .matches(&o)
        );
        assert!(
            !FieldSelector::parse("spec.nodeName!=n1", pods)
                .unwrap()
                .matches(&o)
        );
        assert!(
            FieldSelector::parse("metadata.namespace==ns", pods)
                .unwrap()
                .matches(&o)
        );
        let err = FieldSelector::parse("spec.nodeName=n1", supported_fields("", "configmaps"))
            .unwrap_err();
        assert_eq!(err, "field label not supported: spec.nodeName");
    }

    #[test]
    fn an_equality_requirement_is_an_exact_match() {
        let pods = supported_fields("", "pods");
        let exact = |s: &str, field: &str| {
            FieldSelector::parse(s, pods)
                .unwrap()
                .requires_exact(field)
                .map(str::to_string)
        };
        assert_eq!(
            exact("spec.nodeName=n1,metadata.name==a", "metadata.name").as_deref(),
            Some("a")
        );
        assert_eq!(exact("metadata.name!=a", "metadata.name"), None);
        assert_eq!(exact("spec.nodeName=n1", "metadata.name"), None);
    }
}
