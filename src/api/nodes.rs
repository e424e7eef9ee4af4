//! The cluster's nodes: `GET /v1/nodes` (API key) lists the live ones and `GET /v1/nodes/pick` (public, for
//! clients, rate-limited per client address) names the least-loaded one for a new client. Without Redis the
//! node is alone and answers for itself.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::ApiQuery;
use super::{ApiError, ApiState};
use crate::cluster::registry::{least_loaded, NodeEntry};
use crate::engineio::address_limits::{AddressLimits, AddressTable};

/// The live nodes, this one with its current connection count.
pub(super) async fn live_nodes(state: &ApiState) -> Result<Vec<NodeEntry>, ApiError> {
    match &state.registry {
        Some(registry) => registry.live_nodes().await.map_err(|error| {
            tracing::warn!(%error, "cannot read the node registry");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "registry_unavailable",
                format!("cannot read the node registry: {error}"),
            )
        }),
        None => Ok(vec![state.node.entry(state.engine.session_count())]),
    }
}

/// A node as the API shows it: `{id, url, connections, max_connections, started_at, last_beat, draining,
/// events_per_sec, deliveries_per_sec, cpu_percent, rss_bytes}`.
pub(super) fn node_json(n: &NodeEntry) -> Value {
    json!({
        "id": n.id,
        "url": n.url,
        "connections": n.connections,
        "max_connections": n.max_connections,
        "started_at": n.started_at,
        "last_beat": n.last_beat,
        "draining": n.draining,
        "events_per_sec": n.load.events_per_sec,
        "deliveries_per_sec": n.load.deliveries_per_sec,
        "cpu_percent": n.load.cpu_percent,
        "rss_bytes": n.load.rss_bytes,
    })
}

/// `GET /v1/nodes`: `{nodes:[…], self}`, each node as [`node_json`] shows it (the load of a node without
/// Redis reads zero: it has no heartbeat to measure it; the dashboard measures its own).
pub(super) async fn list(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let nodes: Vec<Value> = live_nodes(&state).await?.iter().map(node_json).collect();
    Ok(Json(
        json!({ "nodes": nodes, "self": state.node.id.as_str() }),
    ))
}

/// What `GET /v1/nodes/pick` needs: the API's state and its own per-address rate limit.
#[derive(Clone)]
pub(super) struct PickState {
    api: ApiState,
    limit: Arc<AddressTable>,
}

impl PickState {
    /// Picks answered at the per-address handshake rate (`limits.handshakes_per_sec_per_ip` after
    /// `limits.handshake_burst_per_ip`), counted apart from the handshakes themselves: a client picks, then
    /// connects, and neither uses up the other's budget.
    pub(super) fn new(api: ApiState) -> PickState {
        let handshakes = api.engine.config().address_limits;
        let limits = AddressLimits {
            max_sessions: 0,
            ..handshakes
        };
        let limit = AddressTable::new(limits, api.engine.config().max_sessions);
        PickState { api, limit }
    }
}

/// `?exclude=id1,id2`: nodes the client could not reach (the registry lists a dead node until its entry
/// expires).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PickQuery {
    exclude: Option<String>,
}

/// `GET /v1/nodes/pick[?exclude=ids]`: `{id,url,connections}` of the least-loaded node with room, other than the
/// excluded ones; 503 when there is none; 429 past the per-address rate.
pub(super) async fn pick(
    State(state): State<PickState>,
    ApiQuery(query): ApiQuery<PickQuery>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let peer = request.extensions().get::<SocketAddr>().copied();
    if let Some(peer) = peer {
        let config = state.api.engine.config();
        let client = config.trusted_proxies.client(peer.ip(), request.headers());
        if state.limit.admit(client).is_err() {
            metrics::counter!("tidings_node_picks_refused_total").increment(1);
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many node picks from this address; retry in a second",
            ));
        }
    }
    let excluded: Vec<&str> = query
        .exclude
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .collect();
    let nodes: Vec<NodeEntry> = live_nodes(&state.api)
        .await?
        .into_iter()
        .filter(|n| !excluded.contains(&n.id.as_str()))
        .collect();
    let node = least_loaded(&nodes).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_node_available",
            "no live node with room for another connection (every other one is excluded or at its max_connections)",
        )
    })?;
    metrics::counter!("tidings_node_picks_total").increment(1);
    Ok(Json(
        json!({ "id": node.id, "url": node.url, "connections": node.connections }),
    ))
}
