//! [`FrameCodec`]: the `tokio_util::codec` pair for wire protocol v1.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::wire::{Frame, FrameKind, Header, HEADER_LEN};
use crate::FrameError;

/// Default limit on a frame's topic and payload together: 64 MiB.
///
/// Large enough for any message that belongs on a message bus, small enough that a
/// corrupt or hostile length prefix cannot make a peer reserve gigabytes.
pub const DEFAULT_MAX_FRAME_LEN: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy)]
enum DecodeState {
    /// Waiting for the 20 header bytes.
    Head,
    /// Header parsed; waiting for its body.
    Body(Header),
    /// Passing over this many more bytes of an oversized frame's body.
    Skip(u64),
}

/// Decodes and encodes frames of wire protocol v1.
///
/// The decoder is sans-IO: it takes whatever bytes have arrived and yields each complete
/// frame, keeping a parsed header across partial reads. Lengths are checked against
/// [`max_frame_len`](FrameCodec::max_frame_len) before anything is reserved for them, and
/// only a frame body that has started to arrive is reserved for; how much more to read
/// is the reader's choice.
/// Decoded topics and payloads are slices of the read buffer, not copies.
///
/// # Example
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use msg::wire::{Frame, FrameCodec, FrameKind};
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = FrameCodec::new();
/// let mut buf = BytesMut::new();
/// let frame = Frame::new(FrameKind::Request, 7, Bytes::from_static(b"hello"));
/// codec.encode(frame.clone(), &mut buf).unwrap();
///
/// // Bytes may arrive in any pieces: nothing is yielded until a frame is whole.
/// let mut rx = buf.split_to(9);
/// assert_eq!(codec.decode(&mut rx).unwrap(), None);
/// rx.unsplit(buf);
/// assert_eq!(codec.decode(&mut rx).unwrap(), Some(frame));
/// ```
#[derive(Debug, Clone)]
pub struct FrameCodec {
    state: DecodeState,
    max_frame_len: usize,
    /// Frames of this kind over the limit, up to this length, are skipped rather than
    /// refused.
    skip: Option<(FrameKind, usize)>,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new()
    }
}

impl FrameCodec {
    /// A codec with the default limit, [`DEFAULT_MAX_FRAME_LEN`].
    pub const fn new() -> Self {
        FrameCodec::with_max_frame_len(DEFAULT_MAX_FRAME_LEN)
    }

    /// A codec that refuses frames whose topic and payload exceed `max_frame_len` bytes.
    pub const fn with_max_frame_len(max_frame_len: usize) -> Self {
        FrameCodec {
            state: DecodeState::Head,
            max_frame_len,
            skip: None,
        }
    }

    /// Skips, rather than refuses, a frame of `kind` over the limit and at most `up_to`
    /// bytes long: decoding it fails with [`FrameError::Oversized`] (its kind, id and
    /// length), which the caller may answer, and the next calls pass over its body as it
    /// arrives, without keeping or reserving any of it, then decode the frames after it. A
    /// frame of `kind` longer than `up_to` fails with `Oversized` too, not `skipped`, and
    /// is not consumed: passing over it would cost more than the connection is worth. A
    /// server uses it for requests, so that one request too large costs the client only
    /// that request.
    ///
    /// # Example
    ///
    /// ```
    /// use bytes::{Bytes, BytesMut};
    /// use msg::wire::{Frame, FrameCodec, FrameError, FrameKind};
    /// use tokio_util::codec::{Decoder, Encoder};
    ///
    /// let mut buf = BytesMut::new();
    /// let mut sender = FrameCodec::new();
    /// sender.encode(Frame::new(FrameKind::Request, 1, Bytes::from(vec![0; 64])), &mut buf).unwrap();
    /// sender.encode(Frame::new(FrameKind::Request, 2, Bytes::from("ok")), &mut buf).unwrap();
    ///
    /// let mut codec = FrameCodec::with_max_frame_len(16);
    /// codec.skip_oversized(FrameKind::Request, 1024);
    /// assert!(matches!(
    ///     codec.decode(&mut buf),
    ///     Err(FrameError::Oversized { id: 1, len: 64, max: 16, skipped: true, .. })
    /// ));
    /// assert_eq!(codec.decode(&mut buf).unwrap().unwrap().id, 2);
    /// ```
    pub fn skip_oversized(&mut self, kind: FrameKind, up_to: usize) {
        self.skip = Some((kind, up_to));
    }

