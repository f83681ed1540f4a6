//! The resource types the emulator serves: the built-ins and those registered by CRDs.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::error::GroupResource;
use super::schema::Schema;

/// One `additionalPrinterColumns` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// OpenAPI type: string, integer, number, boolean, date.
    pub type_: String,
    /// OpenAPI format, if any.
    pub format: String,
    /// Column description.
    pub description: String,
    /// 0 for the default view, more for `-o wide`.
    pub priority: i64,
    /// Simple JSONPath into the object (`.spec.cidr`).
    pub json_path: String,
}

/// One served version of a resource.
#[derive(Clone, Debug)]
pub struct Version {
    /// Version name (`v1alpha1`).
    pub name: String,
    /// Structural schema of this version, for CRDs.
    pub schema: Option<Arc<Schema>>,
    /// Printer columns of this version (CRDs only; built-ins have fixed tables).
    pub columns: Vec<PrinterColumn>,
}

/// Everything the server needs to know about one resource.
#[derive(Clone, Debug)]
pub struct ResourceType {
    /// API group, empty for core.
    pub group: String,
    /// Served versions; the first is the preferred and storage version.
    pub versions: Vec<Version>,
    /// Kind (`IPPool`).
    pub kind: String,
    /// Plural resource name (`ippools`).
    pub plural: String,
    /// Singular name (`ippool`).
    pub singular: String,
    /// Short names (`ipp`).
    pub short_names: Vec<String>,
    /// Categories (`all`, `ipledger`).
    pub categories: Vec<String>,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Has a `/status` subresource: main writes keep status, status writes keep the rest.
    pub status_subresource: bool,
    /// Keeps `metadata.generation`.
    pub generation: bool,
    /// Update without `metadata.resourceVersion` is allowed (true for most built-ins, false
    /// for custom resources, as in the real server).
    pub unconditional_update: bool,
    /// Registered by a CRD (JSON merge patch only; schema validated).
    pub custom: bool,
}

impl ResourceType {
    /// The storage key: group and plural.
    pub fn group_resource(&self) -> GroupResource {
        GroupResource::new(&self.group, &self.plural)
    }

    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    /// The storage (first) version.
    pub fn storage_version(&self) -> &str {
        &self.versions[0].name
    }

    /// The served version called `name`.
    pub fn version(&self, name: &str) -> Option<&Version> {
        self.versions.iter().find(|v| v.name == name)
    }

    /// `Kind.group` as used in Invalid messages (`IPPool.ipledger.io`, `Pod` for core).
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    short: &'static [&'static str],
    namespaced: bool,
    status: bool,
    generation: bool,
    all: bool,
}

// One row of the built-in table; positional to keep the table readable.
#[allow(clippy::too_many_arguments)]
const fn b(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    short: &'static [&'static str],
    namespaced: bool,
    status: bool,
    generation: bool,
    all: bool,
) -> Builtin {
    Builtin {
        group,
        version,
        kind,
        plural,
        short,
        namespaced,
        status,
        generation,
        all,
    }
}

// group, version, kind, plural, short names, namespaced, status, generation, in "all"
#[rustfmt::skip]
const BUILTINS: &[Builtin] = &[
    b("", "v1", "Namespace", "namespaces", &["ns"], false, true, false, false),
    b("", "v1", "Pod", "pods", &["po"], true, true, true, true),
    b("", "v1", "Node", "nodes", &["no"], false, true, false, false),
    b("", "v1", "Service", "services", &["svc"], true, true, false, true),
    b("", "v1", "ConfigMap", "configmaps", &["cm"], true, false, false, false),
    b("", "v1", "Secret", "secrets", &[], true, false, false, false),
    b("", "v1", "ServiceAccount", "serviceaccounts", &["sa"], true, false, false, false),
    b("", "v1", "Event", "events", &["ev"], true, false, false, false),
    b("", "v1", "Endpoints", "endpoints", &["ep"], true, false, false, false),
    b("events.k8s.io", "v1", "Event", "events", &["ev"], true, false, false, false),
    b("coordination.k8s.io", "v1", "Lease", "leases", &[], true, false, false, false),
    b("apps", "v1", "Deployment", "deployments", &["deploy"], true, true, true, true),
    b("apps", "v1", "DaemonSet", "daemonsets", &["ds"], true, true, true, true),
    b("apps", "v1", "StatefulSet", "statefulsets", &["sts"], true, true, true, true),
    b("apps", "v1", "ReplicaSet", "replicasets", &["rs"], true, true, true, true),
    b("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", &["pdb"], true, true, true, false),
    b("rbac.authorization.k8s.io", "v1", "Role", "roles", &[], true, false, false, false),
    b("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", &[], true, false, false, false),
    b("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", &[], false, false, false, false),
    b("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", &[], false, false, false, false),
    b("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", &[], false, false, false, false),
    b("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", &[], false, false, false, false),
    b("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", &["crd", "crds"], false, true, true, false),
    b("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies", &[], false, true, true, false),
    b("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding", "validatingadmissionpolicybindings", &[], false, false, true, false),
];

/// The registry of served resource types, keyed by group and plural.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    types: BTreeMap<GroupResource, Arc<ResourceType>>,
}

