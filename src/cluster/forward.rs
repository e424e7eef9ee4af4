//! Serving another node's sessions by proxy, so a cluster needs no sticky load balancing: a long-polling
//! request is relayed over pooled HTTP/1.1 connections to the node named by the tag in its session id, and a
//! websocket upgrade is replayed to that node and the two upgraded connections spliced together.
//!
//! Every forwarded request carries [`FORWARDED_HEADER`]; a request that already carries it is refused rather
//! than forwarded again, so nodes that disagree about an owner cannot bounce a request between them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::registry::Registry;
use super::tunnels::Tunnels;
use crate::engineio::handshake::EngineError;
use crate::engineio::session::NodeTag;
use crate::engineio::{EngineConfig, SessionRouter};

/// Header naming the node that forwarded a request.
pub const FORWARDED_HEADER: &str = "x-tidings-forwarded";
/// Time allowed to open a connection to the owner.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle pooled connections kept per owner.
const POOL_IDLE_PER_NODE: usize = 32;
/// Time an idle pooled connection is kept: under the 30 s after which a node drops an idle connection, so a
/// request is not sent on one the owner is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Slack on top of a long-poll's longest legitimate wait.
const TIMEOUT_SLACK: Duration = Duration::from_secs(5);
/// Copy buffer per direction of a spliced websocket; small, because forwarded websockets live long.
const SPLICE_BUFFER: usize = 4096;

/// Headers that belong to one hop and are not relayed (the upgrade path sets its own).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// A future answering a forwarded request.
type Forwarded = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// The [`SessionRouter`] of a cluster node: relays requests for other nodes' sessions to their owner, found
/// through the [`Registry`].
pub struct Forwarder {
    registry: Arc<Registry>,
    client: Client<HttpConnector, Body>,
    timeout: Duration,
    tunnels: Arc<Tunnels>,
}

impl Forwarder {
    /// A forwarder whose requests may take up to `timeout` to be answered (see [`Forwarder::timeout_for`]).
    pub fn new(registry: Arc<Registry>, timeout: Duration) -> Forwarder {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(POOL_IDLE_PER_NODE)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Forwarder {
            registry,
            client,
            timeout,
            tunnels: Arc::default(),
        }
    }

    /// The websockets this forwarder splices to their owners.
    pub fn tunnels(&self) -> Arc<Tunnels> {
        self.tunnels.clone()
    }

    /// The time to allow a forwarded request on an engine with `config`: a long-poll legitimately waits a whole
    /// ping interval, and the owner may take the ping timeout to notice a dead client.
    pub fn timeout_for(config: &EngineConfig) -> Duration {
        config.ping_interval + config.ping_timeout + TIMEOUT_SLACK
    }
}

impl SessionRouter for Forwarder {
    fn forward(&self, owner: NodeTag, request: Request<Body>) -> Option<Forwarded> {
        let me = self.registry.me().id;
        if request.headers().contains_key(FORWARDED_HEADER) {
            // Debug only: any client can send the header. A real loop (e.g. public_url naming a load balancer)
            // shows in the metric.
            tracing::debug!(%owner, from = ?request.headers().get(FORWARDED_HEADER), "refusing a request forwarded twice");
            count("loop");
            return Some(Box::pin(async {
                EngineError::BadRequest("already forwarded by another node").into_response()
            }));
        }
        let registry = self.registry.clone();
        let client = self.client.clone();
        let timeout = self.timeout;
        let tunnels = self.tunnels.clone();
        Some(Box::pin(async move {
            let Some(base) = registry.url_of(owner).await else {
                tracing::debug!(%owner, "session of an unknown or dead node");
                count("unknown_owner");
                return EngineError::UnknownSid.into_response();
            };
            let hop = Hop {
                base,
                owner,
                me,
                timeout,
                tunnels,
            };
            if is_websocket_upgrade(request.headers()) {
                hop.upgrade(request).await
            } else {
                hop.http(&client, request).await
            }
        }))
    }
}

/// One request on its way to its owner.
struct Hop {
    /// The owner's base URL.
    base: String,
    owner: NodeTag,
    me: NodeTag,
    timeout: Duration,
    tunnels: Arc<Tunnels>,
}

impl Hop {
    /// The owner's URL for the request's path and query.
    fn target(&self, uri: &Uri) -> Option<Uri> {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        format!("{}{path}", self.base.trim_end_matches('/'))
            .parse()
            .ok()
    }

    fn stamp(&self, headers: &mut HeaderMap) {
        if let Ok(value) = HeaderValue::from_str(self.me.as_str()) {
            headers.insert(FORWARDED_HEADER, value);
        }
    }

    /// Relays a polling GET or POST, streaming both bodies.
    async fn http(
        &self,
        client: &Client<HttpConnector, Body>,
        mut request: Request<Body>,
    ) -> Response<Body> {
        let Some(target) = self.target(request.uri()) else {
            return self.unreachable("invalid node url");
        };
        *request.uri_mut() = target;
        *request.version_mut() = Version::HTTP_11;
        let headers = request.headers_mut();
        strip_hop_by_hop(headers);
        headers.remove(header::UPGRADE);
        // The client sets Host from the owner's URL.
        headers.remove(header::HOST);
        self.stamp(headers);
        match tokio::time::timeout(self.timeout, client.request(request)).await {
            Ok(Ok(response)) => {
                count("ok");
                let mut response = response.map(Body::new);
                strip_hop_by_hop(response.headers_mut());
                response
            }
            Ok(Err(error)) => self.unreachable(&error.to_string()),
            Err(_) => self.unreachable("timed out"),
        }
    }

