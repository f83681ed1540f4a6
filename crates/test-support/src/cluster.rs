//! A cluster to talk to: the emulator, or the real cluster [`KUBECONFIG`] names. Tests
//! that use it give every object a unique name or their own namespace and clean up, so
//! they can share a real cluster with earlier runs.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use kube_emulator::{Config, Emulator};

/// The variable naming a real cluster's kubeconfig; unset, the tests start an emulator.
pub const KUBECONFIG: &str = "IPLEDGER_TEST_KUBECONFIG";

/// What the tests run against.
pub struct Cluster {
    /// A client for it.
    pub client: Client,
    /// The emulator, when the tests run against it (None against a real cluster).
    pub emulator: Option<Emulator>,
}

impl Cluster {
    /// Whether this is the emulator (fault injection is only available there).
    pub fn is_emulator(&self) -> bool {
        self.emulator.is_some()
    }
}

/// Starts an emulator, or connects to the cluster [`KUBECONFIG`] names.
pub async fn cluster() -> Cluster {
    cluster_with(Config::default()).await
}

/// Like [`cluster`], with an emulator configuration.
pub async fn cluster_with(config: Config) -> Cluster {
    if let Ok(path) = std::env::var(KUBECONFIG) {
        let kubeconfig = kube::config::Kubeconfig::read_from(&path)
            .expect("IPLEDGER_TEST_KUBECONFIG names a readable kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("a usable kubeconfig");
        let client = Client::try_from(config).expect("a client for the real cluster");
        return Cluster {
            client,
            emulator: None,
        };
    }
    let emulator = Emulator::start(config).await.expect("the emulator starts");
    Cluster {
        client: emulator.client(),
        emulator: Some(emulator),
    }
}

/// A client that does not retry 429/503/504 itself (kube-rs does by default, with up to
/// 15 retries), for tests that look at those answers.
pub async fn client_without_retries(cluster: &Cluster) -> Client {
    let mut config = match &cluster.emulator {
        Some(emulator) => {
            let mut config = kube::Config::new(emulator.url().parse().unwrap());
            config.auth_info.token = Some(kube_emulator::ADMIN_TOKEN.to_string().into());
            config
        }
        None => {
            let path = std::env::var(KUBECONFIG).unwrap();
            let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .unwrap()
        }
    };
    config.default_retry = false;
    Client::try_from(config).unwrap()
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..10])
}

/// Creates a namespace of its own for one test.
pub async fn namespace(client: &Client) -> String {
    let name = unique("t");
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace created");
    // A real cluster refuses pods until its controller has made the default ServiceAccount.
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), &name);
    wait_for(|| {
        let accounts = accounts.clone();
        async move { accounts.get_opt("default").await.ok().flatten() }
    })
    .await
    .expect("the namespace's default ServiceAccount appears");
    name
}

/// Deletes a test's namespace (and with it everything in it).
pub async fn delete_namespace(client: &Client, name: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

/// Installs `crds` (each kept if already there) and waits until they are established.
pub async fn install_crds(
    client: &Client,
    crds: impl IntoIterator<Item = CustomResourceDefinition>,
) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        match api.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("installing CRD {:?}: {e}", crd.metadata.name),
        }
        let name = crd.metadata.name.clone().unwrap();
        wait_for(|| {
            let api = api.clone();
            let name = name.clone();
            async move {
                let crd = api.get(&name).await.ok()?;
                let conditions = crd.status?.conditions?;
                conditions
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            }
        })
        .await
        .expect("CRD established");
    }
}

/// Polls `check` until it yields a value, for up to 30 seconds (a real cluster's
/// controllers act asynchronously).
pub async fn wait_for<T, F, Fut>(mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..300 {
        if let Some(v) = check().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The API error inside a kube error, or a panic naming what came instead.
pub fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A client for the cluster that authenticates with `token` alone (a real cluster's
/// kubeconfig may carry a client certificate too: it is dropped).
pub async fn client_with_token(c: &Cluster, token: &str) -> Client {
    let kubeconfig = match &c.emulator {
        Some(e) => e.kubeconfig_with_token(token),
        None => kube::config::Kubeconfig::read_from(std::env::var(KUBECONFIG).unwrap()).unwrap(),
    };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.to_string().into()),
        ..Default::default()
    };
    Client::try_from(config).unwrap()
}

/// The token the kubelet would project into pod `pod` of `namespace`, running as
/// ServiceAccount `account` on `node`: the pod is created bound to the node, and the
/// TokenRequest names it, so the token's user carries the pod and the node in its extra
/// info. Returns the token and the pod.
pub async fn pod_bound_token(
    client: &Client,
    namespace: &str,
    account: &str,
    pod: &str,
    node: &str,
) -> (String, k8s_openapi::api::core::v1::Pod) {
    use k8s_openapi::api::authentication::v1::{
        BoundObjectReference, TokenRequest, TokenRequestSpec,
    };
    use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
    let spec = serde_json::json!({"metadata": {"name": pod}, "spec": {
        "serviceAccountName": account, "nodeName": node,
        "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}});
    let pod: Pod = Api::namespaced(client.clone(), namespace)
        .create(
            &PostParams::default(),
            &serde_json::from_value(spec).unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("creating pod {namespace}/{pod}: {e}"));
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("a token for {namespace}/{account}: {e}"))
        .status
        .expect("a TokenRequest answer has a status")
        .token;
    (token, pod)
}

/// A Node of a unique name, made up for the test: only harmless on the emulator, so
/// against a real cluster the test skips (`None`).
pub async fn fake_node(c: &Cluster) -> Option<String> {
    if c.emulator.is_none() {
        crate::skip(
            "a fake Node needs the emulator (IPLEDGER_TEST_KUBECONFIG names a real cluster)",
        );
        return None;
    }
    let name = unique("node");
    let node: k8s_openapi::api::core::v1::Node =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    Api::all(c.client.clone())
        .create(&PostParams::default(), &node)
        .await
        .expect("a fake Node");
    Some(name)
}
