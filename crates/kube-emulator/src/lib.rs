//! A Kubernetes API emulator: a real HTTP server on loopback that speaks the REST protocol
//! (discovery, CRUD with resourceVersion CAS, list with selectors, watch with bookmarks and
//! 410 Gone, CRDs with schema validation and CEL, finalizers, garbage collection, Tables),
//! so real clients (kube-rs, kubectl, helm) run against it unchanged. See `docs/emulator.md`.

pub mod admission;
pub mod apply;
pub mod audit;
pub mod authn;
pub mod discovery;
pub mod error;
pub mod events;
pub mod faults;
pub mod patch;
pub mod protobuf;
pub mod rbac;
pub mod resources;
pub mod schema;
pub mod selectors;
pub mod server;
pub mod store;
pub mod table;
pub mod user;
pub mod validation;

/// The CRD the unit tests register (`tests/fixtures/subnets.yaml`), as JSON.
#[cfg(test)]
pub(crate) fn subnet_crd() -> serde_json::Value {
    serde_yaml_ng::from_str(include_str!("../tests/fixtures/subnets.yaml")).expect("fixture CRD")
}

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use kube::config::{
    AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use audit::AuditEvent;
pub use faults::{Faults, LostResponse};

/// The bearer token written into kubeconfigs (user `admin`, a member of `system:masters`).
/// Other tokens are refused unless configured ([`Config::tokens`]), issued for a
/// ServiceAccount ([`Emulator::service_account_token`]), or
/// [`Config::accept_unknown_tokens`].
pub const ADMIN_TOKEN: &str = "ipledger-emulator-admin";

/// Errors starting or using the emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The kubeconfig could not be written.
    #[error("cannot write kubeconfig {path}: {source}")]
    WriteKubeconfig {
        /// Where.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The kubeconfig could not be serialized.
    #[error("cannot serialize kubeconfig: {0}")]
    Serialize(#[from] serde_yaml_ng::Error),
    /// A kube client could not be built from the emulator's config.
    #[error("cannot build a client: {0}")]
    Client(#[from] kube::Error),
    /// The API refused a request (a token for a ServiceAccount that does not exist).
    #[error("{0}")]
    Api(#[from] error::ApiError),
}

/// How to run the emulator.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// How many changes are kept for watches; older resourceVersions get 410 Gone.
    pub history_window: usize,
    /// How often watches that allow bookmarks receive one.
    pub bookmark_interval: Duration,
    /// Largest request body accepted, in bytes (the real server's limit is 3 MiB).
    pub max_body: usize,
    /// Bearer tokens and the users they authenticate; [`ADMIN_TOKEN`] is `admin`. These
    /// users stand for members of `system:masters`: RBAC allows them everything (and
    /// ServiceAccount tokens are authorized by RBAC).
    pub tokens: std::collections::BTreeMap<String, String>,
    /// Accept tokens not in `tokens` (as `system:anonymous`, trusted). Off by default, as
    /// on a real cluster: an unknown token is 401 Unauthorized.
    pub accept_unknown_tokens: bool,
    /// Authorize requests without credentials by RBAC, as a real cluster does
    /// `system:anonymous`: 403 Forbidden but for `/version`, the health checks and what
    /// bindings grant `system:anonymous` or `system:unauthenticated`. Off by
    /// default: the emulator serves plain HTTP, over which kubectl and helm send no
    /// bearer token.
    pub forbid_anonymous: bool,
    /// How long each write (create, update, patch, delete, `status` included) waits before
    /// the store applies it, as a real server's waits for etcd's durable write (~3 ms).
    /// Concurrent writes wait side by side. Zero (the default) turns it off.
    pub write_latency: Duration,
    /// How long each get and list (and dry-run write) waits before it is served, as a
    /// real server's read costs (~0.5 ms). Watches, discovery and health checks never
    /// wait. Zero (the default) turns it off.
    pub read_latency: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            // Each kept change holds one version of an object (a full IPBlock is ~150 KB),
            // so the window bounds memory; the real watch cache keeps ~100 per resource.
            history_window: 1_000,
            bookmark_interval: Duration::from_secs(1),
            max_body: 3 * 1024 * 1024,
            tokens: [(ADMIN_TOKEN.to_string(), "admin".to_string())].into(),
            accept_unknown_tokens: false,
            forbid_anonymous: false,
            write_latency: Duration::ZERO,
            read_latency: Duration::ZERO,
        }
    }
}

/// A running emulator. Dropping it stops the server.
pub struct Emulator {
    addr: SocketAddr,
    faults: Faults,
    audit: audit::AuditLog,
    /// Bearer tokens and their users, configured and issued; shared with the server.
    tokens: authn::Tokens,
    store: Arc<store::Store>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    /// The garbage collector (Orphan and Foreground deletion).
    gc: JoinHandle<()>,
}

impl Emulator {
    /// Binds and starts serving in the background.
    pub async fn start(config: Config) -> Result<Self, EmulatorError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| EmulatorError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind {
                addr: config.listen,
                source,
            })?;
        let store = store::Store::new(config.history_window);
        let faults = Faults::new(store.clone());
        let gc = tokio::spawn(store.clone().run_garbage_collector(Duration::from_secs(1)));
        let audit = audit::AuditLog::default();
        let tokens = authn::Tokens::new(&config.tokens);
        let server = Arc::new(server::Server {
            store: store.clone(),
            faults: faults.clone(),
            address: addr.to_string(),
            bookmark_interval: config.bookmark_interval,
            max_body: config.max_body,
            tokens: tokens.clone(),
            accept_unknown_tokens: config.accept_unknown_tokens,
            forbid_anonymous: config.forbid_anonymous,
            audit: audit.clone(),
            write_latency: config.write_latency,
            read_latency: config.read_latency,
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve(listener, server, stopped));
        tracing::info!(%addr, "kubernetes API emulator listening");
        Ok(Self {
            addr,
            faults,
            audit,
            tokens,
            store,
            stop,
            task: Some(task),
            gc,
        })
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The handle for fault injection.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The resource requests answered so far, oldest first: who asked to get, list, watch,
    /// create, update, patch or delete what (status included), and the status each got; a
    /// watch once its response head was ready. Discovery, `/version`, health checks and
    /// reviews are not recorded. [`AuditEvent::changed_something`] picks out the writes
    /// that landed. Only the last [`audit::CAPACITY`] (100,000) are kept. See
    /// [`AuditEvent`].
    pub fn audit(&self) -> Vec<AuditEvent> {
        self.audit.snapshot()
    }

    /// A kubeconfig (cluster, user with a bearer token, current context) for this server,
    /// as user `admin`.
    pub fn kubeconfig(&self) -> Kubeconfig {
        self.kubeconfig_with_token(ADMIN_TOKEN)
    }

    /// Issues a token for the ServiceAccount `namespace/name`, as `POST
    /// .../serviceaccounts/NAME/token` does (valid one hour): requests sending it are
    /// `system:serviceaccount:NAMESPACE:NAME` and RBAC decides what they may do. Err
    /// ([`EmulatorError::Api`], 404 NotFound) when the ServiceAccount does not exist.
    pub fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<String, EmulatorError> {
        let answer = authn::issue(
            &self.store,
            &self.tokens,
            namespace,
            name,
            &serde_json::json!({}),
            chrono::Utc::now(),
        )?;
        Ok(answer["status"]["token"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// A kubeconfig like [`Emulator::kubeconfig`] whose user sends `token`: one of
    /// [`Config::tokens`] to act as its user, or one of
    /// [`Emulator::service_account_token`] to act as that ServiceAccount, so that two
    /// processes of a test are told apart (in the [`Emulator::audit`] log, for one).
    pub fn kubeconfig_with_token(&self, token: &str) -> Kubeconfig {
        // The kubeconfig's name for the user; the server knows it by the token alone.
        let user = match self.tokens.get(token) {
            Some(authn::Credential::Configured(name)) => name,
            Some(authn::Credential::ServiceAccount(sa)) => sa.user().username,
            None => "emulator-user".into(),
        };
        Kubeconfig {
            clusters: vec![NamedCluster {
                name: "ipledger-emulator".into(),
                cluster: Some(Cluster {
                    server: Some(self.url()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            auth_infos: vec![NamedAuthInfo {
                name: user.clone(),
                auth_info: Some(AuthInfo {
                    token: Some(token.to_string().into()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            contexts: vec![NamedContext {
                name: "ipledger-emulator".into(),
                context: Some(Context {
                    cluster: "ipledger-emulator".into(),
                    user: Some(user),
                    namespace: Some("default".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            current_context: Some("ipledger-emulator".into()),
            api_version: Some("v1".into()),
            kind: Some("Config".into()),
            ..Default::default()
        }
    }

    /// Writes the kubeconfig to `path` (mode 0600: it holds a token).
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), EmulatorError> {
        self.write_kubeconfig_with_token(path, ADMIN_TOKEN)
    }

    /// Writes [`Emulator::kubeconfig_with_token`] to `path` (mode 0600).
    pub fn write_kubeconfig_with_token(
        &self,
        path: &Path,
        token: &str,
    ) -> Result<(), EmulatorError> {
        let yaml = serde_yaml_ng::to_string(&self.kubeconfig_with_token(token))?;
        let io = |source| EmulatorError::WriteKubeconfig {
            path: path.display().to_string(),
            source,
        };
        // Written aside and renamed, so a reader never sees half a kubeconfig.
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = std::path::PathBuf::from(partial);
        std::fs::write(&partial, yaml).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o600))
                .map_err(io)?;
        }
        std::fs::rename(&partial, path).map_err(io)
    }

    /// A kube client talking to this emulator.
    pub fn try_client(&self) -> Result<kube::Client, EmulatorError> {
        let mut config = kube::Config::new(
            self.url()
                .parse()
                .expect("a socket address makes a valid URL"),
        );
        config.default_namespace = "default".into();
        config.auth_info.token = Some(ADMIN_TOKEN.to_string().into());
        Ok(kube::Client::try_from(config)?)
    }

    /// A kube client talking to this emulator (must be called inside a tokio runtime).
    pub fn client(&self) -> kube::Client {
        self.try_client()
            .expect("a plain-HTTP loopback client needs no TLS or credential setup")
    }

    /// Stops accepting connections and closes open ones.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.gc.abort();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.gc.abort();
    }
}

async fn serve(
    listener: TcpListener,
    server: Arc<server::Server>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let server = server.clone();
                let mut stop = stopped.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| server.clone().handle(req));
                    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = stop.changed() => {}
                    }
                });
            }
        }
    }
}

/// Runs the emulator for the `ipledger emulator` command: listens as `config` says, writes
/// a kubeconfig to `kubeconfig`, serves until SIGINT or SIGTERM.
pub async fn run(config: Config, kubeconfig: &Path) -> anyhow::Result<()> {
    let latency = (!config.write_latency.is_zero() || !config.read_latency.is_zero()).then(|| {
        format!(
            "; writes wait {:?}, reads {:?}",
            config.write_latency, config.read_latency
        )
    });
    let emulator = Emulator::start(config).await?;
    emulator.write_kubeconfig(kubeconfig)?;
    eprintln!(
        "ipledger emulator: serving the Kubernetes API on {} (kubeconfig: {}); CEL validation rules are enforced{}",
        emulator.url(),
        kubeconfig.display(),
        latency.unwrap_or_default()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    emulator.shutdown().await;
    Ok(())
}
