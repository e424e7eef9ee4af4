//! Long-polling connections without hyper: a small HTTP/1.1 loop that serves Engine.IO polling requests itself,
//! so a client's parked GET costs the node its session and a small task, not hyper's per-connection buffers
//! (an 8 KiB read buffer and an 8 KiB write buffer, held for the whole wait: ~16 KiB of RSS per idle polling
//! client, see BENCHMARKS.md "Memory per idle connection").
//!
//! The loop only *peeks* at a request until it has decided to serve it. Anything it does not serve (a websocket
//! upgrade, the HTTP API, any other path, HTTP/1.0, `Transfer-Encoding` or `Expect`, a body over `maxPayload`, a
//! head that is malformed, too large, or not complete within a few milliseconds) is left unread and the
//! connection goes to hyper, which keeps it from then on: hyper answers those exactly as it always did.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::{Buf, Bytes};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::Engine;

/// Largest request head served here (a bigger one goes to hyper).
const MAX_HEAD: usize = 8 * 1024;
/// What is peeked at first; a head that fills it is peeked at again with [`MAX_HEAD`].
const FIRST_PEEK: usize = 1024;
/// Most header lines served here.
const MAX_HEADERS: usize = 64;
/// How long a connection may sit between requests, or take to send a head or body (hyper's
/// `header_read_timeout` on the other connections).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often, and how far apart, a head that arrived in pieces is looked at again before hyper gets it.
const PARTIAL_HEAD_RETRIES: u32 = 20;
const PARTIAL_HEAD_PAUSE: Duration = Duration::from_millis(2);
/// Largest response body written (polling payloads are bounded by `maxPayload`).
const MAX_RESPONSE: usize = 64 << 20;

/// The Engine.IO endpoints whose polling requests are served here, by exact path.
#[derive(Default)]
pub struct PollingRoutes {
    routes: Vec<(&'static str, Arc<Engine>)>,
}

impl PollingRoutes {
    /// Polling requests for `path` go to `engine`.
    pub fn add(&mut self, path: &'static str, engine: Arc<Engine>) {
        self.routes.push((path, engine));
    }

    /// True when no endpoint is served here.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// How [`serve`] ended.
pub enum Outcome {
    /// The connection is finished (closed by either side, timed out, or the node is stopping).
    Closed,
    /// A request this loop does not serve is next, unread: hyper takes the connection from here.
    Hyper(TcpStream),
}

/// Serves polling requests on `stream` until it closes or a request for hyper comes. (A plain function returning
/// the future: an `async fn` would keep the stream twice, as its argument and as the local it moves into.)
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub fn serve<'a>(
    mut stream: TcpStream,
    // By reference: the caller keeps it anyway, and a copy would take 32 bytes of every parked GET's task.
    remote: &'a SocketAddr,
    routes: &'a PollingRoutes,
    stop: &'a mut watch::Receiver<bool>,
) -> impl Future<Output = Outcome> + Send + 'a {
    async move {
        loop {
            if *stop.borrow() {
                return Outcome::Closed;
            }
            // The futures of the other phases are boxed, so the task itself stays small: what a parked GET holds
            // is this task, the boxed request future and the session.
            let next = Box::pin(async {
                tokio::select! {
                    next = next_request(&mut stream, routes) => next,
                    _ = tokio::time::sleep(IDLE_TIMEOUT) => Next::Closed,
                    _ = stop.changed() => Next::Closed,
                }
            })
            .await;
            let (mut handling, close) = match next {
                // (The request's box goes at the end of this arm, not with the loop iteration.)
                Next::Ours(request, engine, close) => {
                    (Box::pin(engine.handle(*request, Some(*remote))), close)
                }
                Next::Hyper => return Outcome::Hyper(stream),
                Next::Closed => return Outcome::Closed,
            };
            let response = std::future::poll_fn(|cx| {
                if let Poll::Ready(response) = handling.as_mut().poll(cx) {
                    return Poll::Ready(Some(response));
                }
                // Like hyper: a client that goes away mid-request cancels it (a parked GET ends at once).
                poll_peer_gone(&stream, cx).map(|()| None)
            })
            .await;
            let Some(response) = response else {
                return Outcome::Closed;
            };
            drop(handling);
            if Box::pin(write_response(&mut stream, response, close))
                .await
                .is_err()
                || close
            {
                return Outcome::Closed;
            }
        }
    }
}

