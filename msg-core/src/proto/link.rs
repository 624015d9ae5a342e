//! [`Link`]: the prelude every role shares, sans-IO.

use std::io::IoSlice;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::{
    wire::Flags, Beat, Encoding, Frame, FrameCodec, FrameError, FrameKind, Heartbeat,
    HeartbeatConfig, Message, WriteBuf,
};

/// The bytes a connection may have waiting to be written before its driver stops taking
/// more work (requests to send, replies, publications, acks to owe): one bound, for every
/// role, so that a peer that stops reading holds a connection at this much, not at what it
/// is sent.
pub const WRITE_HIGH_WATER: usize = 1024 * 1024;

/// The peer was silent past the heartbeat's timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerSilent {
    /// The timeout it was silent for.
    pub after: Duration,
}

/// One connection's framing and liveness: the frame codec, the write buffer, and the
/// heartbeat. Pings are answered and pongs absorbed here, so the roles never see either.
///
/// The driver owns the read buffer and the clock: it hands [`decode`](Self::decode) what
/// it read, says when bytes arrived ([`heard`](Self::heard)), calls
/// [`handle_timeout`](Self::handle_timeout) once [`poll_timeout`](Self::poll_timeout) has
/// passed, and writes out what is queued ([`io_slices`](Self::io_slices),
/// [`advance`](Self::advance)).
#[derive(Debug)]
pub struct Link {
    codec: FrameCodec,
    wbuf: WriteBuf,
    heartbeat: Option<Heartbeat>,
    /// Bytes arrived since the heartbeat's last tick.
    heard: bool,
    /// The peer closed its side.
    eof: bool,
}

impl Link {
    /// A link that refuses frames, either way, larger than `max_frame_len`.
    pub fn new(max_frame_len: usize) -> Self {
        Link {
            codec: FrameCodec::with_max_frame_len(max_frame_len),
            wbuf: WriteBuf::new(max_frame_len),
            heartbeat: None,
            heard: false,
            eof: false,
        }
    }

    /// The frame limit.
    pub fn max_frame_len(&self) -> usize {
        self.codec.max_frame_len()
    }

    /// Skips, rather than refuses, a received frame of `kind` over the limit and at most
    /// `up_to` bytes long: see [`FrameCodec::skip_oversized`]. [`decode`](Self::decode)
    /// fails with [`FrameError::Oversized`] for it, and may be called again if it was
    /// skipped.
    pub fn skip_oversized(&mut self, kind: FrameKind, up_to: usize) {
        self.codec.skip_oversized(kind, up_to);
    }

    /// The peer receives frames of at most `max` bytes (it said so in the handshake):
    /// frames over it are refused when queued, as frames over this side's own limit are.
    pub fn limit_writes(&mut self, max: usize) {
        self.wbuf.limit(max);
    }

    /// Starts the heartbeat at `now` (after the handshake); `None` leaves it off.
    pub fn start_heartbeat(&mut self, config: Option<HeartbeatConfig>, now: Instant) {
        self.heartbeat = config.map(|config| Heartbeat::new(config, now));
    }

    /// Bytes arrived from the peer: a sign of life.
    #[inline]
    pub fn heard(&mut self) {
        self.heard = true;
    }

    /// The peer closed its side: [`decode`](Self::decode) fails on a frame left half-read.
    pub fn set_eof(&mut self) {
        self.eof = true;
    }

    /// Whether the peer closed its side.
    pub fn at_eof(&self) -> bool {
        self.eof
    }

    /// How many more bytes the frame at the start of `buffered` needs, if its header is
    /// there: what a driver should make room for before its next read.
    pub fn missing(&self, buffered: usize) -> Option<usize> {
        self.codec.missing(buffered)
    }

    /// The next frame in `rbuf` for the role, if a whole one is there. A ping is answered
    /// (the pong is queued) and a pong absorbed on the way.
    ///
    /// # Errors
    ///
    /// The peer broke the framing (bad magic, a frame over the limit, a frame cut by the
    /// end of the stream): the connection cannot go on.
    #[inline(always)]
    pub fn decode(&mut self, rbuf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        loop {
            let frame = if self.eof {
                self.codec.decode_eof(rbuf)
            } else {
                self.codec.decode(rbuf)
            }?;
            match frame {
                Some(frame) if frame.kind == FrameKind::Ping => {
                    self.control(FrameKind::Pong)?;
                }
                Some(frame) if frame.kind == FrameKind::Pong => {}
                frame => return Ok(frame),
            }
        }
    }

    /// The next frame in `rbuf`, whatever its kind, pings included: for the handshake,
    /// before which no ping is answered.
    pub fn decode_any(&mut self, rbuf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if self.eof {
            self.codec.decode_eof(rbuf)
        } else {
            self.codec.decode(rbuf)
        }
    }

