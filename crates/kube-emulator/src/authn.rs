//! Authentication: the users bearer tokens stand for. Configured tokens
//! ([`crate::Config::tokens`]) name superusers (members of `system:masters`); the
//! TokenRequest subresource (`serviceaccounts/NAME/token`) issues ServiceAccount tokens
//! at runtime, which authenticate as `system:serviceaccount:NS:NAME` while their
//! ServiceAccount (and bound Pod) still exist and they have not expired.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult, Cause, GroupResource};
use super::store::Store;
use super::user::{UserInfo, service_account_user};

/// The audience of tokens whose request names none: the API server's own, as on kind.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// The Pod a token is bound to, and its Node if it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundPod {
    /// Pod name (in the ServiceAccount's namespace).
    pub name: String,
    /// Pod UID.
    pub uid: String,
    /// Node name and UID, when the pod is bound to an existing Node.
    pub node: Option<(String, String)>,
}

/// A token issued for a ServiceAccount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountToken {
    /// The ServiceAccount's namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its UID when the token was issued.
    pub uid: String,
    /// The pod the token is bound to.
    pub pod: Option<BoundPod>,
    /// The token's ID (the JWT's `jti`).
    pub id: String,
    /// When it stops authenticating.
    pub expires: DateTime<Utc>,
}

impl ServiceAccountToken {
    /// The user the token authenticates as.
    pub fn user(&self) -> UserInfo {
        let mut user = UserInfo::service_account(&self.namespace, &self.name, &self.uid);
        let mut extra = |key: &str, value: &str| {
            user.extra.insert(
                format!("authentication.kubernetes.io/{key}"),
                vec![value.to_string()],
            );
        };
        extra("credential-id", &format!("JTI={}", self.id));
        if let Some(pod) = &self.pod {
            extra("pod-name", &pod.name);
            extra("pod-uid", &pod.uid);
            if let Some((node, uid)) = &pod.node {
                extra("node-name", node);
                extra("node-uid", uid);
            }
        }
        user
    }
}

/// What a bearer token stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// A user of [`crate::Config::tokens`].
    Configured(String),
    /// An issued ServiceAccount token.
    ServiceAccount(ServiceAccountToken),
}

/// The bearer tokens the server knows, shared by the server and the [`crate::Emulator`]
/// handle so that tokens issued at runtime authenticate.
#[derive(Clone, Debug, Default)]
pub struct Tokens(Arc<RwLock<HashMap<String, Credential>>>);

impl Tokens {
    /// The configured tokens and their users.
    pub fn new(configured: &BTreeMap<String, String>) -> Self {
        let map = configured
            .iter()
            .map(|(token, user)| (token.clone(), Credential::Configured(user.clone())))
            .collect();
        Self(Arc::new(RwLock::new(map)))
    }

    /// What `token` stands for.
    pub fn get(&self, token: &str) -> Option<Credential> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }

    /// Adds an issued token, forgetting those expired by `now` (so the map stays as small
    /// as the live tokens).
    fn insert(&self, token: String, credential: Credential, now: DateTime<Utc>) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, c| !matches!(c, Credential::ServiceAccount(sa) if sa.expires <= now));
        map.insert(token, credential);
    }
}

