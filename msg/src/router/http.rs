//! [`Router::into_axum`]: a router's handlers served over HTTP by axum (feature `axum`).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use msg_core::{Code, Encoding, Message, MetadataError, DEFAULT_MAX_FRAME_LEN};
use msg_layers::compression::Decoders;

use super::{AnyPeer, Router};
use crate::Request;

/// The peer of a request that came over HTTP from a server that does not say who sent it
/// (one not served with `into_make_service_with_connect_info::<SocketAddr>()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownPeer;

/// The HTTP status of a failure's code: `NotFound` 404, `InvalidArgument` 400,
/// `DeadlineExceeded` 504, any other 500.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The header a failure's code travels in, beside its status: `msg-code: not_found`.
pub const CODE_HEADER: &str = "msg-code";

/// The response of a failure: its status, its code in [`CODE_HEADER`], its text as the
/// body.
fn failure(code: Code, message: String) -> Response {
    let mut response = (http_status(code), message).into_response();
    response
        .headers_mut()
        .insert(CODE_HEADER, HeaderValue::from_static(code.name()));
    response
}

/// The encoding an HTTP `Content-Encoding` names, if msg has it.
fn encoding_of(name: &str) -> Option<Encoding> {
    Some(match name.trim() {
        "" | "identity" => Encoding::IDENTITY,
        "gzip" => Encoding::GZIP,
        "zstd" => Encoding::ZSTD,
        "snappy" => Encoding::SNAPPY,
        "lz4" => Encoding::LZ4,
        _ => return None,
    })
}

/// The `Content-Encoding` HTTP clients know for a reply's encoding; the others are
/// decoded before they leave.
fn http_encoding(encoding: Encoding) -> Option<&'static str> {
    match encoding {
        Encoding::GZIP => Some("gzip"),
        Encoding::ZSTD => Some("zstd"),
        _ => None,
    }
}

async fn call(
    State(router): State<Router>,
    Path(route): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let peer = match request.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(addr)) => AnyPeer::new(*addr),
        None => AnyPeer::new(UnknownPeer),
    };
    let (parts, body) = request.into_parts();
    let route = match msg_core::Route::new(route) {
        Ok(route) => route,
        Err(e) => return failure(Code::InvalidArgument, e.to_string()),
    };
    let payload = match axum::body::to_bytes(body, DEFAULT_MAX_FRAME_LEN).await {
        Ok(payload) => payload,
        Err(e) => return (StatusCode::PAYLOAD_TOO_LARGE, e.to_string()).into_response(),
    };
    let encoding = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .map_or(Some(Encoding::IDENTITY), |value| {
            value.to_str().ok().and_then(encoding_of)
        });
    let Some(encoding) = encoding else {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unknown content encoding",
        )
            .into_response();
    };
    let mut msg = Message::new(payload)
        .with_encoding(encoding)
        .with_route(route);
    if let Err(e) = carry_metadata(&parts.headers, &mut msg) {
        return failure(Code::InvalidArgument, e.to_string());
    }
    let msg = match Decoders::default().decode(msg, DEFAULT_MAX_FRAME_LEN) {
        Ok(msg) => msg,
        Err(e) => return failure(Code::InvalidArgument, e.to_string()),
    };
    match router.dispatch(Request::new(msg, peer)).await {
        Ok(reply) => response(reply, &parts.headers),
        Err(e) => failure(crate::status::code_of(&*e), e.to_string()),
    }
}

/// Carries the HTTP headers a msg client would send as metadata into the request's
/// metadata: `authorization` and every `x-*` header (an API key, a tenant, a trace id), so
/// that one check (a `from_fn` middleware reading `x-api-key`) serves both. The headers
/// a browser sends by itself (cookies, `accept`, `user-agent`) stay out.
fn carry_metadata(headers: &HeaderMap, msg: &mut Message) -> Result<(), MetadataError> {
    for (name, value) in headers {
        let name = name.as_str();
        if name == "authorization" || name.starts_with("x-") {
            msg.metadata_mut()
                .insert(name, Bytes::copy_from_slice(value.as_bytes()))?;
        }
    }
    msg.metadata().check(msg.route())
}

/// A reply as an HTTP response: `200 OK`, the payload as the body, and the content type
/// and encoding its headers say.
fn response(reply: Message, request: &HeaderMap) -> Response {
    let reply = match http_encoding(reply.encoding()) {
        Some(_) => reply,
        None => match Decoders::default().decode(reply, DEFAULT_MAX_FRAME_LEN) {
            Ok(reply) => reply,
            Err(e) => return failure(Code::Internal, e.to_string()),
        },
    };
    let content_type = match request.get(header::CONTENT_TYPE) {
        Some(value) if value.as_bytes().starts_with(b"application/json") => {
            HeaderValue::from_static("application/json")
        }
        _ => HeaderValue::from_static("application/octet-stream"),
    };
    let mut response = Response::new(Body::from(reply.payload().clone()));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    if let Some(name) = http_encoding(reply.encoding()) {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(name));
    }
    response
}

impl Router<()> {
    /// The router's routes as an [`axum::Router`] (feature `axum`): `POST /{route}` runs
    /// the handler of `route` with the request's body as the payload, and answers with
    /// the reply as the body. The same handlers then answer msg clients and HTTP clients;
    /// merge it into an axum app, or nest it under a path.
    ///
    /// - A request's `Content-Encoding` (gzip, zstd, snappy, lz4) is decoded before the
    ///   handler, as a msg server decodes by the encoding header; a reply gzip- or
    ///   zstd-encoded goes with that `Content-Encoding`, any other is decoded first.
    /// - The reply's `Content-Type` is `application/json` when the request's was, and
    ///   `application/octet-stream` otherwise.
    /// - A failure's code becomes the status ([`http_status`]: `NotFound` 404,
    ///   `InvalidArgument` 400, `DeadlineExceeded` 504, any other 500), with the code's
    ///   name in the [`CODE_HEADER`] header and its text as the body; a body over 64 MiB
    ///   is 413.
    /// - [`Peer<SocketAddr>`](crate::extract::Peer) is the HTTP client's address when the
    ///   app is served with `into_make_service_with_connect_info::<SocketAddr>()`;
    ///   otherwise the peer is [`UnknownPeer`]. [`Cancelled`](crate::extract::Cancelled)
    ///   fires when the HTTP client goes away before the reply.
    ///
    /// # Example
    ///
    /// ```
    /// use msg::Router;
    ///
    /// let router = Router::new().route("users.get", |id: String| async move { format!("user {id}") });
    /// let app: axum::Router = axum::Router::new()
    ///     .route("/health", axum::routing::get(|| async { "ok" }))
    ///     .merge(router.into_axum());
    /// # let _ = app;
    /// ```
    pub fn into_axum<S: Clone + Send + Sync + 'static>(self) -> axum::Router<S> {
        axum::Router::new()
            .route("/{route}", axum::routing::post(call))
            .with_state(self)
    }
}
