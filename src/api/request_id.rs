//! Request ids on the HTTP API: every answer carries `x-request-id` (the caller's own when it sent a usable one,
//! a fresh UUID otherwise), and everything logged while the request runs is inside a span holding that id, its
//! method and its path, so a backend's failed call can be found in the node's logs.

use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tracing::Instrument;

/// The header carrying the id.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id taken from a caller; a longer (or unprintable) one is replaced by a fresh id.
const MAX_CALLER_ID: usize = 64;

/// Gives every request of `router` an id and logs its outcome under it.
pub fn layer<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .layer(axum::middleware::from_fn(log_request))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(axum::middleware::from_fn(drop_unusable_id))
}

/// Drops a caller's id that is too long or not printable, so a fresh one is made and logs stay clean.
async fn drop_unusable_id(mut request: Request, next: Next) -> Response {
    let unusable = request
        .headers()
        .get(&REQUEST_ID)
        .is_some_and(|id| !usable(id));
    if unusable {
        request.headers_mut().remove(&REQUEST_ID);
    }
    next.run(request).await
}

fn usable(id: &HeaderValue) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty() && bytes.len() <= MAX_CALLER_ID && bytes.iter().all(u8::is_ascii_graphic)
}

/// Runs the request inside a span with its id; logs server errors at `warn`, everything at `debug`.
async fn log_request(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|id| id.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let span = tracing::info_span!(
        "api",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let took_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, took_ms, "request failed");
        } else {
            tracing::debug!(status, took_ms, "request done");
        }
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_printable_caller_ids_are_kept() {
        assert!(usable(&HeaderValue::from_static("req-42")));
        assert!(!usable(&HeaderValue::from_static("")));
        assert!(!usable(&HeaderValue::from_static("has space")));
        assert!(!usable(&HeaderValue::from_str(&"x".repeat(65)).unwrap()));
    }
}