/// The next request on a connection.
enum Next {
    /// A polling request, read: the request, its endpoint, and whether the client asked to close afterwards.
    Ours(Box<Request<Body>>, Arc<Engine>, bool),
    /// Something else, unread.
    Hyper,
    /// The peer closed the connection (or it failed, or a body did not arrive in time).
    Closed,
}

/// What a peeked head says.
enum Head {
    Ours(Parsed),
    Partial,
    Hyper,
}

/// A request head served here.
struct Parsed {
    len: usize,
    method: Method,
    path_and_query: String,
    headers: HeaderMap,
    content_length: usize,
    close: bool,
    route: usize,
}

/// Waits for the next request head and, when it is one of ours, reads it and its body.
async fn next_request(stream: &mut TcpStream, routes: &PollingRoutes) -> Next {
    // No buffer while the connection idles: wait for data first.
    if stream.readable().await.is_err() {
        return Next::Closed;
    }
    let mut buf = vec![0u8; FIRST_PEEK];
    let mut tries = 0;
    let parsed = loop {
        let n = match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => return Next::Closed,
            Ok(n) => n,
        };
        match parse_head(&buf[..n], routes) {
            Head::Ours(parsed) => break parsed,
            Head::Hyper => return Next::Hyper,
            Head::Partial if n == buf.len() && n < MAX_HEAD => buf.resize(MAX_HEAD, 0),
            Head::Partial if n == buf.len() || tries == PARTIAL_HEAD_RETRIES => return Next::Hyper,
            Head::Partial => {
                tries += 1;
                tokio::time::sleep(PARTIAL_HEAD_PAUSE).await;
            }
        }
    };
    if stream.read_exact(&mut buf[..parsed.len]).await.is_err() {
        return Next::Closed;
    }
    drop(buf);
    let Some(engine) = routes.routes.get(parsed.route).map(|(_, e)| e.clone()) else {
        return Next::Closed;
    };
    let mut close = parsed.close;
    let body = if parsed.content_length == 0 {
        Body::empty()
    } else if !has_owner(&engine, &parsed.path_and_query) {
        // No session to give the body to: answer at once ("Session ID unknown") without reading it, and close
        // the connection since its unread bytes follow.
        close = true;
        Body::empty()
    } else {
        let mut body = Vec::new();
        let read = read_body(stream, parsed.content_length, &mut body);
        match tokio::time::timeout(IDLE_TIMEOUT, read).await {
            Ok(Ok(())) => Body::from(body),
            _ => return Next::Closed,
        }
    };
    let mut request = Request::new(body);
    *request.method_mut() = parsed.method;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = parsed.headers;
    match parsed.path_and_query.parse() {
        Ok(uri) => *request.uri_mut() = uri,
        Err(_) => return Next::Closed,
    }
    Next::Ours(Box::new(request), engine, close)
}

/// Bytes the body buffer grows by at least, and all it holds before the first of them arrive.
const BODY_CHUNK: usize = 16 * 1024;

