//! Request validation shared by both transports: query parameters and Engine.IO error replies.

use axum::body::Body;
use http::{header, Response, StatusCode};

use super::OpenRequest;

/// Transport named in the `transport` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportParam {
    /// `transport=polling`
    Polling,
    /// `transport=websocket`
    WebSocket,
}

/// The parsed query of an Engine.IO request.
#[derive(Debug, Clone)]
pub struct Query {
    /// Requested transport.
    pub transport: TransportParam,
    /// Session id, absent on a handshake.
    pub sid: Option<String>,
    /// Every parameter, for the layer above.
    pub params: Vec<(String, String)>,
}

impl Query {
    /// Parses and checks `EIO` and `transport`.
    pub fn parse(raw: &str) -> Result<Query, EngineError> {
        let params: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
            .into_owned()
            .collect();
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        if get("EIO") != Some("4") {
            return Err(EngineError::UnsupportedVersion);
        }
        let transport = match get("transport") {
            Some("polling") => TransportParam::Polling,
            Some("websocket") => TransportParam::WebSocket,
            _ => return Err(EngineError::UnknownTransport),
        };
        let sid = get("sid").map(str::to_owned);
        Ok(Query {
            transport,
            sid,
            params,
        })
    }

    /// What the layer above gets to see of the opening request.
    pub fn into_open_request(self, remote: Option<std::net::SocketAddr>) -> OpenRequest {
        OpenRequest {
            query: self.params,
            remote,
        }
    }
}

/// An Engine.IO request refused before or outside a session, answered with the reference error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// `transport` missing or not one we serve.
    #[error("Transport unknown")]
    UnknownTransport,
    /// `sid` not found (expired, closed, or never existed).
    #[error("Session ID unknown")]
    UnknownSid,
    /// A handshake with a method other than GET.
    #[error("Bad handshake method")]
    BadHandshakeMethod,
    /// Any other malformed request; the text says what.
    #[error("Bad request: {0}")]
    BadRequest(&'static str),
    /// `EIO` missing or not 4.
    #[error("Unsupported protocol version")]
    UnsupportedVersion,
    /// A body larger than `maxPayload`.
    #[error("Payload too large")]
    PayloadTooLarge,
    /// The node is at its connection limit.
    #[error("Server full: max_connections reached")]
    Full,
    /// The node is shutting down.
    #[error("Server shutting down")]
    ShuttingDown,
    /// The client's address is over one of its per-address limits.
    #[error("Too many requests: {0}")]
    TooManyRequests(super::address_limits::Refusal),
}

impl EngineError {
    fn code(&self) -> u8 {
        match self {
            EngineError::UnknownTransport => 0,
            EngineError::UnknownSid => 1,
            EngineError::BadHandshakeMethod => 2,
            EngineError::BadRequest(_) | EngineError::PayloadTooLarge => 3,
            EngineError::Full | EngineError::ShuttingDown | EngineError::TooManyRequests(_) => 4,
            EngineError::UnsupportedVersion => 5,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            EngineError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            EngineError::Full | EngineError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The JSON error reply `{"code":N,"message":"…"}`.
    pub fn into_response(self) -> Response<Body> {
        let body =
            serde_json::json!({ "code": self.code(), "message": self.to_string() }).to_string();
        Response::builder()
            .status(self.status())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_handshake_query() {
        let q = Query::parse("EIO=4&transport=polling&t=abc&token=x%20y").unwrap();
        assert_eq!(q.transport, TransportParam::Polling);
        assert_eq!(q.sid, None);
        let open = q.into_open_request(None);
        assert_eq!(open.query_param("token"), Some("x y"));
    }

    #[test]
    fn refuses_bad_version_and_transport() {
        assert_eq!(
            Query::parse("transport=polling").unwrap_err(),
            EngineError::UnsupportedVersion
        );
        assert_eq!(
            Query::parse("EIO=3&transport=polling").unwrap_err(),
            EngineError::UnsupportedVersion
        );
        assert_eq!(
            Query::parse("EIO=4").unwrap_err(),
            EngineError::UnknownTransport
        );
        assert_eq!(
            Query::parse("EIO=4&transport=flash").unwrap_err(),
            EngineError::UnknownTransport
        );
    }
}