    /// The limit on a frame's topic and payload together.
    pub const fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// How many more bytes the frame being decoded needs, once its header has been read;
    /// `buffered` is how much of it the buffer holds. A reader uses this to make room for
    /// the whole body at once.
    pub fn missing(&self, buffered: usize) -> Option<usize> {
        match self.state {
            DecodeState::Head | DecodeState::Skip(_) => None,
            DecodeState::Body(header) => Some(header.body_len().saturating_sub(buffered)),
        }
    }

    fn decode_head(&mut self, src: &mut BytesMut) -> Result<Option<Header>, FrameError> {
        let Some(head) = src.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let header = Header::decode(head)?;
        let body = header.body_len();
        if body > self.max_frame_len {
            if let Some((kind, up_to)) = self.skip.filter(|(kind, _)| *kind == header.kind) {
                let skipped = body <= up_to;
                if skipped {
                    src.advance(HEADER_LEN);
                    self.state = DecodeState::Skip(body as u64);
                }
                return Err(FrameError::Oversized {
                    kind,
                    id: header.id,
                    len: body as u64,
                    max: self.max_frame_len,
                    skipped,
                });
            }
            return Err(FrameError::TooLarge {
                len: body as u64,
                max: self.max_frame_len,
            });
        }
        src.advance(HEADER_LEN);
        Ok(Some(header))
    }

