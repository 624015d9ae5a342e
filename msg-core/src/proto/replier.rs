//! [`Replier`]: the server's side of request/reply.

use bytes::Bytes;

use super::{unexpected, Link};
use crate::wire::error_response_encoding;
use crate::wire::Flags;
use crate::{Code, Frame, FrameError, FrameKind, Message, Metadata, Route};

/// What a client sent.
#[derive(Debug)]
pub enum Incoming {
    /// A request, named by `id` for its answer.
    Request {
        /// The request's id on this connection.
        id: u64,
        /// The request, still encoded as its header says.
        msg: Message,
    },
    /// The client gave up on request `id`: drop its call, send nothing.
    Cancel {
        /// The request given up on.
        id: u64,
    },
}

/// The server's side of request/reply on one connection: tells requests from cancels, and
/// answers each request by its id, with its reply or with why it failed.
///
/// Rules: a replier receives only requests and cancels; an error message always reaches
/// the client, cut to what fits if it must be.
#[derive(Debug, Default)]
pub struct Replier {
    _private: (),
}

impl Replier {
    /// A replier.
    pub fn new() -> Self {
        Replier { _private: () }
    }

    /// What a received frame asks for. A request's route, if it names one, is in its
    /// message's headers.
    ///
    /// # Errors
    ///
    /// A frame a replier never receives, or a request whose route is not UTF-8.
    #[inline]
    pub fn receive(&mut self, frame: Frame) -> Result<Incoming, FrameError> {
        match frame.kind {
            FrameKind::Request => {
                let mut msg = Message::new(frame.payload).with_encoding(frame.encoding);
                if frame.flags.contains(Flags::METADATA) {
                    let (route, metadata) = Metadata::decode(frame.topic)?;
                    msg.set_route(route);
                    *msg.metadata_mut() = metadata;
                } else if !frame.topic.is_empty() {
                    // Its length was checked with the header, before the body was read.
                    let route =
                        Route::from_wire(frame.topic).map_err(|_| FrameError::Malformed {
                            kind: "request",
                            reason: "its route is not UTF-8",
                        })?;
                    msg.set_route(Some(route));
                }
                Ok(Incoming::Request { id: frame.id, msg })
            }
            FrameKind::Cancel => Ok(Incoming::Cancel { id: frame.id }),
            kind => Err(unexpected(kind)),
        }
    }

    /// Queues the reply to request `id`.
    ///
    /// # Errors
    ///
    /// The reply does not fit the frame limit: nothing is queued (answer with
    /// [`fail`](Self::fail) instead).
    #[inline]
    pub fn respond(&mut self, id: u64, reply: &Message, link: &mut Link) -> Result<(), FrameError> {
        link.queue_message(FrameKind::Response, id, reply)
    }

    /// Queues the go-away: the server processes the requests up to and including `last`,
    /// and none after it.
    pub fn go_away(&mut self, last: u64, link: &mut Link) {
        // A bodiless frame always fits.
        let _ = link.queue(
            FrameKind::GoAway,
            crate::Encoding::IDENTITY,
            last,
            b"",
            &Bytes::new(),
        );
    }

