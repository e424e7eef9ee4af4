//! The HTTP publish API (`POST /v1/publish`, `/v1/publish/batch`, `/v1/broadcast`) and the direct-message send
//! (`POST /v1/users/{user}/messages`) through the router that
//! `tidings::server::build` assembles for an embedded node, in memory, with a valid API key and an arbitrary
//! body. Never panics, never answers 5xx: in embedded mode every refusal is the client's fault (4xx).
//!
//! Input: the first byte picks the route (modulo 4), the rest is the body.
#![no_main]

use axum::body::Body;
use http::{header, Method, Request};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

tidings_fuzz::cap_allocations!();

const ROUTES: [&str; 4] = [
    "/v1/publish",
    "/v1/publish/batch",
    "/v1/broadcast",
    "/v1/users/bob/messages",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let request = Request::builder()
        .method(Method::POST)
        .uri(ROUTES[usize::from(pick) % ROUTES.len()])
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", tidings_fuzz::node::API_KEY),
        )
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_vec()))
        .expect("a valid request");
    let router = tidings_fuzz::node::router();
    let response = tidings_fuzz::node::runtime()
        .block_on(router.oneshot(request))
        .expect("the router is infallible");
    assert!(
        !response.status().is_server_error(),
        "{} for a client's body",
        response.status()
    );
});
