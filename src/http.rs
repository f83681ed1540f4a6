//! Serving HTTP: the agent's socket API, and every part's metrics and health endpoints.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::registry::Registry;

/// Serves `routes` on `listener` until `shutdown` completes, then lets the requests in
/// flight finish. A connection that sends no complete request head within
/// `header_timeout` (nothing at all, half a header, or nothing more after an answer on a
/// kept-alive connection) is closed.
pub async fn serve_until<L>(
    listener: L,
    routes: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    L: axum::serve::Listener,
{
    // By hand rather than axum::serve, which sets hyper no timer, so hyper's header read
    // timeout (also armed while a kept-alive connection waits for its next request)
    // never fires: a client that connects and sends nothing would hold its connection,
    // and a file descriptor of the agent, for ever.
    let mut listener = listener;
    let (stop, stopping) = tokio::sync::watch::channel(());
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (io, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(routes.clone());
        let mut stopping = stopping.clone();
        connections.spawn(async move {
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let connection = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                _ = stopping.changed() => {
                    // Finishes the request in flight, if any, then closes.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = served {
                tracing::debug!(%error, "connection closed");
            }
        });
        // Reaps finished connections so the set follows the open ones only.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stop.send(());
    while connections.join_next().await.is_some() {}
}

/// `/metrics` (OpenMetrics text) and `/healthz` for the kubelet's probes.
pub fn metrics_routes(registry: Arc<Registry>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    (
                        [(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        crate::metrics::encode(&registry),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;

    /// Reads until the server closes the connection; what it sent, or a panic after `bound`.
    async fn read_until_closed(stream: &mut UnixStream, bound: Duration, what: &str) -> String {
        let mut answer = Vec::new();
        tokio::time::timeout(bound, stream.read_to_end(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("{what}: the connection is still open after {bound:?}"))
            .expect("read");
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// A client that connects and sends nothing, half a header, or nothing after its
    /// answer on a kept-alive connection holds a connection (and a file descriptor) of the
    /// agent only for the header timeout.
    #[tokio::test]
    async fn silent_half_sent_and_idle_connections_are_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let routes = Router::new().route("/ok", get(|| async { "ok" }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_until(
            listener,
            routes,
            Duration::from_millis(300),
            async {
                let _ = stopped.await;
            },
        ));
        let bound = Duration::from_secs(5);

        let mut silent = UnixStream::connect(&path).await.unwrap();
        read_until_closed(&mut silent, bound, "silent").await;

        let mut half = UnixStream::connect(&path).await.unwrap();
        half.write_all(b"POST /v1/add HTTP/1.1\r\nHost: localhost\r\nContent-Le")
            .await
            .unwrap();
        read_until_closed(&mut half, bound, "half a header").await;

        let mut idle = UnixStream::connect(&path).await.unwrap();
        idle.write_all(b"GET /ok HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let answer = read_until_closed(&mut idle, bound, "kept alive").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with("ok"), "{answer}");

        // A request sent in time is still answered, and shutdown lets it finish.
        let mut prompt = UnixStream::connect(&path).await.unwrap();
        prompt
            .write_all(b"GET /ok HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = read_until_closed(&mut prompt, bound, "prompt").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        stop.send(()).unwrap();
        tokio::time::timeout(bound, server)
            .await
            .expect("the server stops")
            .unwrap();
    }
}