/// Reads exactly `len` body bytes into `body`, which grows with what arrives (doubling, from [`BODY_CHUNK`],
/// never past `len`): a client announcing a large body and sending it slowly, or not at all, holds no more
/// memory than it sent.
async fn read_body<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
    len: usize,
    body: &mut Vec<u8>,
) -> io::Result<()> {
    while body.len() < len {
        if body.len() == body.capacity() {
            let target = (body.len() * 2).max(BODY_CHUNK).min(len);
            body.reserve_exact(target - body.len());
        }
        let want = (body.capacity() - body.len()).min(len - body.len());
        let mut limited = (&mut *stream).take(want as u64);
        if limited.read_buf(body).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// True when the request's `sid` names a session this endpoint has, or, in a cluster, one of another node
/// (the request is forwarded to it).
fn has_owner(engine: &Engine, path_and_query: &str) -> bool {
    let query = path_and_query.split_once('?').map_or("", |(_, q)| q);
    let sid = form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "sid")
        .and_then(|(_, value)| super::Sid::parse(&value));
    sid.is_some_and(|sid| {
        if sid.node_tag() == engine.config().node_tag {
            engine.find(&sid).is_some()
        } else {
            engine.forwards()
        }
    })
}

/// Decides from the bytes peeked so far whether the request is one of ours.
fn parse_head(bytes: &[u8], routes: &PollingRoutes) -> Head {
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut lines);
    let len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Hyper,
    };
    if req.version != Some(1) {
        return Head::Hyper;
    }
    let method = match req.method {
        Some("GET") => Method::GET,
        Some("POST") => Method::POST,
        Some("OPTIONS") => Method::OPTIONS,
        _ => return Head::Hyper,
    };
    let Some(target) = req.path else {
        return Head::Hyper;
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let Some(route) = routes.routes.iter().position(|(p, _)| *p == path) else {
        return Head::Hyper;
    };
    if !query.split('&').any(|param| param == "transport=polling") {
        return Head::Hyper;
    }
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    let mut content_length: Option<usize> = None;
    let mut close = false;
    for line in req.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(line.name.as_bytes()) else {
            return Head::Hyper;
        };
        let Ok(value) = HeaderValue::from_bytes(line.value) else {
            return Head::Hyper;
        };
        if name == header::TRANSFER_ENCODING || name == header::EXPECT || name == header::UPGRADE {
            return Head::Hyper;
        }
        if name == header::CONTENT_LENGTH {
            let parsed = value
                .to_str()
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok());
            match (parsed, content_length) {
                (Some(n), None) => content_length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return Head::Hyper,
            }
        }
        if name == header::CONNECTION {
            for token in value.to_str().unwrap_or("").split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("upgrade") {
                    return Head::Hyper;
                }
            }
        }
        headers.append(name, value);
    }
    let content_length = content_length.unwrap_or(0);
    if content_length > 0 && method != Method::POST {
        return Head::Hyper;
    }
    let max_payload = routes.routes[route].1.config().max_payload;
    if content_length > max_payload {
        // hyper's path closes the session with "payload too large", as for any oversized POST.
        return Head::Hyper;
    }
    Head::Ours(Parsed {
        len,
        method,
        path_and_query: target.to_owned(),
        headers,
        content_length,
        close,
        route,
    })
}

/// Ready when the peer closed its side (or the connection failed) while a request is in flight. Polled in
/// place: a future of its own (tokio's `peek`) would add 264 bytes to every parked GET's task.
fn poll_peer_gone(stream: &TcpStream, cx: &mut Context<'_>) -> Poll<()> {
    let mut byte = [0u8; 1];
    let mut buf = tokio::io::ReadBuf::new(&mut byte);
    match stream.poll_peek(cx, &mut buf) {
        Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Poll::Ready(()),
        // The client already sent more (a pipelined request): it is read after this answer.
        Poll::Ready(Ok(_)) | Poll::Pending => Poll::Pending,
    }
}

/// Writes `response` with a `Content-Length` (and `Connection: close` when closing).
async fn write_response(
    stream: &mut TcpStream,
    response: Response<Body>,
    close: bool,
) -> io::Result<()> {
    let (parts, body) = response.into_parts();
    let body: Bytes = axum::body::to_bytes(body, MAX_RESPONSE)
        .await
        .map_err(|_| io::Error::other("response body"))?;
    let head = response_head(parts.status, &parts.headers, body.len(), close);
    let mut out = Bytes::from(head).chain(body);
    stream.write_all_buf(&mut out).await
}