    /// Queues an error-response to request `id`, with `code` and `message` as its text;
    /// one too long for the frame limit is replaced by a short one, so the client always
    /// hears.
    pub fn fail(&mut self, id: u64, code: Code, message: &Bytes, link: &mut Link) {
        let encoding = error_response_encoding(code);
        if link
            .queue(FrameKind::ErrorResponse, encoding, id, b"", message)
            .is_err()
        {
            let _ = link.queue(
                FrameKind::ErrorResponse,
                encoding,
                id,
                b"",
                &Bytes::from_static(b"error"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    fn sent(link: &mut Link) -> Vec<Frame> {
        let mut rbuf = BytesMut::from(&link.take_transmit()[..]);
        let mut peer = Link::new(1 << 20);
        std::iter::from_fn(|| peer.decode(&mut rbuf).unwrap()).collect()
    }

    #[test]
    fn requests_and_cancels_are_told_apart_and_nothing_else_is_taken() {
        let mut rep = Replier::new();
        let request = Frame::new(FrameKind::Request, 7, Bytes::from("x"));
        assert!(matches!(
            rep.receive(request),
            Ok(Incoming::Request { id: 7, .. })
        ));
        let cancel = Frame::new(FrameKind::Cancel, 7, Bytes::new());
        assert!(matches!(
            rep.receive(cancel),
            Ok(Incoming::Cancel { id: 7 })
        ));
        for kind in [
            FrameKind::Response,
            FrameKind::Subscribe,
            FrameKind::Hello,
            FrameKind::GoAway,
        ] {
            assert!(matches!(
                rep.receive(Frame::new(kind, 1, Bytes::new())),
                Err(FrameError::Unexpected { .. })
            ));
        }
    }

    #[test]
    fn a_request_keeps_its_encoding_for_the_decoder() {
        let mut rep = Replier::new();
        let mut frame = Frame::new(FrameKind::Request, 1, Bytes::from("z"));
        frame.encoding = crate::Encoding::GZIP;
        let Ok(Incoming::Request { msg, .. }) = rep.receive(frame) else {
            panic!("a request")
        };
        assert_eq!(msg.encoding(), crate::Encoding::GZIP);
    }

    #[test]
    fn an_error_too_long_for_the_limit_still_reaches_the_client() {
        let (mut rep, mut link) = (Replier::new(), Link::new(16));
        rep.fail(3, Code::NotFound, &Bytes::from(vec![b'x'; 64]), &mut link);
        let frames = sent(&mut link);
        assert_eq!(frames.len(), 1);
        assert_eq!(
            crate::wire::error_response_code(frames[0].encoding),
            Code::NotFound,
            "the code survives the cut"
        );
        assert_eq!(
            (frames[0].kind, frames[0].id),
            (FrameKind::ErrorResponse, 3)
        );
        assert_eq!(frames[0].payload, "error");
    }

    #[test]
    fn a_go_away_names_the_last_request_processed() {
        let (mut rep, mut link) = (Replier::new(), Link::new(64));
        rep.go_away(41, &mut link);
        let frames = sent(&mut link);
        assert_eq!((frames[0].kind, frames[0].id), (FrameKind::GoAway, 41));
        assert!(frames[0].payload.is_empty());
    }

    #[test]
    fn a_reply_over_the_limit_is_refused_and_nothing_is_queued() {
        let (mut rep, mut link) = (Replier::new(), Link::new(4));
        assert!(rep
            .respond(1, &Message::from("too long"), &mut link)
            .is_err());
        assert_eq!(link.queued_len(), 0);
    }

    /// What `link` queued, as raw bytes.
    fn wire(link: &mut Link) -> BytesMut {
        BytesMut::from(&link.take_transmit()[..])
    }

    #[test]
    fn a_request_carries_its_route_in_the_topic_field_and_a_reply_carries_none() {
        use super::super::{Caller, Requester};
        let (mut client, mut server) = (Link::new(1024), Link::new(1024));
        let (mut req, mut rep) = (Requester::new(), Replier::new());
        let caller = Caller {
            slot: 0,
            generation: 1,
        };
        let msg = Message::from("42").with_route(Route::from_static("users.get"));
        req.send(caller, &msg, &mut client).unwrap();
        let mut bytes = wire(&mut client);
        assert_eq!(
            &bytes[6..8],
            &9u16.to_be_bytes(),
            "topic len is the route's"
        );
        let frame = server.decode(&mut bytes).unwrap().unwrap();
        let Ok(Incoming::Request { id, msg }) = rep.receive(frame) else {
            panic!("a request")
        };
        assert_eq!(msg.route().unwrap(), "users.get");
        assert_eq!(msg.payload(), "42");
        // Echoing the routed message back: the response goes without the route.
        rep.respond(id, &msg, &mut server).unwrap();
        let bytes = wire(&mut server);
        assert_eq!(&bytes[6..8], &[0, 0]);
        // No route: no topic, and none on arrival.
        req.send(caller, &Message::from("x"), &mut client).unwrap();
        let frame = server.decode(&mut wire(&mut client)).unwrap().unwrap();
        let Ok(Incoming::Request { msg, .. }) = rep.receive(frame) else {
            panic!("a request")
        };
        assert!(msg.route().is_none());
    }

    #[test]
    fn a_route_over_the_limit_is_refused_from_the_header_before_its_body_arrives() {
        let mut head = crate::wire::header_for(
            FrameKind::Request,
            crate::Encoding::IDENTITY,
            1,
            0,
            10,
            1024,
        )
        .unwrap()
        .to_bytes();
        head[6..8].copy_from_slice(&256u16.to_be_bytes());
        // Only the header has arrived: the route's length is refused already.
        let mut bytes = BytesMut::from(&head[..]);
        let mut server = Link::new(1 << 20);
        assert!(matches!(
            server.decode(&mut bytes),
            Err(FrameError::BadTopic(_))
        ));
        // And a sender refuses to queue one.
        let mut link = Link::new(1 << 20);
        assert!(matches!(
            link.queue(
                FrameKind::Request,
                crate::Encoding::IDENTITY,
                1,
                &[b'x'; 256],
                &Bytes::new()
            ),
            Err(FrameError::BadTopic(_))
        ));
        // 255 is the limit, and passes.
        assert!(link
            .queue(
                FrameKind::Request,
                crate::Encoding::IDENTITY,
                1,
                &[b'x'; 255],
                &Bytes::new()
            )
            .is_ok());
    }

    #[test]
    fn a_route_that_is_not_utf8_breaks_the_protocol() {
        let mut frame = Frame::new(FrameKind::Request, 1, Bytes::from("x"));
        frame.topic = Bytes::from_static(b"\xff\xfe");
        assert!(matches!(
            Replier::new().receive(frame),
            Err(FrameError::Malformed { .. })
        ));
    }

    #[test]
    fn a_request_carries_its_metadata_after_its_route_under_the_metadata_flag() {
        use super::super::{Caller, Requester};
        let (mut client, mut server) = (Link::new(1 << 16), Link::new(1 << 16));
        let (mut req, mut rep) = (Requester::new(), Replier::new());
        let caller = Caller {
            slot: 0,
            generation: 1,
        };
        for route in [Some(Route::from_static("users.get")), None] {
            let mut msg = Message::from("42")
                .with_metadata("x-api-key", "secret")
                .unwrap();
            msg.set_route(route.clone());
            req.send(caller, &msg, &mut client).unwrap();
            let mut bytes = wire(&mut client);
            assert_eq!(bytes[4], Flags::METADATA.bits(), "the flag is set");
            let frame = server.decode(&mut bytes).unwrap().unwrap();
            let Ok(Incoming::Request { id, msg }) = rep.receive(frame) else {
                panic!("a request")
            };
            assert_eq!(msg.route(), route.as_ref());
            assert_eq!(msg.metadata().get_str("x-api-key"), Some("secret"));
            assert_eq!(msg.payload(), "42");
            // The reply carries neither route nor metadata, and no flag.
            rep.respond(id, &msg, &mut server).unwrap();
            let bytes = wire(&mut server);
            assert_eq!((bytes[4], &bytes[6..8]), (0, &[0u8, 0][..]));
        }
        // Without metadata, no flag: what servers before metadata read.
        req.send(caller, &Message::from("x"), &mut client).unwrap();
        assert_eq!(wire(&mut client)[4], 0);
    }

    #[test]
    fn metadata_over_its_limit_is_refused_by_the_sender_and_from_the_receivers_header() {
        use super::super::{Caller, Requester};
        let mut client = Link::new(1 << 20);
        let caller = Caller {
            slot: 0,
            generation: 1,
        };
        let mut msg = Message::from("x");
        for i in 0..3 {
            msg.metadata_mut()
                .insert(format!("k{i}"), vec![b'v'; 4000])
                .unwrap();
        }
        assert!(matches!(
            Requester::new().send(caller, &msg, &mut client),
            Err(FrameError::BadTopic(_))
        ));
        assert_eq!(client.queued_len(), 0, "nothing queued");
        // A header announcing more than the limit is refused before its body arrives.
        let mut head = crate::wire::flagged_header(
            FrameKind::Request,
            Flags::METADATA,
            crate::Encoding::IDENTITY,
            1,
            1,
            0,
            1 << 20,
        )
        .unwrap()
        .to_bytes();
        head[6..8].copy_from_slice(&(crate::wire::MAX_METADATA_LEN as u16 + 1).to_be_bytes());
        assert!(matches!(
            Link::new(1 << 20).decode(&mut BytesMut::from(&head[..])),
            Err(FrameError::BadTopic(_))
        ));
        // The flag on another kind is a protocol error.
        head[3] = FrameKind::Response as u8;
        head[6..8].copy_from_slice(&[0, 0]);
        assert!(matches!(
            Link::new(1 << 20).decode(&mut BytesMut::from(&head[..])),
            Err(FrameError::ReservedFlags { flags: 1 })
        ));
    }
}
