//! Room listings and history: `GET /v1/rooms`, `GET /v1/rooms/{room}` and `GET /v1/rooms/{room}/history`.

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;

use super::{ApiError, ApiState};
use crate::auth::validate_room_name;
use crate::hub::RoomKey;

/// `?namespace=/chat` (default `/`).
#[derive(Deserialize)]
pub(super) struct NamespaceQuery {
    namespace: Option<String>,
}

pub(super) fn namespace_of(state: &ApiState, requested: Option<&str>) -> Result<String, ApiError> {
    let nsp = requested.unwrap_or("/");
    if state.app.namespace(nsp).is_none() {
        return Err(ApiError::not_found(
            "unknown_namespace",
            format!("namespace '{nsp}' is not configured"),
        ));
    }
    Ok(nsp.to_owned())
}

pub(super) async fn list(
    State(state): State<ApiState>,
    Query(query): Query<NamespaceQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let nsp = namespace_of(&state, query.namespace.as_deref())?;
    let rooms: Vec<_> = state
        .app
        .hub()
        .list(&nsp)
        .into_iter()
        .map(|(name, members)| serde_json::json!({ "name": name, "members": members }))
        .collect();
    Ok(Json(
        serde_json::json!({ "namespace": nsp, "rooms": rooms }),
    ))
}

pub(super) async fn show(
    State(state): State<ApiState>,
    Path(room): Path<String>,
    Query(query): Query<NamespaceQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let nsp = namespace_of(&state, query.namespace.as_deref())?;
    validate_room_name(&room).map_err(|e| ApiError::bad_request("invalid_room", e.to_string()))?;
    let members = state.app.hub().member_count(&RoomKey::new(&nsp, &room));
    Ok(Json(
        serde_json::json!({ "namespace": nsp, "name": room, "members": members }),
    ))
}

/// `?since=&limit=&epoch=&namespace=` of a history read.
#[derive(Deserialize)]
pub(super) struct HistoryQuery {
    namespace: Option<String>,
    since: Option<u64>,
    limit: Option<usize>,
    epoch: Option<u64>,
}

pub(super) async fn history(
    State(state): State<ApiState>,
    Path(room): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let nsp = namespace_of(&state, query.namespace.as_deref())?;
    validate_room_name(&room).map_err(|e| ApiError::bad_request("invalid_room", e.to_string()))?;
    let key = RoomKey::new(&nsp, &room);
    let budget = state.app.history_reply_bytes();
    let limit = crate::history::ReadLimit {
        events: query.limit.unwrap_or(100),
        bytes: budget,
    };
    let page = state
        .app
        .backend()
        .log
        .page(key, query.epoch, query.since.unwrap_or(0), limit)
        .await
        .map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("history unavailable: {e}"),
            )
        })?;
    page.count_truncated("api");
    let mut body = serde_json::to_value(page).unwrap_or_default();
    body["namespace"] = nsp.into();
    body["room"] = room.into();
    Ok(Json(body))
}
