//! The HTTP API on the client port: publish, broadcast, room and node listings, health and metrics.

mod error;
mod nodes;
mod publish;
mod rooms;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;

pub use error::ApiError;

use crate::app::Tidings;
use crate::cluster::registry::{NodeInfo, Registry};
use crate::engineio::Engine;

/// What the API handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The application (namespaces, hub).
    pub app: Arc<Tidings>,
    /// The Socket.IO endpoint, for connection counts.
    pub engine: Arc<Engine>,
    /// Accepted API keys.
    pub keys: Arc<Vec<String>>,
    /// Largest accepted request body.
    pub max_body: usize,
    /// Prometheus renderer.
    pub metrics: Option<PrometheusHandle>,
    /// The cluster's node registry; `None` when the node runs alone.
    pub registry: Option<Arc<Registry>>,
    /// This node, as `/v1/nodes` shows it.
    pub node: NodeInfo,
}

/// The API routes; `/healthz`, `/metrics` and `/stats` need no key, `/v1/*` needs `Authorization: Bearer <key>`.
pub fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route("/v1/publish", post(publish::publish))
        .route("/v1/publish/batch", post(publish::publish_batch))
        .route("/v1/broadcast", post(publish::broadcast))
        .route("/v1/rooms", get(rooms::list))
        .route("/v1/rooms/{room}", get(rooms::show))
        .route("/v1/rooms/{room}/history", get(rooms::history))
        .route("/v1/nodes", get(nodes::list))
        .route("/v1/nodes/pick", get(nodes::pick))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    Router::new()
        .merge(v1)
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/stats", get(stats))
        .with_state(state)
}

async fn require_api_key(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(key)
            if state
                .keys
                .iter()
                .any(|k| constant_time_eq(k.as_bytes(), key.as_bytes())) =>
        {
            next.run(request).await
        }
        _ => ApiError::unauthorized().into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn healthz(State(state): State<ApiState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "ok": true, "connections": state.engine.session_count() }))
}

async fn stats(State(state): State<ApiState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "pid": std::process::id(), "sockets": state.engine.session_count() }))
}

async fn metrics(State(state): State<ApiState>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            handle.render(),
        )
            .into_response(),
        None => ApiError::not_found("metrics_disabled", "metrics are not enabled").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn key_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
