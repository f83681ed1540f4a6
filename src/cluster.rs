//! Reaching the API server: the client and the watch helpers every part uses.

use futures::{Stream, StreamExt};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};

/// Builds the Kubernetes client from `--kubeconfig`, else from the environment
/// (in-cluster service account, then `~/.kube/config`).
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig =
                kube::config::Kubeconfig::read_from(path).map_err(|e| e.to_string())?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|e| e.to_string())?
        }
        None => kube::Config::infer().await.map_err(|e| e.to_string())?,
    };
    Client::try_from(config).map_err(|e| e.to_string())
}

/// Nothing ipledger does reads managedFields; on a real server they are most of an
/// object's metadata.
pub fn drop_managed_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// Runs a watch stream for ever, with kube-runtime's default backoff after errors,
/// handing every event to `seen`.
pub async fn drain<S, K>(stream: S, what: &'static str, mut seen: impl FnMut(watcher::Event<K>))
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream.default_backoff());
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => seen(event),
            Err(error) => {
                tracing::warn!(resource = what, %error, "watch failed; retrying with backoff")
            }
        }
    }
}
