//! Request parsing that fails with the API's JSON errors: query strings ([`ApiQuery`]), JSON bodies
//! ([`parse_json`], naming the field at fault), and the answers for unknown routes and methods.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::ApiError;

/// A query string parsed into `T`; a bad one is answered `400 invalid_query` naming the parameter.
pub(super) struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::bad_request(
                "invalid_query",
                query_message(&rejection.body_text()),
            )),
        }
    }
}

/// `limit: invalid digit found in string` out of axum's `Failed to deserialize query string: …`.
fn query_message(text: &str) -> String {
    let detail = text
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(text);
    format!("invalid query string: {detail}")
}

/// Parses a JSON request body. A body that is not JSON is `invalid_json`; JSON of the wrong shape is
/// `invalid_body` with the path of the field at fault (`events[2].room: invalid type: …`).
pub(super) fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    let not_json = |e: serde_json::Error| {
        ApiError::bad_request("invalid_json", format!("request body is not JSON: {e}"))
    };
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            not_json(inner)
        } else if path == "." {
            ApiError::bad_request("invalid_body", format!("request body: {inner}"))
        } else {
            ApiError::bad_request("invalid_body", format!("{path}: {inner}"))
        }
    })?;
    deserializer.end().map_err(not_json)?;
    Ok(value)
}

/// A `limit` query parameter: `default` when absent; `0` is refused (`invalid_query`), since a page of nothing
/// would never move on. Values above a route's maximum are read as that maximum by the route.
pub(super) fn check_limit(limit: Option<usize>, default: usize) -> Result<usize, ApiError> {
    match limit {
        None => Ok(default),
        Some(0) => Err(ApiError::bad_request(
            "invalid_query",
            "invalid query string: limit: must be at least 1",
        )),
        Some(n) => Ok(n),
    }
}

/// Any path no route serves: `404 not_found`.
pub(super) async fn no_route(request: Request) -> ApiError {
    ApiError::not_found(
        "not_found",
        format!("no route for {} {}", request.method(), request.uri().path()),
    )
}

/// A known path with a method it does not take: `405 method_not_allowed`.
pub(super) async fn wrong_method(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} does not accept {}",
            request.uri().path(),
            request.method()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        room: String,
    }

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Outer {
        events: Vec<Inner>,
    }

    fn message(body: &str) -> (StatusCode, String) {
        let error = parse_json::<Outer>(body.as_bytes()).unwrap_err();
        (error.status(), error.to_string())
    }

    #[test]
    fn a_wrong_shape_names_the_field() {
        let (status, text) = message(r#"{"events":[{"room":"a"},{"room":5}]}"#);
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.starts_with("events[1].room: invalid type"), "{text}");
        let (_, text) = message(r#"{"events":[{"room":"a","x":1}]}"#);
        assert!(text.starts_with("events[0].x: unknown field `x`"), "{text}");
        let (_, text) = message(r#"{}"#);
        assert!(text.contains("missing field `events`"), "{text}");
    }

    #[test]
    fn not_json_is_said_so() {
        for body in ["", "{", "nope", r#"{"events":[]} trailing"#] {
            let error = parse_json::<Outer>(body.as_bytes()).unwrap_err();
            assert!(
                error.to_string().starts_with("request body is not JSON"),
                "{body:?}: {error}"
            );
        }
        assert!(parse_json::<Outer>(br#"{"events":[]}"#).is_ok());
    }

    #[test]
    fn query_messages_drop_the_framework_prefix() {
        assert_eq!(
            query_message(
                "Failed to deserialize query string: limit: invalid digit found in string"
            ),
            "invalid query string: limit: invalid digit found in string"
        );
    }
}
