//! Publishing from backends: `POST /v1/publish`, `/v1/publish/batch` and `/v1/broadcast`.
//!
//! A request is answered only after its events were accepted into the hub (sequenced and queued for every
//! member), so a 2xx means the event is in. A publish carrying an `Idempotency-Key` header is published once per
//! key (for `api.idempotency_ttl_secs`): a client that lost an answer retries with the same key safely.

use axum::body::Body;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::rooms::namespace_of;
use super::{ApiError, ApiState};
use crate::app::{check_data, validate_event_name, CheckedPublish as Checked};
use crate::app::{PublishFields, Receipt, RequestError};
use crate::hub::BROADCAST_ROOM;
use axum::http::{HeaderMap, StatusCode};

/// Most events in one batch.
const MAX_BATCH: usize = 1000;

/// The header naming a publish, so that its retries publish it once.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Longest accepted idempotency key, in bytes.
const MAX_IDEMPOTENCY_KEY: usize = 200;

/// The claim id of a publish's `Idempotency-Key` (printable ASCII, 1 to [`MAX_IDEMPOTENCY_KEY`] bytes), in a
/// space of its own beside the Kafka ingest's record ids; `None` without the header.
fn idempotency_claim(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value.as_bytes();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY || !key.iter().all(u8::is_ascii_graphic) {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            format!(
                "the Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"
            ),
        ));
    }
    Ok(Some(format!("api-{}", String::from_utf8_lossy(key))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest<'a> {
    room: Option<String>,
    rooms: Option<Vec<String>>,
    event: String,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    namespace: Option<String>,
    /// No offset, history or replay, in every room (rooms whose policy says so are ephemeral anyway).
    #[serde(default)]
    ephemeral: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest<'a> {
    #[serde(borrow)]
    events: Vec<PublishRequest<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastRequest<'a> {
    event: String,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    namespace: Option<String>,
}

async fn read_body(state: &ApiState, body: Body) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, state.max_body)
        .await
        .map_err(|_| ApiError::too_large(state.max_body))
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    super::extract::parse_json(body)
}

fn check<'a>(state: &ApiState, request: PublishRequest<'a>) -> Result<Checked<'a>, ApiError> {
    state
        .app
        .check_publish(PublishFields {
            namespace: request.namespace,
            room: request.room,
            rooms: request.rooms,
            event: request.event,
            data: request.data,
            ephemeral: request.ephemeral,
        })
        .map_err(request_error)
}

/// The API answer for a refused publish request.
fn request_error(error: RequestError) -> ApiError {
    metrics::counter!("tidings_publish_refused_total", "reason" => error.code()).increment(1);
    match &error {
        RequestError::UnknownNamespace(_) => ApiError::not_found(error.code(), error.to_string()),
        RequestError::TooLarge(limit) => ApiError::too_large(*limit),
        _ => ApiError::bad_request(error.code(), error.to_string()),
    }
}

async fn deliver(state: &ApiState, checked: &Checked<'_>) -> Result<Option<Receipt>, ApiError> {
    state
        .app
        .publish_checked(checked)
        .await
        .map_err(unavailable)
}

/// The answer when the event log could not take a publish.
fn unavailable(error: crate::app::PublishError) -> ApiError {
    metrics::counter!("tidings_publish_unavailable_total").increment(1);
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        error.to_string(),
    )
}

/// `{offset, recipients}` on an embedded node: the connections the event was queued for. In cluster mode the
/// publishing node cannot know that when it answers (other nodes deliver after), so the answer says what it
/// knows under another name: `{offset, nodes}`, the nodes serving one of the event's rooms that received it.
/// An event that was ephemeral in all its rooms has no offset: `{ephemeral: true}`.
fn receipt(state: &ApiState, published: &Option<Receipt>) -> serde_json::Value {
    let Some(published) = published else {
        return serde_json::json!({ "ephemeral": true });
    };
    let offset = published.seq.to_string();
    if state.registry.is_some() {
        serde_json::json!({ "offset": offset, "nodes": published.recipients })
    } else {
        serde_json::json!({ "offset": offset, "recipients": published.recipients })
    }
}

pub(super) async fn publish(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let claim = idempotency_claim(&headers)?;
    let body = read_body(&state, body).await?;
    let checked = check(&state, parse::<PublishRequest<'_>>(&body)?)?;
    let published = match &claim {
        None => deliver(&state, &checked).await?,
        Some(id) => {
            let ttl_ms = state.idempotency_ttl_secs.saturating_mul(1000);
            match state
                .app
                .publish_checked_once(&checked, Some((id, ttl_ms)))
                .await
            {
                Ok(Some(published)) => published,
                Ok(None) => {
                    metrics::counter!("tidings_publish_repeated_total").increment(1);
                    return Ok(Json(serde_json::json!({ "ok": true, "repeated": true })));
                }
                Err(error) => return Err(unavailable(error)),
            }
        }
    };
    let mut reply = receipt(&state, &published);
    reply["ok"] = true.into();
    Ok(Json(reply))
}

pub(super) async fn publish_batch(
    State(state): State<ApiState>,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = read_body(&state, body).await?;
    let batch = parse::<BatchRequest<'_>>(&body)?;
    if batch.events.is_empty() || batch.events.len() > MAX_BATCH {
        return Err(ApiError::bad_request(
            "invalid_batch",
            format!("a batch holds 1 to {MAX_BATCH} events"),
        ));
    }
    // Check everything first so a batch is either refused whole or accepted whole.
    let checked = batch
        .events
        .into_iter()
        .enumerate()
        .map(|(index, event)| check(&state, event).map_err(|e| e.at_index(index)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut results = Vec::with_capacity(checked.len());
    for (index, event) in checked.iter().enumerate() {
        match deliver(&state, event).await {
            Ok(published) => results.push(receipt(&state, &published)),
            Err(_) if index > 0 => {
                // Events before this one are accepted; say exactly how far the batch got.
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!("event store unavailable: the first {index} events were accepted, the rest were not"),
                ));
            }
            Err(error) => return Err(error),
        }
    }
    Ok(Json(serde_json::json!({ "ok": true, "results": results })))
}

pub(super) async fn broadcast(
    State(state): State<ApiState>,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = read_body(&state, body).await?;
    let request = parse::<BroadcastRequest<'_>>(&body)?;
    let nsp = namespace_of(&state, request.namespace.as_deref())?;
    validate_event_name(&request.event).map_err(|e| ApiError::bad_request("invalid_event", e))?;
    let data = request
        .data
        .map_or(b"null".as_slice(), |d| d.get().as_bytes());
    check_data(data, 0, state.app.publish_limits()).map_err(request_error)?;
    let checked = Checked {
        nsp,
        rooms: vec![BROADCAST_ROOM.to_owned()],
        event: request.event,
        data,
        ephemeral: false,
    };
    let published = deliver(&state, &checked).await?;
    let mut reply = receipt(&state, &published);
    reply["ok"] = true.into();
    Ok(Json(reply))
}
