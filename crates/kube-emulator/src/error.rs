//! API errors as the real server reports them: a `metav1.Status` body with reason and code.

use serde_json::{Value, json};

/// The group and resource an error is about, printed as the real server does
/// (`ippools.ipledger.io`, or `pods` for the core group).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupResource {
    /// API group; empty for the core group.
    pub group: String,
    /// Plural resource name.
    pub resource: String,
}

impl GroupResource {
    /// A group/resource pair.
    pub fn new(group: &str, resource: &str) -> Self {
        Self {
            group: group.to_string(),
            resource: resource.to_string(),
        }
    }
}

impl std::fmt::Display for GroupResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            write!(f, "{}", self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

/// One field-level cause of an `Invalid` error.
#[derive(Clone, Debug, PartialEq)]
pub struct Cause {
    /// Machine-readable reason, such as `FieldValueInvalid`.
    pub reason: &'static str,
    /// The field path, such as `spec.cidr`.
    pub field: String,
    /// What is wrong, without the field path (`Invalid value: "x": must be ...`).
    pub message: String,
}

impl Cause {
    /// `field: message`, the way the server joins causes into the Status message.
    pub fn render(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }
}

/// An error answered with a `Status` body.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `StatusReason`, such as `NotFound` or `Conflict`.
    pub reason: &'static str,
    /// Human-readable message, worded as the real server words it.
    pub message: String,
    /// `details` of the Status, when the error is about one object.
    pub details: Option<Value>,
}

/// Result type of every emulator operation.
pub type ApiResult<T> = Result<T, ApiError>;

fn details(gr: &GroupResource, name: &str) -> Value {
    json!({"name": name, "group": gr.group, "kind": gr.resource})
}

impl ApiError {
    /// An error with no details.
    pub(crate) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 404: the object does not exist.
    pub fn not_found(gr: &GroupResource, name: &str) -> Self {
        Self {
            details: Some(details(gr, name)),
            ..Self::new(404, "NotFound", format!("{gr} \"{name}\" not found"))
        }
    }

    /// 404 for a path that names no known resource.
    pub fn no_route(path: &str) -> Self {
        tracing::debug!(path, "no such resource");
        Self {
            details: Some(json!({})),
            ..Self::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        }
    }

    /// 409: an object of that name exists.
    pub fn already_exists(gr: &GroupResource, name: &str) -> Self {
        Self {
            details: Some(details(gr, name)),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{gr} \"{name}\" already exists"),
            )
        }
    }

    /// 409: the stored object changed since the client read it (or a precondition failed).
    pub fn conflict(gr: &GroupResource, name: &str, why: &str) -> Self {
        Self {
            details: Some(details(gr, name)),
            ..Self::new(
                409,
                "Conflict",
                format!("Operation cannot be fulfilled on {gr} \"{name}\": {why}"),
            )
        }
    }

    /// 409 for an already formatted `group/resource` name.
    pub fn conflict_message(gr: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {gr} \"{name}\": {why}"),
        )
    }

    /// The standard optimistic-concurrency conflict.
    pub fn stale(gr: &GroupResource, name: &str) -> Self {
        Self::conflict(
            gr,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422: the object fails validation. `kind` is the qualified kind (`IPPool.ipledger.io`).
    pub fn invalid(
        qualified_kind: &str,
        group: &str,
        kind: &str,
        name: &str,
        causes: Vec<Cause>,
    ) -> Self {
        let rendered: Vec<String> = causes.iter().map(Cause::render).collect();
        let joined = if rendered.len() == 1 {
            rendered[0].clone()
        } else {
            format!("[{}]", rendered.join(", "))
        };
        let causes_json: Vec<Value> = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        Self {
            details: Some(
                json!({"name": name, "group": group, "kind": kind, "causes": causes_json}),
            ),
            ..Self::new(
                422,
                "Invalid",
                format!("{qualified_kind} \"{name}\" is invalid: {joined}"),
            )
        }
    }

    /// 400: the request itself is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401: no valid credentials.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403: refused, for example creating in a terminating namespace.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 405: the verb is not supported on that resource.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// 406: none of the accepted media types can be produced.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    /// 410: the requested resourceVersion was compacted away.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 504: the request could not be answered in time.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, "Timeout", message)
    }

    /// 413: the request body is over the limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// 415: a patch type or body media type that is not supported.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    /// 422 without field causes, for example a failed JSON patch `test`.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }

    /// 500: an injected or internal failure.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// 503: the server is (pretending to be) unavailable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// The `metav1.Status` body.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        // `StatusReasonUnknown` is the empty string, which the server leaves out.
        if self.reason.is_empty()
            && let Some(map) = status.as_object_mut()
        {
            map.remove("reason");
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_the_real_server() {
        let gr = GroupResource::new("ipledger.io", "ippools");
        assert_eq!(
            ApiError::not_found(&gr, "a").message,
            "ippools.ipledger.io \"a\" not found"
        );
        assert_eq!(
            ApiError::stale(&gr, "a").message,
            "Operation cannot be fulfilled on ippools.ipledger.io \"a\": the object has been modified; please apply your changes to the latest version and try again"
        );
        let core = GroupResource::new("", "pods");
        assert_eq!(
            ApiError::already_exists(&core, "p").message,
            "pods \"p\" already exists"
        );
    }

    #[test]
    fn invalid_joins_several_causes_in_brackets() {
        let cause = |f: &str| Cause {
            reason: "FieldValueRequired",
            field: f.to_string(),
            message: "Required value".to_string(),
        };
        let one = ApiError::invalid(
            "IPPool.ipledger.io",
            "ipledger.io",
            "IPPool",
            "p",
            vec![cause("spec.cidr")],
        );
        assert_eq!(
            one.message,
            "IPPool.ipledger.io \"p\" is invalid: spec.cidr: Required value"
        );
        let two = ApiError::invalid(
            "IPPool.ipledger.io",
            "ipledger.io",
            "IPPool",
            "p",
            vec![cause("a"), cause("b")],
        );
        assert_eq!(
            two.message,
            "IPPool.ipledger.io \"p\" is invalid: [a: Required value, b: Required value]"
        );
        assert_eq!(two.status()["details"]["causes"][1]["field"], "b");
        assert_eq!(two.status()["code"], 422);
    }
}
