//! The HTTP API on the client port: publish, broadcast, room and node listings, health; and the operator
//! endpoints (`/metrics`, `/stats`), on the client port or on a separate admin listener.

mod dashboard;
mod error;
mod extract;
mod keys;
mod messages;
mod nodes;
mod publish;
mod request_id;
mod rooms;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;

pub use error::ApiError;
pub use keys::ApiKeys;

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
    pub keys: Arc<ApiKeys>,
    /// Admin keys: accepted besides the API keys for the operator's reads (`/metrics`, `/stats`, dashboard).
    pub admin_keys: Arc<ApiKeys>,
    /// How long a publish's `Idempotency-Key` is remembered, in seconds.
    pub idempotency_ttl_secs: u64,
    /// `/metrics` and `/stats` need an API key too.
    pub admin_requires_key: bool,
    /// Largest accepted request body.
    pub max_body: usize,
    /// Prometheus renderer.
    pub metrics: Option<PrometheusHandle>,
    /// The cluster's node registry; `None` when the node runs alone.
    pub registry: Option<Arc<Registry>>,
    /// This node, as `/v1/nodes` shows it.
    pub node: NodeInfo,
    /// This node's Kafka clients and their broker states (empty without Kafka).
    pub kafka: Arc<crate::kafka::context::Links>,
    /// Set once the node drains: `/readyz` answers `503`.
    pub draining: Arc<crate::drain::Draining>,
}

/// The routes of the client port: `/v1/*` (needs `Authorization: Bearer <key>`, except `/v1/nodes/pick`, which
/// clients call) and `/healthz`, plus `/metrics` and `/stats` when `with_admin` (no separate admin listener).
/// Unknown paths and methods are answered with the API's JSON errors.
pub fn router(state: ApiState, with_admin: bool) -> Router {
    let v1 = Router::new()
        .route("/v1/publish", post(publish::publish))
        .route("/v1/publish/batch", post(publish::publish_batch))
        .route("/v1/broadcast", post(publish::broadcast))
        .route("/v1/rooms", get(rooms::list))
        .route("/v1/rooms/{room}", get(rooms::show))
        .route("/v1/rooms/{room}/history", get(rooms::history))
        .route("/v1/rooms/{room}/presence", get(rooms::presence))
        .route(
            "/v1/rooms/{room}/presence/stats",
            get(rooms::presence_stats),
        )
        .route("/v1/nodes", get(nodes::list))
        .route("/v1/users/{user}", get(messages::presence))
        .route(
            "/v1/users/{user}/messages",
            post(messages::send).get(messages::inbox),
        )
        .route("/v1/messages/{id}", get(messages::show))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    let public = Router::new()
        .route("/v1/nodes/pick", get(nodes::pick))
        .with_state(nodes::PickState::new(state.clone()));
    let operator = state.clone();
    let dashboard = dashboard::routes(state.clone(), move |routes| {
        routes.route_layer(middleware::from_fn_with_state(
            operator,
            require_operator_key,
        ))
    });
    let mut router = Router::new()
        .merge(v1)
        .merge(public)
        .merge(dashboard)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if with_admin {
        router = router.merge(admin_routes(&state));
    }
    request_id::layer(
        router
            .fallback(extract::no_route)
            .method_not_allowed_fallback(extract::wrong_method),
    )
    .with_state(state)
}

/// The routes of the separate admin listener (`admin.listen`): `/metrics`, `/stats` and `/healthz`.
pub fn admin_router(state: ApiState) -> Router {
    admin_routes(&state)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(extract::no_route)
        .method_not_allowed_fallback(extract::wrong_method)
        .with_state(state)
}

/// `/metrics` and `/stats`, behind the API key when `admin.require_api_key` is set.
fn admin_routes(state: &ApiState) -> Router<ApiState> {
    let routes = Router::new()
        .route("/metrics", get(metrics))
        .route("/stats", get(stats));
    if state.admin_requires_key {
        routes.route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_operator_key,
        ))
    } else {
        routes
    }
}

async fn require_api_key(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let check = |key: &str| state.keys.accepts(key);
    match refusal(&request, check) {
        None => next.run(request).await,
        Some(refused) => refused,
    }
}

/// Lets a request through with an API key or an admin key (the operator's reads).
async fn require_operator_key(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    let check = |key: &str| state.keys.accepts(key) | state.admin_keys.accepts(key);
    match refusal(&request, check) {
        None => next.run(request).await,
        Some(refused) => refused,
    }
}

/// The `401` answer for a request whose `Authorization: Bearer` key `accepts` refuses; `None` when accepted.
fn refusal(request: &Request, accepts: impl Fn(&str) -> bool) -> Option<Response> {
    let refused = match request.headers().get(axum::http::header::AUTHORIZATION) {
        None => Some((
            "missing",
            "missing Authorization header: send `Authorization: Bearer <api key>`",
        )),
        Some(value) => match value.to_str().ok().and_then(bearer) {
            None => Some((
                "not_bearer",
                "the Authorization header must be `Bearer <api key>`",
            )),
            Some(key) if accepts(key) => None,
            Some(_) => Some(("wrong_key", "invalid API key")),
        },
    };
    let (reason, message) = refused?;
    let peer = request
        .extensions()
        .get::<std::net::SocketAddr>()
        .map(|a| a.ip());
    crate::auth::refusals::api_key_refused(reason, request.uri().path(), peer);
    Some(ApiError::unauthorized(message).into_response())
}

/// The key of an `Authorization: Bearer <key>` value (the scheme in any case, as RFC 9110 allows).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, key) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

async fn healthz(State(state): State<ApiState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "ok": true, "connections": state.engine.session_count() }))
}

/// Longest `/readyz` waits for Redis to answer.
const READY_PING: std::time::Duration = std::time::Duration::from_secs(1);

/// `GET /readyz`: 200 `{ready: true, draining, redis, kafka}` when the node can take new clients; 503 with
/// `ready: false` once it drains (SIGTERM) or when the cluster's Redis does not answer (no publish could be made
/// durable). Kafka clients are listed with their state (`starting`, `up`, `down`) but never make the node
/// unready: it serves everything else while Kafka is away and resumes from the committed offsets when it is back.
async fn readyz(State(state): State<ApiState>) -> Response {
    let draining = state.draining.is_draining();
    let redis = match &state.registry {
        None => "none",
        Some(registry) => {
            let mut pipe = redis::pipe();
            pipe.cmd("PING");
            match tokio::time::timeout(READY_PING, registry.run_query::<(String,)>(&pipe)).await {
                Ok(Ok(_)) => "up",
                _ => "down",
            }
        }
    };
    let ready = redis != "down" && !draining;
    let body = Json(serde_json::json!({
        "ready": ready,
        "draining": draining,
        "redis": redis,
        "kafka": state.kafka.to_json(),
    }));
    let status = if ready {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

async fn stats(State(state): State<ApiState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "pid": std::process::id(), "sockets": state.engine.session_count() }))
}

async fn metrics(State(state): State<ApiState>) -> Response {
    state.engine.sample_metrics(false);
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
