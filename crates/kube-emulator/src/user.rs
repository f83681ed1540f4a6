//! Who a request comes from: the user, groups and extra information that authentication
//! ([`crate::authn`]) establishes and that authorization ([`crate::rbac`]) and admission
//! ([`crate::admission`]) decide on. Its own module, so that those three depend on it
//! and not on each other.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// The user of requests without credentials.
pub const ANONYMOUS: &str = "system:anonymous";

/// The group every request of a member is allowed (the real server's superusers).
pub const MASTERS: &str = "system:masters";

/// The ServiceAccount user name of `namespace/name`.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// Who a request comes from, as the real server's `user.Info` says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// User name.
    pub username: String,
    /// UID (a ServiceAccount's), empty for others.
    pub uid: String,
    /// Groups, `system:authenticated` last for authenticated users.
    pub groups: Vec<String>,
    /// Extra information (the bound pod and node of a ServiceAccount token).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// `system:anonymous`, of group `system:unauthenticated`.
    pub fn anonymous() -> Self {
        Self {
            username: ANONYMOUS.into(),
            groups: vec!["system:unauthenticated".into()],
            ..Default::default()
        }
    }

    /// A user of [`crate::Config::tokens`]: a member of `system:masters`.
    pub fn configured(name: &str) -> Self {
        Self {
            username: name.into(),
            groups: vec![MASTERS.into(), "system:authenticated".into()],
            ..Default::default()
        }
    }

    /// The ServiceAccount `namespace/name` whose UID is `uid`.
    pub fn service_account(namespace: &str, name: &str, uid: &str) -> Self {
        Self {
            username: service_account_user(namespace, name),
            uid: uid.into(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
            extra: BTreeMap::new(),
        }
    }

    /// `status.userInfo` of a SelfSubjectReview (empty fields left out).
    pub fn to_review(&self) -> Value {
        let mut info = json!({"username": self.username, "groups": self.groups});
        if !self.uid.is_empty() {
            info["uid"] = self.uid.clone().into();
        }
        if !self.extra.is_empty() {
            info["extra"] = json!(self.extra);
        }
        info
    }
}
