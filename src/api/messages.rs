//! Direct messages for backends: `POST /v1/users/{user}/messages` (send), `GET /v1/messages/{id}` (status,
//! timestamps, receipts), `GET /v1/users/{user}` (presence) and `GET /v1/users/{user}/messages` (the inbox).
//!
//! A send is answered only once the message is durable in the configured store.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::extract::{check_limit, parse_json, ApiQuery};
use super::{ApiError, ApiState};
use crate::app::direct::request::{check_message, check_user, DmError, SendFields};
use crate::messages::MessageId;

/// Most inbox messages one listing returns.
const MAX_LIST: usize = 1000;

/// The API answer for a refused or failed message request.
fn dm_error(error: DmError) -> ApiError {
    metrics::counter!("tidings_message_requests_refused_total", "event" => "http", "reason" => error.code())
        .increment(1);
    let status = match error {
        DmError::Forbidden => StatusCode::FORBIDDEN,
        DmError::Invalid(_) | DmError::NotADevice(_) => StatusCode::BAD_REQUEST,
        DmError::InboxFull => StatusCode::TOO_MANY_REQUESTS,
        DmError::UnknownMessage => StatusCode::NOT_FOUND,
        DmError::Unavailable | DmError::Busy => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError::new(status, error.code(), error.to_string())
}

fn user_arg(user: &str) -> Result<(), ApiError> {
    check_user(user, "user").map_err(dm_error)
}

/// `POST /v1/users/{user}/messages` `{event, data?, id?, ttl?, from?}` → `{ok, id, status, seq}`.
pub(super) async fn send(
    State(state): State<ApiState>,
    Path(user): Path<String>,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = axum::body::to_bytes(body, state.max_body)
        .await
        .map_err(|_| ApiError::too_large(state.max_body))?;
    let fields: SendFields<'_> =
        parse_json(&body).map_err(|e| dm_error(DmError::Invalid(e.to_string())))?;
    if fields.to.is_some() {
        return Err(dm_error(DmError::Invalid(
            "the recipient is in the path, not in `to`".into(),
        )));
    }
    let direct = state.app.direct();
    let message = check_message(
        fields.from.clone(),
        &user,
        &fields,
        direct.limits(),
        state.app.publish_limits(),
    )
    .map_err(dm_error)?;
    let accepted = direct.send(message).await.map_err(|e| dm_error(e.into()))?;
    Ok(Json(serde_json::json!({
        "ok": true,
        "id": accepted.message.id,
        "status": accepted.status,
        "seq": accepted.message.seq,
        "repeated": !accepted.fresh,
    })))
}

/// `GET /v1/messages/{id}`: the message with its status, timestamps and per-device receipts.
pub(super) async fn show(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let unknown = || ApiError::not_found("unknown_message", "no such message");
    let id = MessageId::parse(&id).ok_or_else(unknown)?;
    let state = state
        .app
        .direct()
        .store()
        .get(&id)
        .await
        .map_err(|e| dm_error(e.into()))?
        .ok_or_else(unknown)?;
    Ok(Json(state.to_json()))
}

/// `GET /v1/users/{user}` → `{user, online, devices}`.
pub(super) async fn presence(
    State(state): State<ApiState>,
    Path(user): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    user_arg(&user)?;
    let presence = state
        .app
        .direct()
        .fanout()
        .presence(&user)
        .await
        .map_err(|e| dm_error(e.into()))?;
    Ok(Json(serde_json::json!({
        "user": user,
        "online": presence.devices > 0,
        "devices": presence.devices,
    })))
}

/// The query of an inbox listing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InboxQuery {
    since: Option<u64>,
    limit: Option<usize>,
}

/// `GET /v1/users/{user}/messages?since=&limit=` → `{user, messages: [...], next}`: inbox messages after
/// sequence `since`, oldest first; `next` is the `since` of the following page.
pub(super) async fn inbox(
    State(state): State<ApiState>,
    Path(user): Path<String>,
    ApiQuery(query): ApiQuery<InboxQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    user_arg(&user)?;
    let since = query.since.unwrap_or(0);
    let limit = check_limit(query.limit, 100)?.min(MAX_LIST);
    let messages = state
        .app
        .direct()
        .store()
        .inbox(&user, since, limit)
        .await
        .map_err(|e| dm_error(e.into()))?;
    let next = messages.last().map_or(since, |m| m.message.seq);
    let list: Vec<serde_json::Value> = messages.iter().map(|m| m.to_json()).collect();
    Ok(Json(serde_json::json!({
        "user": user,
        "messages": list,
        "next": next,
    })))
}