    /// Whether bytes arrived since the heartbeat's last tick.
    pub fn heard_since_tick(&self) -> bool {
        self.heard
    }

    /// Gives back the write buffer's memory if nothing waits to be written: for a
    /// connection gone idle.
    pub fn shrink(&mut self) {
        self.wbuf.shrink();
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.heartbeat.as_ref().map(Heartbeat::deadline)
    }

    /// Runs the heartbeat at `now`, at or after [`poll_timeout`](Self::poll_timeout): queues
    /// a ping after an idle interval. `paused` says the driver stopped reading on purpose
    /// (its own back-pressure), which is not the peer's silence.
    ///
    /// # Errors
    ///
    /// [`PeerSilent`] once the peer has been silent for the timeout.
    pub fn handle_timeout(&mut self, now: Instant, paused: bool) -> Result<(), PeerSilent> {
        let Some(heartbeat) = self.heartbeat.as_mut() else {
            return Ok(());
        };
        let heard = std::mem::take(&mut self.heard);
        match heartbeat.tick(now, heard, paused) {
            Beat::Quiet => Ok(()),
            Beat::Ping => {
                // A bodiless frame always fits.
                let _ = self.control(FrameKind::Ping);
                Ok(())
            }
            Beat::Dead => Err(PeerSilent {
                after: heartbeat.config().timeout,
            }),
        }
    }

    /// Queues a bodiless frame of `kind`.
    fn control(&mut self, kind: FrameKind) -> Result<(), FrameError> {
        self.wbuf
            .push(kind, Encoding::IDENTITY, 0, b"", &Bytes::new())
    }