impl Registry {
    /// The built-in resources.
    pub fn builtin() -> Self {
        let mut registry = Self::default();
        for t in BUILTINS {
            registry.insert(ResourceType {
                group: t.group.to_string(),
                versions: vec![Version {
                    name: t.version.to_string(),
                    schema: None,
                    columns: Vec::new(),
                }],
                kind: t.kind.to_string(),
                plural: t.plural.to_string(),
                singular: t.kind.to_lowercase(),
                short_names: t.short.iter().map(|s| s.to_string()).collect(),
                categories: if t.all {
                    vec!["all".to_string()]
                } else {
                    Vec::new()
                },
                namespaced: t.namespaced,
                status_subresource: t.status,
                generation: t.generation,
                unconditional_update: true,
                custom: false,
            });
        }
        registry
    }

    /// Adds or replaces a resource type.
    pub fn insert(&mut self, t: ResourceType) {
        self.types.insert(t.group_resource(), Arc::new(t));
    }

    /// Removes a resource type.
    pub fn remove(&mut self, gr: &GroupResource) -> Option<Arc<ResourceType>> {
        self.types.remove(gr)
    }

    /// The type served at group/version/plural.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .get(&GroupResource::new(group, plural))
            .filter(|t| t.version(version).is_some())
            .cloned()
    }

    /// The type stored under a group/resource, whatever its versions.
    pub fn get(&self, gr: &GroupResource) -> Option<Arc<ResourceType>> {
        self.types.get(gr).cloned()
    }

    /// Every type, in group/resource order.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.types.values()
    }

    /// Groups with their versions, core first, then in order of name.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in self.types.values() {
            let versions = groups.entry(t.group.clone()).or_default();
            for v in &t.versions {
                if !versions.contains(&v.name) {
                    versions.push(v.name.clone());
                }
            }
        }
        groups.into_iter().collect()
    }
}

/// Builds the resource type a CRD declares. Errors name the field that is wrong.
pub fn from_crd(crd: &Value) -> Result<ResourceType, String> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().ok_or("spec.group: Required value")?;
    let names = &spec["names"];
    let plural = names["plural"]
        .as_str()
        .ok_or("spec.names.plural: Required value")?;
    let kind = names["kind"]
        .as_str()
        .ok_or("spec.names.kind: Required value")?;
    let scope = spec["scope"].as_str().ok_or("spec.scope: Required value")?;
    let namespaced = match scope {
        "Namespaced" => true,
        "Cluster" => false,
        other => {
            return Err(format!(
                "spec.scope: Unsupported value: \"{other}\": supported values: \"Cluster\", \"Namespaced\""
            ));
        }
    };
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let all_versions = spec["versions"]
        .as_array()
        .ok_or("spec.versions: Required value")?;
    let mut versions = Vec::new();
    let mut status_subresource = false;
    for (i, v) in all_versions.iter().enumerate() {
        let name = v["name"]
            .as_str()
            .ok_or_else(|| format!("spec.versions[{i}].name: Required value"))?;
        if v["subresources"]["status"].is_object() {
            status_subresource = true;
        }
        let schema = match v["schema"].get("openAPIV3Schema") {
            Some(s) => Some(Arc::new(Schema::compile(s).map_err(|e| {
                format!("spec.versions[{i}].schema.openAPIV3Schema: {e}")
            })?)),
            None => None,
        };
        let columns = v["additionalPrinterColumns"]
            .as_array()
            .map(|cols| {
                cols.iter()
                    .map(|c| PrinterColumn {
                        name: c["name"].as_str().unwrap_or_default().to_string(),
                        type_: c["type"].as_str().unwrap_or("string").to_string(),
                        format: c["format"].as_str().unwrap_or_default().to_string(),
                        description: c["description"].as_str().unwrap_or_default().to_string(),
                        priority: c["priority"].as_i64().unwrap_or(0),
                        json_path: c["jsonPath"].as_str().unwrap_or_default().to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let served = v["served"].as_bool().unwrap_or(true);
        let storage = v["storage"].as_bool().unwrap_or(false);
        if served {
            let version = Version {
                name: name.to_string(),
                schema,
                columns,
            };
            // The storage version goes first: it is the one objects are kept in.
            if storage {
                versions.insert(0, version);
            } else {
                versions.push(version);
            }
        }
    }
    if versions.is_empty() {
        return Err(
            "spec.versions: Invalid value: must have exactly one version marked as storage version"
                .into(),
        );
    }
    Ok(ResourceType {
        group: group.to_string(),
        versions,
        kind: kind.to_string(),
        plural: plural.to_string(),
        singular: names["singular"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| kind.to_lowercase()),
        short_names: strings(&names["shortNames"]),
        categories: strings(&names["categories"]),
        namespaced,
        status_subresource,
        generation: true,
        unconditional_update: false,
        custom: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_a_crd_with_its_columns_and_status() {
        let t = from_crd(&crate::subnet_crd()).unwrap();
        assert_eq!(t.plural, "subnets");
        assert_eq!(t.short_names, vec!["sn"]);
        assert!(!t.namespaced);
        assert!(t.status_subresource);
        assert_eq!(t.storage_version(), "v1");
        let names: Vec<_> = t.versions[0]
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["CIDR", "Allocated", "Free", "Ready", "Age"]);
    }

    #[test]
    fn a_bad_scope_is_named() {
        let mut crd = crate::subnet_crd();
        crd["spec"]["scope"] = "Galaxy".into();
        assert!(
            from_crd(&crd)
                .unwrap_err()
                .starts_with("spec.scope: Unsupported value")
        );
    }

    #[test]
    fn builtins_include_namespaces_and_leases() {
        let r = Registry::builtin();
        assert!(r.lookup("", "v1", "namespaces").is_some());
        assert!(
            r.lookup("coordination.k8s.io", "v1", "leases")
                .unwrap()
                .namespaced
        );
        assert!(r.lookup("apps", "v2", "deployments").is_none());
    }
}
