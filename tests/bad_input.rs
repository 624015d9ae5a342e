//! Bad input over a real socket closes only the offending connection: garbage, a wrong
//! version, a 4 GiB length prefix, a wrong socket type, frames out of place.

use bytes::{BufMut, Bytes, BytesMut};
use msg::wire::{FrameKind, MAGIC};
use msg::{ReqSocket, SocketType, Tcp};
use msg_tests::{
    assert_closed_by_server, echo_server, encode, raw_client, read_frame, read_frame_buffered,
    request_frame, within,
};
use std::net::SocketAddr;
use tokio::io::AsyncWriteExt;

/// A well-behaved client that must be served normally around the bad one.
async fn good_client(addr: SocketAddr) -> ReqSocket<Tcp> {
    let mut req = ReqSocket::new(Tcp::default());
    within(req.connect(addr)).await.unwrap();
    assert_eq!(
        within(req.request(Bytes::from("before"))).await.unwrap(),
        "before"
    );
    req
}

async fn assert_still_served(req: &ReqSocket<Tcp>, addr: SocketAddr) {
    assert_eq!(
        within(req.request(Bytes::from("after"))).await.unwrap(),
        "after"
    );
    let fresh = good_client(addr).await;
    assert_eq!(
        within(fresh.request(Bytes::from("new"))).await.unwrap(),
        "new"
    );
}

fn header(version: u8, kind: u8, payload_len: u32) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u16(MAGIC);
    buf.put_u8(version);
    buf.put_u8(kind);
    buf.put_u8(0);
    buf.put_u8(0);
    buf.put_u16(0);
    buf.put_u64(1);
    buf.put_u32(payload_len);
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_a_handshake_closes_only_that_connection() {
    let addr = echo_server().await;
    let good = good_client(addr).await;
    let mut bad = tokio::net::TcpStream::connect(addr).await.unwrap();
    bad.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let answer = read_frame(&mut bad).await.expect("a reject frame");
    assert_eq!(answer.kind, FrameKind::Reject);
    assert_closed_by_server(&mut bad).await;
    assert_still_served(&good, addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_handshake_closes_only_that_connection() {
    let addr = echo_server().await;
    let good = good_client(addr).await;
    let mut bad = raw_client(addr, SocketType::Req).await.unwrap();
    bad.write_all(&[0xde; 64]).await.unwrap();
    assert_closed_by_server(&mut bad).await;
    assert_still_served(&good, addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_version_is_rejected_with_a_reason() {
    let addr = echo_server().await;
    let good = good_client(addr).await;
    let mut bad = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut hello = header(9, FrameKind::Hello as u8, 2);
    hello.extend_from_slice(&[SocketType::Req as u8, 0]);
    bad.write_all(&hello).await.unwrap();
    let answer = read_frame(&mut bad).await.expect("a reject frame");
    assert_eq!(answer.kind, FrameKind::Reject);
    let reason = String::from_utf8_lossy(&answer.payload).into_owned();
    assert!(reason.contains("version 9"), "reason: {reason}");
    assert_closed_by_server(&mut bad).await;

    // A wrong version after the handshake closes the connection too.
    let mut bad = raw_client(addr, SocketType::Req).await.unwrap();
    bad.write_all(&header(2, FrameKind::Request as u8, 0))
        .await
        .unwrap();
    assert_closed_by_server(&mut bad).await;
    assert_still_served(&good, addr).await;
}

/// That nothing is allocated for it is measured in `tests/memory.rs`
/// (`a_4_gib_length_prefix_is_refused_without_allocating_it`), under a counting allocator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_gib_length_prefix_closes_only_that_connection() {
    let addr = echo_server().await;
    let good = good_client(addr).await;
    for _ in 0..3 {
        let mut bad = raw_client(addr, SocketType::Req).await.unwrap();
        bad.write_all(&header(1, FrameKind::Request as u8, u32::MAX))
            .await
            .unwrap();
        assert_closed_by_server(&mut bad).await;
    }
    assert_still_served(&good, addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_socket_type_is_rejected_clearly() {
    let addr = echo_server().await;
    let answer = raw_client(addr, SocketType::Sub)
        .await
        .expect_err("a sub must be refused");
    assert_eq!(answer.kind, FrameKind::Reject);
    let reason = String::from_utf8_lossy(&answer.payload).into_owned();
    assert!(
        reason.contains("sub") && reason.contains("rep"),
        "reason: {reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kind_and_out_of_place_frames_close_the_connection() {
    let addr = echo_server().await;
    let good = good_client(addr).await;

    let mut bad = raw_client(addr, SocketType::Req).await.unwrap();
    bad.write_all(&header(1, 0x7e, 0)).await.unwrap();
    assert_closed_by_server(&mut bad).await;

    let mut bad = raw_client(addr, SocketType::Req).await.unwrap();
    let mut response = request_frame(5, b"not a request");
    response.kind = FrameKind::Response;
    bad.write_all(&encode(response)).await.unwrap();
    assert_closed_by_server(&mut bad).await;

    assert_still_served(&good, addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_requests_are_answered_by_id_and_a_truncated_frame_ends_quietly() {
    let addr = echo_server().await;
    let mut raw = raw_client(addr, SocketType::Req).await.unwrap();
    let mut burst = encode(request_frame(7, b"seven"));
    burst.extend_from_slice(&encode(request_frame(3, b"three")));
    raw.write_all(&burst).await.unwrap();
    let mut replies = Vec::new();
    let mut buf = BytesMut::new();
    for _ in 0..2 {
        let frame = read_frame_buffered(&mut raw, &mut buf)
            .await
            .expect("a reply");
        assert_eq!(frame.kind, FrameKind::Response);
        replies.push((frame.id, frame.payload));
    }
    replies.sort();
    assert_eq!(
        replies,
        vec![(3, Bytes::from("three")), (7, Bytes::from("seven"))]
    );

    // Half a frame, then the client hangs up: the server closes its side too.
    let half = encode(request_frame(8, b"cut short"));
    raw.write_all(&half[..half.len() - 3]).await.unwrap();
    raw.shutdown().await.unwrap();
    assert_closed_by_server(&mut raw).await;
    let good = good_client(addr).await;
    assert_still_served(&good, addr).await;
}
