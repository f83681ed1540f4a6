//! The agent's HTTP API on the unix socket.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tower_http::timeout::TimeoutLayer;

use crate::agent::allocator::Allocator;
use crate::agent::error::AgentError;
use crate::metrics::{AgentMetrics, ReasonLabels, RequestLabels};
use ipledger_cni::ErrorCode;
use ipledger_cni::protocol::{self, ErrorBody, StatusQuery};

/// What every handler shares.
#[derive(Clone)]
pub struct Shared {
    /// The allocation logic.
    pub allocator: Arc<Allocator>,
    /// The agent's metrics.
    pub metrics: AgentMetrics,
}

/// The socket API: `/v1/add`, `/v1/del`, `/v1/check`, `/v1/gc`, `/v1/status`.
pub fn socket_routes(shared: Shared, request_timeout: Duration) -> Router {
    Router::new()
        .route(protocol::ADD_PATH, post(add))
        .route(protocol::DEL_PATH, post(del))
        .route(protocol::CHECK_PATH, post(check))
        .route(protocol::GC_PATH, post(gc))
        .route(protocol::STATUS_PATH, get(status))
        .layer(DefaultBodyLimit::max(protocol::MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            request_timeout,
        ))
        .with_state(shared)
}

/// An answer on the socket: the verb's response, or the CNI error body.
enum Answer<T> {
    Ok(T),
    Err(StatusCode, ErrorBody),
}

impl<T: Serialize> IntoResponse for Answer<T> {
    fn into_response(self) -> Response {
        match self {
            Answer::Ok(body) => Json(body).into_response(),
            Answer::Err(status, body) => (status, Json(body)).into_response(),
        }
    }
}

/// Runs one verb, counting and timing it, and turns errors into CNI error bodies.
async fn serve<T: Serialize>(
    shared: &Shared,
    verb: &str,
    work: impl Future<Output = Result<T, AgentError>>,
) -> Answer<T> {
    let started = Instant::now();
    let result = work.await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.reason(),
    };
    let labels = RequestLabels {
        verb: verb.to_string(),
        result: outcome.to_string(),
    };
    shared.metrics.requests.get_or_create(&labels).inc();
    shared
        .metrics
        .request_seconds
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(body) => Answer::Ok(body),
        Err(error) => {
            shared
                .metrics
                .failures
                .get_or_create(&ReasonLabels {
                    reason: outcome.to_string(),
                })
                .inc();
            tracing::info!(verb, code = error.code(), %error, "request failed");
            Answer::Err(error.http_status(), error.body())
        }
    }
}

/// Refuses a body that is not the verb's request type, naming what is wrong.
fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AgentError> {
    serde_json::from_slice(body).map_err(|e| {
        AgentError::BadRequest(ErrorBody {
            code: ErrorCode::DecodeFailure.as_u32(),
            msg: format!("request body does not decode: {e}"),
            details: None,
        })
    })
}

async fn add(State(shared): State<Shared>, body: axum::body::Bytes) -> impl IntoResponse {
    let allocator = shared.allocator.clone();
    serve(&shared, "add", async move {
        let request: protocol::AddRequest = decode(&body)?;
        let pod = request
            .pod
            .as_ref()
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .unwrap_or_default();
        let attachment = request.attachment.clone();
        let response = allocator.add(request).await?;
        let ips: Vec<String> = response
            .ips
            .iter()
            .map(|ip| ip.address.to_string())
            .collect();
        tracing::info!(
            network = attachment.network,
            container_id = attachment.container_id,
            if_name = attachment.if_name,
            pod,
            ?ips,
            "allocated"
        );
        Ok(response)
    })
    .await
}

async fn del(State(shared): State<Shared>, body: axum::body::Bytes) -> impl IntoResponse {
    let allocator = shared.allocator.clone();
    serve(&shared, "del", async move {
        let request: protocol::DelRequest = decode(&body)?;
        let attachment = request.attachment.clone();
        let response = allocator.del(request).await?;
        if !response.released.is_empty() {
            tracing::info!(
                network = attachment.network,
                container_id = attachment.container_id,
                if_name = attachment.if_name,
                released = ?response.released,
                "released"
            );
        }
        Ok(response)
    })
    .await
}

async fn check(State(shared): State<Shared>, body: axum::body::Bytes) -> impl IntoResponse {
    let allocator = shared.allocator.clone();
    serve(&shared, "check", async move {
        allocator.check(decode(&body)?).await
    })
    .await
}

async fn gc(State(shared): State<Shared>, body: axum::body::Bytes) -> impl IntoResponse {
    let allocator = shared.allocator.clone();
    serve(&shared, "gc", async move {
        let response = allocator.gc(decode(&body)?).await?;
        tracing::info!(released = response.released.len(), "garbage collected");
        Ok(response)
    })
    .await
}

async fn status(
    State(shared): State<Shared>,
    Query(query): Query<StatusQuery>,
) -> impl IntoResponse {
    let allocator = shared.allocator.clone();
    serve(
        &shared,
        "status",
        async move { allocator.status(query).await },
    )
    .await
}
