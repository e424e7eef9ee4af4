//! Long-polling requests on raw HTTP/1.1 connections: the node's own polling loop (keep-alive, pipelining,
//! `Connection: close`, a parked GET whose client goes away) and the hand-over of a connection to hyper.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::WAIT;

const PATH: &str = "/socket.io/?EIO=4&transport=polling";

/// One response: status code, lower-cased head, body.
struct Reply {
    status: u16,
    head: String,
    body: String,
}

/// Reads one response with a `Content-Length` or chunked body from `stream`, keeping what follows in `buf`.
async fn read_reply(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Reply {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        fill(stream, buf).await;
    };
    let head = String::from_utf8(buf[..head_end].to_vec())
        .unwrap()
        .to_ascii_lowercase();
    buf.drain(..head_end);
    let status = head[9..12].parse().unwrap();
    let body = if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
    {
        let len: usize = len.trim().parse().unwrap();
        while buf.len() < len {
            fill(stream, buf).await;
        }
        buf.drain(..len).collect::<Vec<u8>>()
    } else if head.contains("transfer-encoding: chunked") {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                fill(stream, buf).await;
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap(), 16).unwrap();
            while buf.len() < line_end + 2 + size + 2 {
                fill(stream, buf).await;
            }
            body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
            buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                break body;
            }
        }
    } else {
        Vec::new()
    };
    Reply {
        status,
        head,
        body: String::from_utf8(body).unwrap(),
    }
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
        .await
        .expect("a reply in time")
        .unwrap();
    assert!(n > 0, "connection closed before a full reply");
    buf.extend_from_slice(&chunk[..n]);
}

async fn request(stream: &mut TcpStream, buf: &mut Vec<u8>, text: &str) -> Reply {
    stream.write_all(text.as_bytes()).await.unwrap();
    read_reply(stream, buf).await
}

fn get(sid: &str) -> String {
    format!("GET {PATH}&sid={sid} HTTP/1.1\r\nHost: t\r\n\r\n")
}

fn post(sid: &str, body: &str) -> String {
    format!(
        "POST {PATH}&sid={sid} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Opens an Engine.IO session on a fresh connection; returns the connection and the sid.
async fn open(addr: SocketAddr) -> (TcpStream, Vec<u8>, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let reply = request(
        &mut stream,
        &mut buf,
        &format!("GET {PATH} HTTP/1.1\r\nHost: t\r\n\r\n"),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(reply.head.contains("date: "), "{}", reply.head);
    let open: serde_json::Value = serde_json::from_str(&reply.body[1..]).unwrap();
    let sid = open["sid"].as_str().unwrap().to_owned();
    (stream, buf, sid)
}

#[tokio::test]
async fn polls_share_one_keep_alive_connection() {
    let node = common::start(|_| {}).await;
    let (mut stream, mut buf, sid) = open(node.local_addr()).await;
    for i in 0..3 {
        let ping = format!("2ping{i}");
        let reply = request(&mut stream, &mut buf, &post(&sid, &ping)).await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
        let reply = request(&mut stream, &mut buf, &get(&sid)).await;
        assert_eq!(reply.body, format!("3ping{i}"));
    }
    // Heads past the first peek (1 KiB) and past the largest this loop reads (8 KiB, then hyper's).
    for cookie in [3_000, 20_000] {
        let reply = request(&mut stream, &mut buf, &post(&sid, "2big")).await;
        assert_eq!(reply.body, "ok");
        let big_get = format!(
            "GET {PATH}&sid={sid} HTTP/1.1\r\nHost: t\r\nCookie: c={}\r\n\r\n",
            "x".repeat(cookie)
        );
        let reply = request(&mut stream, &mut buf, &big_get).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "3big"),
            "{cookie}"
        );
    }
    // Pipelined: both answers come, in order; `Connection: close` ends the connection after the second.
    let pipelined = format!(
        "{}GET {PATH}&sid={sid} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        post(&sid, "2last")
    );
    let first = request(&mut stream, &mut buf, &pipelined).await;
    assert_eq!(first.body, "ok");
    let second = read_reply(&mut stream, &mut buf).await;
    assert_eq!(second.body, "3last");
    assert!(second.head.contains("connection: close"), "{}", second.head);
    let mut rest = Vec::new();
    let n = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "the node closes the connection");
}

#[tokio::test]
async fn a_parked_get_ends_with_its_connection() {
    let node = common::start(|_| {}).await;
    let addr = node.local_addr();
    let (mut stream, _, sid) = open(addr).await;
    stream.write_all(get(&sid).as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(stream);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The session lives on and takes a new GET from another connection (not an overlapping poll).
    let mut other = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let reply = request(&mut other, &mut buf, &post(&sid, "2again")).await;
    assert_eq!(reply.body, "ok");
    let reply = request(&mut other, &mut buf, &get(&sid)).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "3again"));
}

#[tokio::test]
async fn other_requests_move_the_connection_to_hyper() {
    let node = common::start(|_| {}).await;
    let (mut stream, mut buf, sid) = open(node.local_addr()).await;
    // A chunked body is hyper's to read; the connection stays usable, now served by hyper.
    let chunked = format!(
        "POST {PATH}&sid={sid} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n2hyp\r\n0\r\n\r\n"
    );
    let reply = request(&mut stream, &mut buf, &chunked).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
    let reply = request(&mut stream, &mut buf, &get(&sid)).await;
    assert_eq!(reply.body, "3hyp");
    let reply = request(
        &mut stream,
        &mut buf,
        "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.contains("\"ok\":true"), "{}", reply.body);
    // A head that arrives in pieces goes to hyper too.
    let mut split = TcpStream::connect(node.local_addr()).await.unwrap();
    let mut split_buf = Vec::new();
    let text = post(&sid, "2split");
    let (a, b) = text.split_at(20);
    split.write_all(a.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let reply = request(&mut split, &mut split_buf, b).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
    let reply = request(&mut stream, &mut buf, &get(&sid)).await;
    assert_eq!(reply.body, "3split");
}
