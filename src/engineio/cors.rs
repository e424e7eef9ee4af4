//! CORS for the Engine.IO endpoint: which browser pages may call it, and whether with credentials (cookies).
//!
//! Credentials are never granted to any origin: a page anywhere on the web could otherwise ride a visitor's
//! cookies. `*` answers `Access-Control-Allow-Origin: *`, which browsers accept only for requests without
//! credentials (the default of `socket.io-client`, `withCredentials: false`).

use axum::body::Body;
use http::{header, HeaderValue, Response, StatusCode};

/// Which origins get CORS headers, and whether they may send credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsPolicy {
    /// Allowed origins (`scheme://host[:port]`), or `*` for any; empty sends no CORS headers.
    pub origins: Vec<String>,
    /// Answer listed origins with `Access-Control-Allow-Credentials: true`. Never applies to the `*` entry.
    pub credentials: bool,
}

impl CorsPolicy {
    /// Any origin, without credentials (the default).
    pub fn any_origin() -> CorsPolicy {
        CorsPolicy {
            origins: vec!["*".to_owned()],
            credentials: false,
        }
    }

    /// Adds the CORS headers `origin` is entitled to: its own name (and credentials when configured) when it is
    /// listed, `*` when only the wildcard lets it in, nothing otherwise.
    pub fn apply(&self, mut response: Response<Body>, origin: Option<&str>) -> Response<Body> {
        let Some(origin) = origin else {
            return response;
        };
        let listed = self.origins.iter().any(|o| o == origin);
        let value = if listed {
            HeaderValue::from_str(origin).ok()
        } else if self.origins.iter().any(|o| o == "*") {
            Some(HeaderValue::from_static("*"))
        } else {
            None
        };
        let Some(value) = value else {
            return response;
        };
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        if listed && self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        response
    }
}

/// Answer to a CORS preflight (the origin headers are added by [`CorsPolicy::apply`] like on any answer).
pub fn preflight() -> Response<Body> {
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header(header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, OPTIONS")
        .header(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "content-type, authorization",
        )
        .header(header::ACCESS_CONTROL_MAX_AGE, "86400")
        .body(Body::empty())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(policy: &CorsPolicy, origin: Option<&str>) -> (Option<String>, Option<String>) {
        let r = policy.apply(Response::new(Body::empty()), origin);
        let get = |name| {
            r.headers()
                .get(name)
                .map(|v: &HeaderValue| v.to_str().unwrap().to_owned())
        };
        (
            get(header::ACCESS_CONTROL_ALLOW_ORIGIN),
            get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
        )
    }

    #[test]
    fn wildcard_never_grants_credentials() {
        let any = CorsPolicy::any_origin();
        assert_eq!(
            headers(&any, Some("https://evil.example")),
            (Some("*".into()), None)
        );
        assert_eq!(headers(&any, None), (None, None));
        // Even a policy built with credentials (validation refuses it) does not grant them through `*`.
        let mixed = CorsPolicy {
            origins: vec!["https://app.example".into(), "*".into()],
            credentials: true,
        };
        assert_eq!(
            headers(&mixed, Some("https://evil.example")),
            (Some("*".into()), None)
        );
        assert_eq!(
            headers(&mixed, Some("https://app.example")),
            (Some("https://app.example".into()), Some("true".into()))
        );
    }

    #[test]
    fn listed_origins_with_and_without_credentials() {
        let mut policy = CorsPolicy {
            origins: vec!["https://app.example".into()],
            credentials: false,
        };
        assert_eq!(
            headers(&policy, Some("https://app.example")),
            (Some("https://app.example".into()), None)
        );
        assert_eq!(headers(&policy, Some("https://evil.example")), (None, None));
        policy.credentials = true;
        assert_eq!(
            headers(&policy, Some("https://app.example")),
            (Some("https://app.example".into()), Some("true".into()))
        );
        assert_eq!(headers(&policy, Some("https://evil.example")), (None, None));
        assert_eq!(
            headers(&CorsPolicy::default(), Some("https://app.example")),
            (None, None)
        );
    }
}
