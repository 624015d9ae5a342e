//! [`Replier`]: the server's side of request/reply.

use bytes::Bytes;

use super::{unexpected, Link};
use crate::wire::error_response_encoding;
use crate::{Code, Frame, FrameError, FrameKind, Message};

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

    /// What a received frame asks for.
    ///
    /// # Errors
    ///
    /// A frame a replier never receives.
    #[inline]
    pub fn receive(&mut self, frame: Frame) -> Result<Incoming, FrameError> {
        match frame.kind {
            FrameKind::Request => Ok(Incoming::Request {
                id: frame.id,
                msg: Message::new(frame.payload).with_encoding(frame.encoding),
            }),
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
}