    /// Queues a frame; nothing is written until the driver takes it.
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLarge`] or [`FrameError::BadTopic`]: nothing is queued.
    #[inline]
    pub fn queue(
        &mut self,
        kind: FrameKind,
        encoding: Encoding,
        id: u64,
        topic: &[u8],
        payload: &Bytes,
    ) -> Result<(), FrameError> {
        self.wbuf.push(kind, encoding, id, topic, payload)
    }

    /// Queues `msg` as a frame of `kind`: the one Message-to-Frame conversion. A request
    /// carries the message's route in its topic field, and its metadata after the route
    /// if it has any; other kinds carry neither.
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLarge`], or [`FrameError::BadTopic`] for a route and metadata over
    /// [`MAX_METADATA_LEN`](crate::wire::MAX_METADATA_LEN): nothing is queued.
    #[inline]
    pub fn queue_message(
        &mut self,
        kind: FrameKind,
        id: u64,
        msg: &Message,
    ) -> Result<(), FrameError> {
        if kind != FrameKind::Request {
            return self.wbuf.push(kind, msg.encoding(), id, b"", msg.payload());
        }
        let metadata = msg.metadata();
        if !metadata.is_empty() {
            return self.queue_with_metadata(id, msg);
        }
        let route: &[u8] = msg.route().map_or(b"", |route| route.as_bytes());
        self.wbuf
            .push(kind, msg.encoding(), id, route, msg.payload())
    }

    /// Queues a request whose topic field carries its route and its metadata.
    #[cold]
    fn queue_with_metadata(&mut self, id: u64, msg: &Message) -> Result<(), FrameError> {
        let len = msg.metadata().encoded_len(msg.route());
        if len > crate::wire::MAX_METADATA_LEN {
            return Err(FrameError::BadTopic(
                "a request's route and metadata are longer than 8192 bytes",
            ));
        }
        let mut field = Vec::with_capacity(len);
        msg.metadata().encode(msg.route(), &mut field);
        self.wbuf.push_flagged(
            FrameKind::Request,
            Flags::METADATA,
            msg.encoding(),
            id,
            &field,
            msg.payload(),
        )
    }

    /// Queues a whole frame.
    pub fn queue_frame(&mut self, frame: &Frame) -> Result<(), FrameError> {
        self.wbuf.push_flagged(
            frame.kind,
            frame.flags,
            frame.encoding,
            frame.id,
            &frame.topic,
            &frame.payload,
        )
    }

    /// Queues a frame whose header and topic were encoded once for many connections, with
    /// `id` patched in.
    #[inline]
    pub fn queue_shared(&mut self, head: &crate::SharedHead, id: u64, payload: &Bytes) {
        self.wbuf.push_shared(head, id, payload);
    }

    /// Queues bytes already encoded as frames (a frame shared by many connections).
    pub fn queue_encoded(&mut self, bytes: Bytes) {
        self.wbuf.push_encoded(bytes);
    }

    /// Bytes queued and not yet written.
    #[inline]
    pub fn queued_len(&self) -> usize {
        self.wbuf.len()
    }

    /// Whether what waits to be written has reached [`WRITE_HIGH_WATER`].
    #[inline]
    pub fn over_high_water(&self) -> bool {
        self.wbuf.len() >= WRITE_HIGH_WATER
    }

    /// Fills `dst` with the next slices to write, and returns how many it filled.
    pub fn io_slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        self.wbuf.io_slices(dst)
    }

    /// How many slices [`io_slices`](Self::io_slices) would fill at most.
    pub fn slice_count(&self) -> usize {
        self.wbuf.slice_count()
    }

    /// `n` bytes were written.
    pub fn advance(&mut self, n: usize) {
        self.wbuf.advance(n);
    }

    /// Everything queued, as one buffer (for tests and in-memory peers: a driver writes
    /// the slices instead).
    pub fn take_transmit(&mut self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.wbuf.len());
        while !self.wbuf.is_empty() {
            let mut slices = [IoSlice::new(&[]); crate::MAX_IO_SLICES];
            let count = self.wbuf.io_slices(&mut slices);
            let mut n = 0;
            for slice in &slices[..count] {
                out.extend_from_slice(slice);
                n += slice.len();
            }
            self.wbuf.advance(n);
        }
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn frames(bytes: Bytes) -> Vec<Frame> {
        let mut rbuf = BytesMut::from(&bytes[..]);
        let mut codec = FrameCodec::new();
        std::iter::from_fn(|| codec.decode(&mut rbuf).unwrap()).collect()
    }

    #[test]
    fn a_ping_is_answered_with_a_pong_and_neither_reaches_the_role() {
        let mut peer = Link::new(1024);
        peer.control(FrameKind::Ping).unwrap();
        peer.control(FrameKind::Pong).unwrap();
        peer.queue(
            FrameKind::Request,
            Encoding::IDENTITY,
            1,
            b"",
            &Bytes::from("x"),
        )
        .unwrap();
        let mut link = Link::new(1024);
        let mut rbuf = BytesMut::from(&peer.take_transmit()[..]);
        let frame = link.decode(&mut rbuf).unwrap().unwrap();
        assert_eq!(frame.kind, FrameKind::Request);
        let sent = frames(link.take_transmit());
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].kind, FrameKind::Pong);
    }

    #[test]
    fn a_frame_cut_by_the_end_of_the_stream_is_an_error() {
        let mut peer = Link::new(1024);
        peer.queue(
            FrameKind::Request,
            Encoding::IDENTITY,
            1,
            b"",
            &Bytes::from("xyz"),
        )
        .unwrap();
        let bytes = peer.take_transmit();
        let mut rbuf = BytesMut::from(&bytes[..bytes.len() - 1]);
        let mut link = Link::new(1024);
        assert!(link.decode(&mut rbuf).unwrap().is_none());
        link.set_eof();
        assert!(matches!(
            link.decode(&mut rbuf),
            Err(FrameError::Truncated { .. })
        ));
    }

    #[test]
    fn a_silent_peer_is_pinged_then_given_up_and_a_heard_one_is_not() {
        let start = Instant::now();
        let mut link = Link::new(1024);
        assert_eq!(
            link.poll_timeout(),
            None,
            "no heartbeat before it is started"
        );
        link.start_heartbeat(Some(HeartbeatConfig::new(100 * MS, 300 * MS)), start);
        assert_eq!(link.poll_timeout(), Some(start + 100 * MS));
        link.handle_timeout(start + 100 * MS, false).unwrap();
        let sent = frames(link.take_transmit());
        assert_eq!(sent[0].kind, FrameKind::Ping);
        // Heard from: no ping, and not dead at the timeout.
        link.heard();
        link.handle_timeout(start + 200 * MS, false).unwrap();
        assert!(link.take_transmit().is_empty());
        link.handle_timeout(start + 300 * MS, false).unwrap();
        let dead = link.handle_timeout(start + 600 * MS, false);
        assert_eq!(dead, Err(PeerSilent { after: 300 * MS }));
    }

    #[test]
    fn a_paused_reader_never_gives_its_peer_up() {
        let start = Instant::now();
        let mut link = Link::new(1024);
        link.start_heartbeat(Some(HeartbeatConfig::new(100 * MS, 300 * MS)), start);
        for step in 1..=20 {
            assert!(link.handle_timeout(start + step * 100 * MS, true).is_ok());
        }
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_either_way() {
        let mut link = Link::new(8);
        let big = Bytes::from(vec![0u8; 9]);
        assert!(matches!(
            link.queue(FrameKind::Request, Encoding::IDENTITY, 1, b"", &big),
            Err(FrameError::TooLarge { len: 9, max: 8 })
        ));
        assert_eq!(link.queued_len(), 0);
        let mut peer = Link::new(64);
        peer.queue(FrameKind::Request, Encoding::IDENTITY, 1, b"", &big)
            .unwrap();
        let mut rbuf = BytesMut::from(&peer.take_transmit()[..]);
        assert!(matches!(
            link.decode(&mut rbuf),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