    /// Replays a websocket upgrade to the owner; on its 101, answers the client with it and splices the two
    /// upgraded connections once both upgrades complete. Any other answer of the owner is relayed as it is.
    async fn upgrade(&self, mut request: Request<Body>) -> Response<Body> {
        let Some(target) = self.target(request.uri()) else {
            return self.unreachable("invalid node url");
        };
        let (Some(host), Some(path)) = (target.host(), target.path_and_query()) else {
            return self.unreachable("invalid node url");
        };
        if target.scheme_str() != Some("http") {
            return self.unreachable("only http:// node urls can carry websockets");
        }
        let port = target.port_u16().unwrap_or(80);
        let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)));
        let stream = match connect.await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return self.unreachable(&error.to_string()),
            Err(_) => return self.unreachable("connect timed out"),
        };
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) =
            match hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(stream)).await {
                Ok(pair) => pair,
                Err(error) => return self.unreachable(&error.to_string()),
            };
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "forwarded websocket connection ended");
            }
        });

        let mut outgoing = Request::new(Body::empty());
        *outgoing.method_mut() = request.method().clone();
        *outgoing.uri_mut() = Uri::from(path.clone());
        let headers = outgoing.headers_mut();
        headers.clone_from(request.headers());
        strip_hop_by_hop(headers);
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Some(authority) = target.authority() {
            if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
                headers.insert(header::HOST, value);
            }
        }
        self.stamp(headers);

        let client_side = hyper::upgrade::on(&mut request);
        let mut response =
            match tokio::time::timeout(self.timeout, sender.send_request(outgoing)).await {
                Ok(Ok(response)) => response,
                Ok(Err(error)) => return self.unreachable(&error.to_string()),
                Err(_) => return self.unreachable("timed out"),
            };
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            count("refused_upgrade");
            return response.map(Body::new);
        }
        count("ok");
        let owner_side = hyper::upgrade::on(&mut response);
        tokio::spawn(splice(
            client_side,
            owner_side,
            self.owner,
            self.tunnels.clone(),
        ));
        let mut reply = Response::new(Body::empty());
        *reply.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *reply.headers_mut() = response.headers().clone();
        reply
    }

    /// The answer when the owner cannot be reached: 502, which makes the client reconnect.
    fn unreachable(&self, detail: &str) -> Response<Body> {
        tracing::warn!(owner = %self.owner, url = %self.base, %detail, "cannot forward to the session's node");
        count("unreachable");
        let body =
            serde_json::json!({ "code": 1, "message": "Session owner unreachable" }).to_string();
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = StatusCode::BAD_GATEWAY;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// Copies bytes both ways between the client's and the owner's upgraded connections until either side ends,
/// or until the tunnel is asked to close (a draining node): both connections are then dropped, the client
/// reconnects elsewhere and the owner parks the session for its recovery.
async fn splice(
    client: hyper::upgrade::OnUpgrade,
    owner: hyper::upgrade::OnUpgrade,
    node: NodeTag,
    tunnels: Arc<Tunnels>,
) {
    let (client, owner) = match tokio::try_join!(client, owner) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!(%error, %node, "forwarded websocket upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut owner = TokioIo::new(owner);
    let tunnel = tunnels.open();
    let gauge = metrics::gauge!("tidings_forwarded_websockets");
    gauge.increment(1.0);
    let copied = tokio::select! {
        copied = tokio::io::copy_bidirectional_with_sizes(
            &mut client,
            &mut owner,
            SPLICE_BUFFER,
            SPLICE_BUFFER,
        ) => Some(copied),
        () = tunnel.closed() => None,
    };
    gauge.decrement(1.0);
    match copied {
        Some(Ok((up, down))) => tracing::debug!(%node, up, down, "forwarded websocket closed"),
        Some(Err(error)) => tracing::debug!(%node, %error, "forwarded websocket ended"),
        None => tracing::debug!(%node, "forwarded websocket closed by the drain"),
    }
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers.get_all(header::UPGRADE).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.trim().eq_ignore_ascii_case("websocket"))
    })
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

fn count(outcome: &'static str) {
    metrics::counter!("tidings_forwarded_requests_total", "outcome" => outcome).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(base: &str) -> Hop {
        Hop {
            base: base.into(),
            owner: NodeTag::random(),
            me: NodeTag::random(),
            timeout: Duration::from_secs(1),
            tunnels: Arc::default(),
        }
    }

    #[test]
    fn targets_keep_path_and_query() {
        let uri: Uri = "/socket.io/?EIO=4&transport=polling&sid=abc"
            .parse()
            .unwrap();
        assert_eq!(
            hop("http://10.0.0.2:3000/")
                .target(&uri)
                .unwrap()
                .to_string(),
            "http://10.0.0.2:3000/socket.io/?EIO=4&transport=polling&sid=abc"
        );
        assert!(hop("not a url").target(&uri).is_none());
    }

    #[test]
    fn recognises_websocket_upgrades() {
        let mut headers = HeaderMap::new();
        assert!(!is_websocket_upgrade(&headers));
        headers.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(is_websocket_upgrade(&headers));
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
    }
}
