//! Remote errors carry a code beside their text, over real sockets: the handler's
//! [`Status`] decides it, the server chooses it for what it refuses itself, and a peer from
//! before codes still reads the text and is read as `Internal`.

use std::fmt;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use msg::wire::{error_response_code, welcome_frame, Frame, FrameKind};
use msg::{
    serve, Code, Encoding, Error, Message, RepOptions, RepSocket, ReqSocket, Request, SocketType,
    Status, Tcp,
};
use msg_tests::{encode, raw_client, read_frame, read_frame_buffered, request_frame, within};
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;
use tower::{service_fn, BoxError};

/// A reply socket on loopback serving `handler` (over the default frame limit, or `options`).
async fn server<F, Fut>(options: RepOptions, handler: F) -> SocketAddr
where
    F: Fn(Request) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Bytes, BoxError>> + Send + 'static,
{
    let mut rep = RepSocket::with_options(Tcp::default(), options);
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    tokio::spawn(serve(rep, service_fn(handler)));
    addr
}

async fn client(addr: SocketAddr) -> ReqSocket<Tcp> {
    let mut req = ReqSocket::new(Tcp::default());
    within(req.connect(addr)).await.unwrap();
    req
}

/// The code and text of a remote error, or a panic naming what came instead.
fn remote(outcome: Result<impl fmt::Debug, Error>) -> (Code, String) {
    match outcome {
        Err(Error::Remote { code, message }) => (code, message),
        other => panic!("expected a remote error, got {other:?}"),
    }
}

/// An application error that keeps a [`Status`] as its source.
#[derive(Debug)]
struct Lookup(Status);

impl fmt::Display for Lookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lookup failed: {}", self.0)
    }
}

impl std::error::Error for Lookup {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_status_gives_the_client_its_code_and_any_other_error_internal() {
    let addr = server(RepOptions::default(), |req: Request| async move {
        match req.payload().as_ref() {
            b"status" => Err(Status::new(Code::NotFound, "no such key").into()),
            b"wrapped" => Err(Lookup(Status::new(Code::PermissionDenied, "not yours")).into()),
            b"custom" => Err(Status::new(Code::Other(200), "the application's own").into()),
            b"plain" => Err("it broke".into()),
            _ => Ok(Bytes::from("fine")),
        }
    })
    .await;
    let req = client(addr).await;
    let ask = |payload: &'static str| req.request(Bytes::from(payload));

    assert_eq!(
        remote(within(ask("status")).await),
        (Code::NotFound, "no such key".to_owned())
    );
    assert_eq!(
        remote(within(ask("wrapped")).await),
        (
            Code::PermissionDenied,
            "lookup failed: not yours".to_owned()
        )
    );
    assert_eq!(
        remote(within(ask("custom")).await),
        (Code::Other(200), "the application's own".to_owned())
    );
    assert_eq!(
        remote(within(ask("plain")).await),
        (Code::Internal, "it broke".to_owned())
    );
    assert_eq!(within(ask("ok")).await.unwrap(), "fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_server_cannot_decode_fails_with_invalid_argument() {
    let addr = server(RepOptions::default(), |req: Request| async move {
        Ok(req.payload().clone())
    })
    .await;
    let req = client(addr).await;
    // An encoding the server has no decoder for.
    let undecodable = Message::new(Bytes::from("x")).with_encoding(Encoding::custom(200).unwrap());
    let (code, message) = remote(within(req.send(undecodable)).await);
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert_eq!(
        within(req.request(Bytes::from("next"))).await.unwrap(),
        "next"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_over_the_servers_frame_limit_fails_with_resource_exhausted() {
    let options = RepOptions::default().max_frame_len(1024);
    let addr = server(options, |req: Request| async move {
        match req.payload().as_ref() {
            b"big" => Ok(Bytes::from(vec![7u8; 4096])),
            _ => Ok(req.payload().clone()),
        }
    })
    .await;
    let req = client(addr).await;
    let (code, message) = remote(within(req.request(Bytes::from("big"))).await);
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    assert_eq!(
        within(req.request(Bytes::from("small"))).await.unwrap(),
        "small"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_server_answers_with_a_status_or_an_error_and_the_client_gets_its_code() {
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(pending) = rep.next().await {
            let answered = match pending.payload().as_ref() {
                b"status" => pending.respond_status(Status::new(Code::Unavailable, "busy")),
                _ => pending.respond_error("no"),
            };
            answered.unwrap();
        }
    });
    let req = client(addr).await;
    assert_eq!(
        remote(within(req.request(Bytes::from("status"))).await),
        (Code::Unavailable, "busy".to_owned())
    );
    assert_eq!(
        remote(within(req.request(Bytes::from("error"))).await),
        (Code::Internal, "no".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_from_before_codes_reads_the_same_text_in_a_valid_frame() {
    let addr = server(RepOptions::default(), |_: Request| async move {
        Err(Status::new(Code::NotFound, "no such key").into())
    })
    .await;
    // The raw client decodes with the protocol-1 codec, as an old peer does.
    let mut old = within(raw_client(addr, SocketType::Req)).await.unwrap();
    old.write_all(&encode(request_frame(1, b"k")))
        .await
        .unwrap();
    let frame = within(read_frame(&mut old)).await.expect("an answer");
    assert_eq!(frame.kind, FrameKind::ErrorResponse);
    assert_eq!(frame.id, 1);
    assert!(frame.topic.is_empty());
    assert_eq!(frame.payload, "no such key");
    assert_eq!(error_response_code(frame.encoding), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_from_a_server_from_before_codes_reads_as_internal() {
    // A server that speaks protocol 1 by hand and answers every request with an
    // error-response whose encoding byte is 0, as servers before codes do.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        let hello = read_frame_buffered(&mut stream, &mut buf).await.unwrap();
        assert_eq!(hello.kind, FrameKind::Hello);
        stream
            .write_all(&encode(welcome_frame(SocketType::Rep)))
            .await
            .unwrap();
        while let Some(frame) = read_frame_buffered(&mut stream, &mut buf).await {
            if frame.kind == FrameKind::Request {
                let error = Frame::new(FrameKind::ErrorResponse, frame.id, Bytes::from("old"));
                stream.write_all(&encode(error)).await.unwrap();
            }
        }
    });
    let req = client(addr).await;
    assert_eq!(
        remote(within(req.request(Bytes::from("x"))).await),
        (Code::Internal, "old".to_owned())
    );
}