/// The status line and headers of a response with a body of `body_len` bytes.
fn response_head(status: StatusCode, headers: &HeaderMap, body_len: usize, close: bool) -> Vec<u8> {
    let mut head = Vec::with_capacity(160 + headers.len() * 48);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
            || name.as_str() == "keep-alive"
        {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if !bodiless {
        head.extend_from_slice(b"content-length: ");
        head.extend_from_slice(body_len.to_string().as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if close {
        head.extend_from_slice(b"connection: close\r\n");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    head.extend_from_slice(b"date: ");
    head.extend_from_slice(http_date(now).as_bytes());
    head.extend_from_slice(b"\r\n\r\n");
    head
}

/// `secs` since the Unix epoch as an HTTP date (IMF-fixdate), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let time = secs % 86_400;
    // Civil date from the day number (H. Hinnant's algorithm, days counted from 0000-03-01).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        time / 3_600,
        time % 3_600 / 60,
        time % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engineio::EngineConfig;

    fn routes() -> PollingRoutes {
        let mut routes = PollingRoutes::default();
        let engine = Engine::new(
            EngineConfig::default(),
            Arc::new(crate::conformance::EngineEcho),
        );
        routes.add("/engine.io/", engine);
        routes
    }

    fn parse(text: &str) -> Head {
        parse_head(text.as_bytes(), &routes())
    }

    #[test]
    fn serves_polling_requests() {
        let get = "GET /engine.io/?EIO=4&transport=polling&sid=abc HTTP/1.1\r\nHost: x\r\n\r\n";
        let Head::Ours(parsed) = parse(get) else {
            panic!("a polling GET is ours");
        };
        assert_eq!(parsed.len, get.len());
        assert_eq!(parsed.method, Method::GET);
        assert_eq!(parsed.content_length, 0);
        assert!(!parsed.close);
        let post =
            "POST /engine.io/?EIO=4&transport=polling&sid=abc HTTP/1.1\r\nContent-Length: 3\r\n\
                    Connection: close\r\n\r\n4hi";
        let Head::Ours(parsed) = parse(post) else {
            panic!("a polling POST is ours");
        };
        assert_eq!(parsed.len, post.len() - 3);
        assert_eq!(parsed.content_length, 3);
        assert!(parsed.close);
        assert!(matches!(
            parse("GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n"),
            Head::Partial
        ));
    }

    #[test]
    fn leaves_everything_else_to_hyper() {
        for head in [
            // other paths, transports, versions, methods
            "GET /v1/stats HTTP/1.1\r\n\r\n",
            "GET /engine.io/?EIO=4&transport=websocket HTTP/1.1\r\n\r\n",
            "GET /engine.io?EIO=4&transport=polling HTTP/1.1\r\n\r\n",
            "GET /engine.io/?EIO=4&transport=polling HTTP/1.0\r\n\r\n",
            "HEAD /engine.io/?EIO=4&transport=polling HTTP/1.1\r\n\r\n",
            // framing hyper handles
            "POST /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "POST /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
            "GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nContent-Length: 1\r\n\r\n",
            "GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            "GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nConnection: Upgrade\r\n\r\n",
            "GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nBad Header: x\r\n\r\n",
        ] {
            assert!(matches!(parse(head), Head::Hyper), "{head:?}");
        }
    }

    #[test]
    fn response_heads() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        let head = String::from_utf8(response_head(StatusCode::OK, &headers, 5, false)).unwrap();
        assert!(
            head.starts_with(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\ndate: "
            ),
            "{head}"
        );
        assert!(head.ends_with(" GMT\r\n\r\n"), "{head}");
        let head = response_head(StatusCode::NO_CONTENT, &HeaderMap::new(), 0, true);
        let head = String::from_utf8(head).unwrap();
        assert!(
            head.starts_with("HTTP/1.1 204 No Content\r\nconnection: close\r\ndate: "),
            "{head}"
        );
    }

    /// A body that arrives slowly holds about what arrived, not what the head announced.
    #[tokio::test]
    async fn body_buffers_grow_with_what_arrives() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let announced = 1_000_000;
        client.write_all(&[b'x'; 10]).await.unwrap();
        let mut body = Vec::new();
        let partial = tokio::time::timeout(
            Duration::from_millis(50),
            read_body(&mut server, announced, &mut body),
        )
        .await;
        assert!(partial.is_err(), "the rest of the body never came");
        assert_eq!(body.len(), 10);
        assert!(body.capacity() <= BODY_CHUNK, "{}", body.capacity());
        // The whole body: read exactly, in a buffer no larger than announced.
        let mut body = Vec::new();
        let sender = tokio::spawn(async move {
            for _ in 0..100 {
                client.write_all(&[b'y'; 10_000]).await.unwrap();
            }
            client
        });
        read_body(&mut server, announced, &mut body).await.unwrap();
        assert_eq!(body.len(), announced);
        assert!(body.capacity() <= announced);
        drop(sender.await.unwrap());
        // A peer that goes away early is an error.
        let (client, mut server) = tokio::io::duplex(1024);
        drop(client);
        let mut body = Vec::new();
        assert!(read_body(&mut server, 10, &mut body).await.is_err());
    }

    #[test]
    fn http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(1_795_478_400), "Tue, 24 Nov 2026 00:00:00 GMT");
        assert_eq!(http_date(4_107_628_799), "Mon, 01 Mar 2100 23:59:59 GMT");
    }
}
