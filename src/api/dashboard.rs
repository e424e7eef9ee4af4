//! The operator's dashboard at `/dashboard`: a page built from `dashboard/` (Preact and uPlot, bundled by esbuild
//! into `src/dashboard/assets/`, embedded in the binary: nothing is fetched from elsewhere at run time) and the
//! one data call it polls, `GET /dashboard/api/overview` (API key or admin key): the cluster's nodes with their
//! connections and load, the top rooms with presence counts, and this node's recent disconnect reasons. The page
//! itself holds no data and is served without a key; it asks for one and sends it as a Bearer token.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{ApiError, ApiState};
use crate::auth::personal_room_owner;
use crate::hub::RoomKey;
use crate::load::LoadMeter;

/// Rooms listed, by members.
const TOP_ROOMS: usize = 20;

/// The page's files: name, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../dashboard/assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../dashboard/assets/app.css"),
    ),
];
const INDEX: &[u8] = include_bytes!("../dashboard/assets/index.html");

/// Only the page's own files, no inline script, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What the dashboard's handlers share besides the API state: the load meter of a node without a registry
/// (in a cluster each node's heartbeat carries its load).
#[derive(Clone)]
pub(super) struct DashboardState {
    api: ApiState,
    meter: Arc<LoadMeter>,
}

/// The dashboard's routes; `guard` wraps the data route in the operator key check.
pub(super) fn routes(
    state: ApiState,
    guard: impl FnOnce(Router<DashboardState>) -> Router<DashboardState>,
) -> Router<ApiState> {
    let data = guard(Router::new().route("/dashboard/api/overview", get(overview)));
    Router::new()
        .route("/dashboard", get(index))
        .route(
            "/dashboard/",
            get(|| async { Redirect::permanent("/dashboard") }),
        )
        .route("/dashboard/assets/{file}", get(asset))
        .merge(data)
        .with_state(DashboardState {
            api: state,
            meter: Arc::default(),
        })
}

async fn index() -> Response {
    page(INDEX, "text/html; charset=utf-8")
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, ..)| *name == file) {
        Some((_, kind, bytes)) => page(bytes, kind),
        None => ApiError::not_found("no_such_asset", "no such dashboard file").into_response(),
    }
}

fn page(bytes: &'static [u8], kind: &'static str) -> Response {
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    // Unhashed names: check with the node on every load (a new binary may carry new files).
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

/// `GET /dashboard/api/overview`: `{node, now, nodes, rooms: {total, top}, disconnects: {by_reason, recent}}`.
async fn overview(State(state): State<DashboardState>) -> Result<Json<Value>, ApiError> {
    let api = &state.api;
    let mut nodes = super::nodes::live_nodes(api).await?;
    if api.registry.is_none() {
        // Alone: no heartbeat measures this node's load, so the dashboard does.
        for node in &mut nodes {
            node.draining = api.draining.is_draining();
            node.load = state.meter.sample();
        }
    }
    let nodes: Vec<Value> = nodes.iter().map(super::nodes::node_json).collect();
    let (total, top) = top_rooms(api).await?;
    let (recent, by_reason) = api.engine.recent_closes().snapshot();
    Ok(Json(json!({
        "node": api.node.id.as_str(),
        "now": crate::messages::now_ms(),
        "nodes": nodes,
        "rooms": { "total": total, "top": top },
        "disconnects": { "by_reason": by_reason, "recent": recent },
    })))
}

/// The rooms of `/` with the most members (cluster-wide in a cluster), personal rooms left out, each with its
/// presence count; and how many rooms there are.
async fn top_rooms(api: &ApiState) -> Result<(usize, Vec<Value>), ApiError> {
    let mut rooms: Vec<(String, usize)> = super::rooms::members_by_room(api, "/")
        .await?
        .into_iter()
        .map(|(name, members, _)| (name, members))
        .collect();
    rooms.retain(|(name, _)| personal_room_owner(name).is_none());
    let total = rooms.len();
    rooms.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rooms.truncate(TOP_ROOMS);
    let presence = &api.app.backend().presence;
    let mut top = Vec::with_capacity(rooms.len());
    for (name, members) in rooms {
        let users = presence
            .stats(&RoomKey::new("/", &name))
            .await
            .ok()
            .map(|stats| stats.users);
        top.push(json!({ "room": name, "connections": members, "presence": users }));
    }
    Ok((total, top))
}