/// The user `token` authenticates as at `now`; None (401) for an unknown or expired token,
/// or one whose ServiceAccount or Pod was deleted (or recreated) since, as the real
/// server's ServiceAccount token validator checks.
pub fn authenticate(
    store: &Store,
    tokens: &Tokens,
    token: &str,
    now: DateTime<Utc>,
) -> Option<UserInfo> {
    match tokens.get(token)? {
        Credential::Configured(name) => Some(UserInfo::configured(&name)),
        Credential::ServiceAccount(sa) => {
            let uid_of = |plural: &str, name: &str| {
                let t = store.registry().lookup("", "v1", plural)?;
                let obj = store.get(&t, &sa.namespace, name).ok()?;
                Some(
                    obj["metadata"]["uid"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            };
            let live = now < sa.expires
                && uid_of("serviceaccounts", &sa.name).as_ref() == Some(&sa.uid)
                && sa
                    .pod
                    .as_ref()
                    .is_none_or(|p| uid_of("pods", &p.name).as_ref() == Some(&p.uid));
            live.then(|| sa.user())
        }
    }
}

/// The spec of a TokenRequest, defaulted and validated.
#[derive(Clone, Debug, PartialEq, Eq)]
struct TokenSpec {
    audiences: Vec<String>,
    expiration_seconds: i64,
    /// `boundObjectRef` (kind Pod): name and UID, if it gives one.
    pod: Option<(String, String)>,
}

fn token_request_invalid(name: &str, cause: Cause) -> ApiError {
    ApiError::invalid(
        "TokenRequest.authentication.k8s.io",
        "authentication.k8s.io",
        "TokenRequest",
        name,
        vec![cause],
    )
}

/// Reads a TokenRequest's spec as the real server defaults and validates it: one hour
/// unless asked, at least ten minutes, at most 2^32 seconds; bound only to a Pod.
fn token_spec(name: &str, request: &Value) -> ApiResult<TokenSpec> {
    let spec = &request["spec"];
    let audiences: Vec<String> = spec["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| vec![API_AUDIENCE.to_string()]);
    let expiration_seconds = spec["expirationSeconds"].as_i64().unwrap_or(3600);
    let invalid = |why: &str| {
        token_request_invalid(
            name,
            Cause {
                reason: "FieldValueInvalid",
                field: "spec.expirationSeconds".into(),
                message: format!("Invalid value: {expiration_seconds}: {why}"),
            },
        )
    };
    if expiration_seconds < 600 {
        return Err(invalid("may not specify a duration less than 10 minutes"));
    }
    if expiration_seconds > 1 << 32 {
        return Err(invalid(
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let pod = match spec.get("boundObjectRef").filter(|r| !r.is_null()) {
        None => None,
        Some(r) => {
            let kind = r["kind"].as_str().unwrap_or_default();
            let api_version = r["apiVersion"].as_str().unwrap_or_default();
            if kind != "Pod" || api_version != "v1" {
                // The real server also binds to Secrets and Nodes; the emulator to Pods.
                let gvk = if api_version.is_empty() {
                    format!(", Kind={kind}")
                } else {
                    format!("{api_version}, Kind={kind}")
                };
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for object of type {gvk}"
                )));
            }
            Some((
                r["name"].as_str().unwrap_or_default().to_string(),
                r["uid"].as_str().unwrap_or_default().to_string(),
            ))
        }
    };
    Ok(TokenSpec {
        audiences,
        expiration_seconds,
        pod,
    })
}

/// base64url without padding, as JWTs encode their parts.
fn base64url(bytes: &[u8]) -> String {
    super::protobuf::base64(bytes)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// A token shaped like the real server's (a JWT with its claims) whose signature is
/// random: the emulator knows its tokens by their text, not by verifying them.
fn jwt(claims: &Value) -> String {
    let header = json!({"alg": "RS256", "kid": "kube-emulator"});
    let signature: Vec<u8> = (0..4)
        .flat_map(|_| *uuid::Uuid::new_v4().as_bytes())
        .collect();
    format!(
        "{}.{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes()),
        base64url(&signature)
    )
}

/// Answers `POST .../namespaces/NS/serviceaccounts/NAME/token`: issues a token for the
/// ServiceAccount (404 when it does not exist; 404 when the bound Pod does not exist, 409
/// when its UID is not the one given, 400 when it runs as another ServiceAccount) and
/// returns the TokenRequest with `status.token` and `status.expirationTimestamp`.
pub fn issue(
    store: &Store,
    tokens: &Tokens,
    namespace: &str,
    name: &str,
    request: &Value,
    now: DateTime<Utc>,
) -> ApiResult<Value> {
    let registry = store.registry();
    let lookup = |plural: &str| registry.lookup("", "v1", plural).expect("built in");
    let account = store.get(&lookup("serviceaccounts"), namespace, name)?;
    let spec = token_spec(name, request)?;
    let pod = match &spec.pod {
        None => None,
        Some((pod_name, wanted_uid)) => {
            let pod = store.get(&lookup("pods"), namespace, pod_name)?;
            let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
            let runs_as = pod["spec"]["serviceAccountName"]
                .as_str()
                .or(pod["spec"]["serviceAccount"].as_str())
                .unwrap_or("default");
            if runs_as != name {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount \"{name}\" to pod running with different serviceaccount name."
                )));
            }
            if !wanted_uid.is_empty() && wanted_uid != uid {
                return Err(ApiError::conflict(
                    &GroupResource::new("", "Pod"),
                    pod_name,
                    &format!(
                        "the UID in the bound object reference ({wanted_uid}) does not match the UID in record. The object might have been deleted and then recreated"
                    ),
                ));
            }
            // The node's name and UID join the claims when the node exists (Kubernetes
            // 1.32 and later).
            let node = pod["spec"]["nodeName"]
                .as_str()
                .filter(|n| !n.is_empty())
                .and_then(|n| store.get(&lookup("nodes"), "", n).ok())
                .map(|node| {
                    (
                        node["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        node["metadata"]["uid"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    )
                });
            Some(BoundPod {
                name: pod_name.clone(),
                uid: uid.to_string(),
                node,
            })
        }
    };
    let expires = now + chrono::Duration::seconds(spec.expiration_seconds);
    let issued = ServiceAccountToken {
        namespace: namespace.to_string(),
        name: name.to_string(),
        uid: account["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        pod,
        id: uuid::Uuid::new_v4().to_string(),
        expires,
    };
    let token = jwt(&claims(&issued, &spec.audiences, now));
    tokens.insert(token.clone(), Credential::ServiceAccount(issued), now);
    let bound = spec.pod.as_ref().map_or(Value::Null, |(pod, uid)| {
        let mut r = json!({"kind": "Pod", "apiVersion": "v1", "name": pod});
        if !uid.is_empty() {
            r["uid"] = uid.clone().into();
        }
        r
    });
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": null},
        "spec": {
            "audiences": spec.audiences,
            "expirationSeconds": spec.expiration_seconds,
            "boundObjectRef": bound,
        },
        "status": {
            "token": token,
            "expirationTimestamp": expires.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        },
    }))
}

/// The JWT claims of a token, as the real server writes them.
fn claims(sa: &ServiceAccountToken, audiences: &[String], now: DateTime<Utc>) -> Value {
    let mut k8s = json!({
        "namespace": sa.namespace,
        "serviceaccount": {"name": sa.name, "uid": sa.uid},
    });
    if let Some(pod) = &sa.pod {
        k8s["pod"] = json!({"name": pod.name, "uid": pod.uid});
        if let Some((name, uid)) = &pod.node {
            k8s["node"] = json!({"name": name, "uid": uid});
        }
    }
    json!({
        "aud": audiences,
        "exp": sa.expires.timestamp(),
        "iat": now.timestamp(),
        "iss": API_AUDIENCE,
        "jti": sa.id,
        "kubernetes.io": k8s,
        "nbf": now.timestamp(),
        "sub": service_account_user(&sa.namespace, &sa.name),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(objects: &[(&str, &str, Value)]) -> std::sync::Arc<Store> {
        let store = Store::new(100);
        for (plural, ns, obj) in objects {
            let t = store.registry().lookup("", "v1", plural).unwrap();
            store.create(&t, ns, obj.clone()).unwrap();
        }
        store
    }

    fn sa(name: &str) -> (&'static str, &'static str, Value) {
        (
            "serviceaccounts",
            "default",
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}),
        )
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn token_of(answer: &Value) -> String {
        answer["status"]["token"].as_str().unwrap().to_string()
    }

    #[test]
    fn an_issued_token_authenticates_as_its_service_account_until_it_expires() {
        let store = store_with(&[sa("agent")]);
        let tokens = Tokens::default();
        let answer = issue(&store, &tokens, "default", "agent", &json!({}), now()).unwrap();
        assert_eq!(answer["spec"]["expirationSeconds"], 3600);
        assert_eq!(answer["spec"]["audiences"], json!([API_AUDIENCE]));
        assert_eq!(
            answer["status"]["expirationTimestamp"],
            "2027-01-15T09:00:00Z"
        );
        let token = token_of(&answer);
        assert_eq!(token.split('.').count(), 3, "shaped like a JWT");
        let user = authenticate(&store, &tokens, &token, now()).unwrap();
        assert_eq!(user.username, "system:serviceaccount:default:agent");
        assert_eq!(
            user.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:default",
                "system:authenticated"
            ]
        );
        assert!(!user.uid.is_empty());
        let later = now() + chrono::Duration::seconds(3600);
        assert_eq!(authenticate(&store, &tokens, &token, later), None);
        // Issuing another forgets the expired one.
        issue(&store, &tokens, "default", "agent", &json!({}), later).unwrap();
        assert_eq!(tokens.get(&token), None);
        assert_eq!(authenticate(&store, &tokens, "guess", now()), None);
    }

    #[test]
    fn a_missing_service_account_is_not_found() {
        let store = store_with(&[]);
        let err = issue(
            &store,
            &Tokens::default(),
            "default",
            "nobody",
            &json!({}),
            now(),
        )
        .unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (404, "serviceaccounts \"nobody\" not found")
        );
    }

    #[test]
    fn a_deleted_service_account_takes_its_tokens_along() {
        let store = store_with(&[sa("agent")]);
        let tokens = Tokens::default();
        let token =
            token_of(&issue(&store, &tokens, "default", "agent", &json!({}), now()).unwrap());
        let t = store
            .registry()
            .lookup("", "v1", "serviceaccounts")
            .unwrap();
        store
            .delete(&t, "default", "agent", &Default::default())
            .unwrap();
        store.create(&t, "default", sa("agent").2).unwrap();
        assert_eq!(authenticate(&store, &tokens, &token, now()), None);
    }

    #[test]
    fn a_pod_bound_token_carries_the_pod_and_node() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"serviceAccountName": "agent", "nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}});
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}});
        let store = store_with(&[sa("agent"), ("pods", "default", pod), ("nodes", "", node)]);
        let tokens = Tokens::default();
        let request =
            json!({"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p"}}});
        let token = token_of(&issue(&store, &tokens, "default", "agent", &request, now()).unwrap());
        let user = authenticate(&store, &tokens, &token, now()).unwrap();
        let extra = |k: &str| user.extra[&format!("authentication.kubernetes.io/{k}")][0].clone();
        assert_eq!(extra("pod-name"), "p");
        assert_eq!(extra("node-name"), "n1");
        assert!(!extra("pod-uid").is_empty());
        assert!(extra("credential-id").starts_with("JTI="));
        // Another ServiceAccount's pod cannot be bound.
        let store2 = store_with(&[sa("other")]);
        let err = issue(&store2, &tokens, "default", "other", &request, now()).unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (404, "pods \"p\" not found")
        );
        store
            .create(
                &store
                    .registry()
                    .lookup("", "v1", "serviceaccounts")
                    .unwrap(),
                "default",
                sa("other").2,
            )
            .unwrap();
        let err = issue(&store, &tokens, "default", "other", &request, now()).unwrap_err();
        assert_eq!(err.code, 400);
        // The pod's deletion ends the token.
        let pods = store.registry().lookup("", "v1", "pods").unwrap();
        store
            .delete(&pods, "default", "p", &Default::default())
            .unwrap();
        assert_eq!(authenticate(&store, &tokens, &token, now()), None);
    }

    #[test]
    fn a_short_expiration_is_invalid() {
        let store = store_with(&[sa("agent")]);
        let err = issue(
            &store,
            &Tokens::default(),
            "default",
            "agent",
            &json!({"spec": {"expirationSeconds": 60}}),
            now(),
        )
        .unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (
                422,
                "TokenRequest.authentication.k8s.io \"agent\" is invalid: spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"
            )
        );
    }
}
