//! Room listings and history: `GET /v1/rooms`, `GET /v1/rooms/{room}` and `GET /v1/rooms/{room}/history`.

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;

use super::extract::{check_limit, ApiQuery};
use super::{ApiError, ApiState};
use crate::auth::validate_room_name;
use crate::cluster::room_counts;
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

/// `GET /v1/rooms`: `{namespace, scope, rooms:[{name, members}]}`. In cluster mode `members` counts every live
/// node (other nodes' counts at most a heartbeat old) and each room also has `local_members`, this node's.
pub(super) async fn list(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<NamespaceQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let nsp = namespace_of(&state, query.namespace.as_deref())?;
    let rooms: Vec<_> = members_by_room(&state, &nsp)
        .await?
        .into_iter()
        .map(|(name, members, local)| match local {
            None => serde_json::json!({ "name": name, "members": members }),
            Some(local) => {
                serde_json::json!({ "name": name, "members": members, "local_members": local })
            }
        })
        .collect();
    Ok(Json(
        serde_json::json!({ "namespace": nsp, "scope": scope(&state), "rooms": rooms }),
    ))
}

/// The rooms of `nsp` by name with their members: `(name, members, local)`, where `members` counts every live
/// node in a cluster (with this node's in `local`) and this node's alone otherwise (`local` is then `None`).
pub(super) async fn members_by_room(
    state: &ApiState,
    nsp: &str,
) -> Result<Vec<(String, usize, Option<usize>)>, ApiError> {
    let hub = state.app.hub();
    Ok(match &state.registry {
        None => hub
            .list(nsp)
            .into_iter()
            .map(|(name, members)| (name, members, None))
            .collect(),
        Some(registry) => room_counts::list(registry, hub, nsp)
            .await
            .map_err(counts_unavailable)?
            .into_iter()
            .map(|(name, count)| (name, count.members, Some(count.local)))
            .collect(),
    })
}

/// `GET /v1/rooms/{room}`: `{namespace, scope, name, members}` (+ `local_members` in cluster mode).
pub(super) async fn show(
    State(state): State<ApiState>,
    Path(room): Path<String>,
    ApiQuery(query): ApiQuery<NamespaceQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let nsp = namespace_of(&state, query.namespace.as_deref())?;
    validate_room_name(&room).map_err(|e| ApiError::bad_request("invalid_room", e.to_string()))?;
    let key = RoomKey::new(&nsp, &room);
    let hub = state.app.hub();
    let mut body = serde_json::json!({ "namespace": nsp, "scope": scope(&state), "name": room });
    match &state.registry {
        None => body["members"] = hub.member_count(&key).into(),
        Some(registry) => {
            let count = room_counts::show(registry, hub, &key)
                .await
                .map_err(counts_unavailable)?;
            body["members"] = count.members.into();
            body["local_members"] = count.local.into();
        }
    }
    Ok(Json(body))
}

/// What `members` counts: `cluster` (every live node) or `node` (an embedded node, alone).
fn scope(state: &ApiState) -> &'static str {
    if state.registry.is_some() {
        "cluster"
    } else {
        "node"
    }
}

fn counts_unavailable(error: crate::cluster::registry::RegistryError) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "registry_unavailable",
        format!("cannot read the cluster's room counts: {error}"),
    )
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
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (nsp, key) = room_key(&state, query.namespace.as_deref(), &room)?;
    let limit = check_limit(query.limit, 100)?;
    let budget = state.app.history_reply_bytes();
    let limit = crate::history::ReadLimit {
        events: limit,
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

/// `?namespace=&cursor=&limit=` of a presence read.
#[derive(Deserialize)]
pub(super) struct PresenceQuery {
    namespace: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

fn presence_unavailable(error: crate::app::backend::Unavailable) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("presence unavailable: {error}"),
    )
}

/// The namespace asked for and the key of `room` in it, both checked.
fn room_key(
    state: &ApiState,
    namespace: Option<&str>,
    room: &str,
) -> Result<(String, RoomKey), ApiError> {
    let nsp = namespace_of(state, namespace)?;
    validate_room_name(room).map_err(|e| ApiError::bad_request("invalid_room", e.to_string()))?;
    let key = RoomKey::new(&nsp, room);
    Ok((nsp, key))
}

/// `GET /v1/rooms/{room}/presence?cursor=&limit=`: a page of the room's users, by id.
pub(super) async fn presence(
    State(state): State<ApiState>,
    Path(room): Path<String>,
    ApiQuery(query): ApiQuery<PresenceQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (nsp, key) = room_key(&state, query.namespace.as_deref(), &room)?;
    let limit = check_limit(query.limit, 100)?.min(crate::app::presence::MAX_PAGE);
    let page = state
        .app
        .backend()
        .presence
        .page(&key, query.cursor.as_deref(), limit)
        .await
        .map_err(presence_unavailable)?;
    let mut body = serde_json::to_value(page).unwrap_or_default();
    body["namespace"] = nsp.into();
    body["room"] = room.into();
    Ok(Json(body))
}

/// `GET /v1/rooms/{room}/presence/stats`: `{users, connections}`.
pub(super) async fn presence_stats(
    State(state): State<ApiState>,
    Path(room): Path<String>,
    ApiQuery(query): ApiQuery<NamespaceQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (nsp, key) = room_key(&state, query.namespace.as_deref(), &room)?;
    let stats = state
        .app
        .backend()
        .presence
        .stats(&key)
        .await
        .map_err(presence_unavailable)?;
    let mut body = serde_json::to_value(stats).unwrap_or_default();
    body["namespace"] = nsp.into();
    body["room"] = room.into();
    Ok(Json(body))
}
