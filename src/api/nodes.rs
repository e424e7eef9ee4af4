//! The cluster's nodes: `GET /v1/nodes` lists the live ones and `GET /v1/nodes/pick` names the least-loaded
//! one for a new client. Without Redis the node is alone and answers for itself.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, ApiState};
use crate::cluster::registry::{least_loaded, NodeEntry};

/// The live nodes, this one with its current connection count.
async fn live_nodes(state: &ApiState) -> Result<Vec<NodeEntry>, ApiError> {
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

/// `GET /v1/nodes`: `{nodes:[{id,url,connections,max_connections,started_at}], self}`.
pub(super) async fn list(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let nodes: Vec<Value> = live_nodes(&state)
        .await?
        .into_iter()
        .map(|n| {
            json!({
                "id": n.id,
                "url": n.url,
                "connections": n.connections,
                "max_connections": n.max_connections,
                "started_at": n.started_at,
            })
        })
        .collect();
    Ok(Json(
        json!({ "nodes": nodes, "self": state.node.id.as_str() }),
    ))
}

/// `GET /v1/nodes/pick`: `{id,url,connections}` of the least-loaded node with room; 503 when every node is full.
pub(super) async fn pick(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let nodes = live_nodes(&state).await?;
    let node = least_loaded(&nodes).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_node_available",
            "every live node is at its max_connections",
        )
    })?;
    Ok(Json(
        json!({ "id": node.id, "url": node.url, "connections": node.connections }),
    ))
}