    fn decode_body(&mut self, header: Header, src: &mut BytesMut) -> Option<Frame> {
        let body = header.body_len();
        if src.len() < body {
            // The length was checked against the limit when the header was parsed.
            src.reserve(body - src.len());
            return None;
        }
        let mut body = src.split_to(body).freeze();
        let topic = body.split_to(header.topic_len as usize);
        Some(Frame {
            kind: header.kind,
            flags: header.flags,
            encoding: header.encoding,
            id: header.id,
            topic,
            payload: body,
        })
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if let DecodeState::Skip(left) = self.state {
            let n = usize::try_from(left).unwrap_or(usize::MAX).min(src.len());
            src.advance(n);
            let left = left - n as u64;
            if left > 0 {
                self.state = DecodeState::Skip(left);
                return Ok(None);
            }
            self.state = DecodeState::Head;
        }
        let header = match self.state {
            DecodeState::Head => match self.decode_head(src)? {
                Some(header) => header,
                None => return Ok(None),
            },
            DecodeState::Body(header) => header,
            // Passed over above, or set just now by a skip that returned.
            DecodeState::Skip(_) => return Ok(None),
        };
        match self.decode_body(header, src) {
            Some(frame) => {
                self.state = DecodeState::Head;
                Ok(Some(frame))
            }
            None => {
                self.state = DecodeState::Body(header);
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() && matches!(self.state, DecodeState::Head) => Ok(None),
            None => Err(FrameError::Truncated {
                buffered: buf.len()
                    + match self.state {
                        DecodeState::Head | DecodeState::Skip(_) => 0,
                        DecodeState::Body(_) => HEADER_LEN,
                    },
            }),
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let header = frame.header(self.max_frame_len)?;
        dst.reserve(HEADER_LEN + header.body_len());
        header.encode(dst);
        dst.extend_from_slice(&frame.topic);
        dst.extend_from_slice(&frame.payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, Bytes};
    use proptest::prelude::*;

    use super::*;
    use crate::wire::{FrameKind, MAGIC, VERSION};
    use crate::Encoding;

    fn raw_header(kind: u8, topic_len: u16, payload_len: u32) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_u16(MAGIC);
        buf.put_u8(VERSION);
        buf.put_u8(kind);
        buf.put_u8(0);
        buf.put_u8(0);
        buf.put_u16(topic_len);
        buf.put_u64(1);
        buf.put_u32(payload_len);
        buf
    }

    fn encoded(frame: &Frame) -> BytesMut {
        let mut buf = BytesMut::new();
        FrameCodec::new().encode(frame.clone(), &mut buf).unwrap();
        buf
    }

    #[test]
    fn an_oversized_frame_of_the_kind_skipped_is_passed_over_in_pieces() {
        let big = Frame::new(FrameKind::Request, 7, Bytes::from(vec![b'x'; 1000]));
        let next = Frame::new(FrameKind::Request, 8, Bytes::from_static(b"next"));
        let mut bytes = encoded(&big);
        bytes.extend_from_slice(&encoded(&next));
        let mut codec = FrameCodec::with_max_frame_len(100);
        codec.skip_oversized(FrameKind::Request, 1000);
        let mut src = BytesMut::new();
        let mut out = Vec::new();
        for piece in bytes.chunks(33) {
            src.extend_from_slice(piece);
            loop {
                match codec.decode(&mut src) {
                    Ok(Some(frame)) => out.push(Ok(frame)),
                    Ok(None) => break,
                    Err(e) => out.push(Err(e)),
                }
            }
            // Nothing of the skipped body is kept, nor room made for it.
            assert!(src.len() < 100, "{} bytes held", src.len());
            assert!(codec.missing(src.len()).unwrap_or(0) <= 100);
        }
        assert!(matches!(
            out[0],
            Err(FrameError::Oversized {
                id: 7,
                len: 1000,
                max: 100,
                skipped: true,
                ..
            })
        ));
        assert!(matches!(&out[1], Ok(frame) if frame == &next));
        assert_eq!(out.len(), 2);
        // Longer than the codec skips: refused, and left where it is.
        let mut src = encoded(&Frame::new(
            FrameKind::Request,
            9,
            Bytes::from(vec![0; 1001]),
        ));
        for _ in 0..2 {
            assert!(matches!(
                codec.decode(&mut src),
                Err(FrameError::Oversized {
                    id: 9,
                    skipped: false,
                    ..
                })
            ));
        }
        // Another kind over the limit is still refused.
        let mut src = encoded(&Frame::new(
            FrameKind::Response,
            1,
            Bytes::from(vec![0; 1000]),
        ));
        assert!(matches!(
            codec.decode(&mut src),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn read_incomplete_head_then_body() {
        let frame = Frame::new(FrameKind::Response, 42, Bytes::from_static(b"world"));
        let bytes = encoded(&frame);
        let mut codec = FrameCodec::new();
        let mut src = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            src.put_u8(*b);
            let out = codec.decode(&mut src).unwrap();
            if i + 1 < bytes.len() {
                assert_eq!(out, None, "frame yielded early at byte {i}");
            } else {
                assert_eq!(out, Some(frame.clone()));
            }
        }
        assert!(src.is_empty());
    }

    #[test]
    fn read_max_frame_len_refuses_before_reserving() {
        let mut codec = FrameCodec::new();
        let mut src = raw_header(FrameKind::Request as u8, 0, u32::MAX);
        let cap_before = src.capacity();
        match codec.decode(&mut src) {
            Err(FrameError::TooLarge { len, max }) => {
                assert_eq!(len, u64::from(u32::MAX));
                assert_eq!(max, DEFAULT_MAX_FRAME_LEN);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(
            src.capacity() <= cap_before.max(64),
            "reserved for a refused frame"
        );
    }

    #[test]
    fn read_frame_at_exactly_the_limit() {
        let mut codec = FrameCodec::with_max_frame_len(8);
        let mut src = raw_header(FrameKind::Publish as u8, 3, 5);
        src.extend_from_slice(b"abcHELLO");
        let frame = codec.decode(&mut src).unwrap().unwrap();
        assert_eq!(&frame.topic[..], b"abc");
        assert_eq!(&frame.payload[..], b"HELLO");
        let mut src = raw_header(FrameKind::Publish as u8, 3, 6);
        assert!(matches!(
            codec.decode(&mut src),
            Err(FrameError::TooLarge { len: 9, max: 8 })
        ));
    }

    #[test]
    fn read_unknown_version_kind_flags_and_magic() {
        let mut codec = FrameCodec::new();
        let mut v2 = raw_header(FrameKind::Request as u8, 0, 0);
        v2[2] = 2;
        assert!(matches!(
            codec.decode(&mut v2),
            Err(FrameError::UnsupportedVersion { version: 2, .. })
        ));
        let mut kind = raw_header(0x7f, 0, 0);
        assert!(matches!(
            codec.decode(&mut kind),
            Err(FrameError::UnknownKind { kind: 0x7f })
        ));
        let mut flags = raw_header(FrameKind::Request as u8, 0, 0);
        flags[4] = 0x80;
        assert!(matches!(
            codec.decode(&mut flags),
            Err(FrameError::ReservedFlags { flags: 0x80 })
        ));
        let mut magic = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n"[..]);
        assert!(matches!(
            codec.decode(&mut magic),
            Err(FrameError::BadMagic { .. })
        ));
        let mut topic = raw_header(FrameKind::Response as u8, 1, 0);
        assert!(matches!(
            codec.decode(&mut topic),
            Err(FrameError::BadTopic(_))
        ));
    }

    #[test]
    fn missing_tells_how_much_of_a_started_body_is_still_to_come() {
        let frame = Frame::new(FrameKind::Request, 1, Bytes::from(vec![1u8; 100]));
        let bytes = encoded(&frame);
        let mut codec = FrameCodec::new();
        let mut src = BytesMut::from(&bytes[..10]);
        assert_eq!(codec.decode(&mut src).unwrap(), None);
        assert_eq!(codec.missing(src.len()), None, "header not read yet");
        src.extend_from_slice(&bytes[10..50]);
        assert_eq!(codec.decode(&mut src).unwrap(), None);
        assert_eq!(codec.missing(src.len()), Some(70));
        src.extend_from_slice(&bytes[50..]);
        assert_eq!(codec.decode(&mut src).unwrap(), Some(frame));
        assert_eq!(codec.missing(src.len()), None);
    }

    #[test]
    fn read_truncated_frame_at_eof() {
        let frame = Frame::new(FrameKind::Request, 1, Bytes::from_static(b"payload"));
        let bytes = encoded(&frame);
        for cut in 1..bytes.len() {
            let mut codec = FrameCodec::new();
            let mut src = BytesMut::from(&bytes[..cut]);
            assert!(
                matches!(
                    codec.decode_eof(&mut src),
                    Err(FrameError::Truncated { buffered }) if buffered == cut
                ),
                "cut at {cut}"
            );
        }
        let mut codec = FrameCodec::new();
        assert_eq!(codec.decode_eof(&mut BytesMut::new()).unwrap(), None);
    }

    #[test]
    fn encode_refuses_oversize_payload() {
        let mut codec = FrameCodec::with_max_frame_len(4);
        let frame = Frame::new(FrameKind::Request, 1, Bytes::from_static(b"12345"));
        let mut dst = BytesMut::new();
        assert!(matches!(
            codec.encode(frame, &mut dst),
            Err(FrameError::TooLarge { len: 5, max: 4 })
        ));
        assert!(dst.is_empty(), "nothing written for a refused frame");
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        (
            proptest::sample::select(FrameKind::ALL.to_vec()),
            any::<u8>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(any::<u8>(), 0..2048),
        )
            .prop_map(|(kind, enc, id, topic, payload)| Frame {
                kind,
                flags: crate::wire::Flags::NONE,
                encoding: Encoding::from_code(enc),
                id,
                topic: if kind.has_topic() {
                    Bytes::from(topic)
                } else {
                    Bytes::new()
                },
                payload: Bytes::from(payload),
            })
    }

    proptest! {
        #[test]
        fn any_frames_round_trip_in_any_pieces(
            frames in proptest::collection::vec(arb_frame(), 1..8),
            chunk in 1usize..300,
        ) {
            let mut wire = BytesMut::new();
            let mut codec = FrameCodec::new();
            for f in &frames {
                codec.encode(f.clone(), &mut wire).unwrap();
            }
            let mut src = BytesMut::new();
            let mut out = Vec::new();
            for piece in wire.chunks(chunk) {
                src.extend_from_slice(piece);
                while let Some(f) = codec.decode(&mut src).unwrap() {
                    out.push(f);
                }
            }
            prop_assert_eq!(codec.decode_eof(&mut src).unwrap(), None);
            prop_assert_eq!(out, frames);
        }

        #[test]
        fn any_bytes_yield_frames_or_a_typed_error(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            with_magic in any::<bool>(),
        ) {
            let mut src = BytesMut::new();
            if with_magic {
                // Give the fuzz a chance to get past the magic and version checks.
                src.put_u16(MAGIC);
                src.put_u8(VERSION);
            }
            src.extend_from_slice(&bytes);
            let mut codec = FrameCodec::with_max_frame_len(1024);
            for _ in 0..=bytes.len() {
                match codec.decode(&mut src) {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
            prop_assert!(src.capacity() <= 4096, "capacity {} grew past the limit", src.capacity());
        }

        #[test]
        fn oversize_lengths_are_refused_without_allocating(
            topic_len in any::<u16>(),
            payload_len in any::<u32>(),
            max in 0usize..100_000,
        ) {
            let mut codec = FrameCodec::with_max_frame_len(max);
            let mut src = raw_header(FrameKind::Publish as u8, topic_len, payload_len);
            let total = topic_len as usize + payload_len as usize;
            match codec.decode(&mut src) {
                Err(FrameError::TooLarge { len, .. }) => {
                    prop_assert!(total > max);
                    prop_assert_eq!(len, total as u64);
                }
                Ok(None) => {
                    prop_assert!(total <= max);
                    prop_assert!(src.capacity() < HEADER_LEN + max + 64);
                }
                Ok(Some(f)) => prop_assert_eq!(total, 0, "frame {:?}", f),
                Err(e) => prop_assert!(false, "unexpected error {}", e),
            }
        }
    }
}
