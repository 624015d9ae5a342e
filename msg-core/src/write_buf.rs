//! [`WriteBuf`]: frames queued for one vectored write.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

use crate::wire::{flagged_header, header_for, Flags, FrameKind, HEADER_LEN};
use crate::{Encoding, FrameError};

/// Payloads at least this long are written from their own buffer, beside the header,
/// instead of being copied into the coalescing buffer.
pub const COPY_THRESHOLD: usize = 4 * 1024;

/// The most slices handed to one vectored write (Linux's `UIO_MAXIOV` is 1024; past a few
/// dozen the gain is nil).
pub const MAX_IO_SLICES: usize = 64;

/// Where the id sits in the fixed header (see [`wire`](crate::wire)): bytes 8 to 16.
const ID_AT: std::ops::Range<usize> = 8..16;

/// A frame's header, encoded and checked once, and its topic, for a frame sent to many
/// receivers with an id of each one's own (a publication with each subscriber's sequence
/// number): [`WriteBuf::push_shared`] writes it with the id patched in. Nothing is
/// allocated: the header is held inline and the topic shared.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use msg_core::{Encoding, FrameKind, SharedHead, WriteBuf};
///
/// let payload = Bytes::from_static(b"97000");
/// let topic = Bytes::from_static(b"prices.eu");
/// let head = SharedHead::new(FrameKind::Publish, Encoding::IDENTITY, topic, payload.len(), 1 << 20).unwrap();
/// let mut one = WriteBuf::new(1 << 20);
/// let mut other = WriteBuf::new(1 << 20);
/// one.push_shared(&head, 7, &payload);
/// other.push(FrameKind::Publish, Encoding::IDENTITY, 7, b"prices.eu", &payload).unwrap();
/// assert_eq!(one.len(), other.len());
/// ```
#[derive(Debug, Clone)]
pub struct SharedHead {
    /// The header's first 8 bytes as they go on the wire (magic, version, kind, flags,
    /// encoding, topic length), held as a word: a byte array moved through a `Result`
    /// was copied a few unaligned bytes at a time, and read back across those stores.
    front: u64,
    /// Its last 4 bytes as they go on the wire: the payload's length.
    back: u32,
    topic: Bytes,
}

impl SharedHead {
    /// The header and topic of a frame of `kind` whose payload is `payload_len` bytes.
    ///
    /// # Errors
    ///
    /// As [`header_for`]: a topic that does not fit or a kind that carries none, or a frame
    /// larger than `max_frame_len`.
    pub fn new(
        kind: FrameKind,
        encoding: Encoding,
        topic: Bytes,
        payload_len: usize,
        max_frame_len: usize,
    ) -> Result<Self, FrameError> {
        let header = header_for(kind, encoding, 0, topic.len(), payload_len, max_frame_len)?;
        let bytes = header.to_bytes();
        let mut front = [0; 8];
        front.copy_from_slice(&bytes[..ID_AT.start]);
        let mut back = [0; 4];
        back.copy_from_slice(&bytes[ID_AT.end..]);
        Ok(SharedHead {
            front: u64::from_ne_bytes(front),
            back: u32::from_ne_bytes(back),
            topic,
        })
    }

    /// Header and topic together, in bytes.
    pub fn len(&self) -> usize {
        HEADER_LEN + self.topic.len()
    }

    /// Always false: a head holds at least the 20-byte header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Lets go of the topic, for a head kept to be written over: a recycled head holds
    /// no reference to the bytes it was made for.
    pub fn release(&mut self) {
        self.topic = Bytes::new();
    }
}

/// Frames queued to be written, laid out for one vectored write.
///
/// Headers and small payloads are copied side by side into one coalescing buffer, so a
/// burst of small frames leaves in a single write. A large payload is not copied: it stays
/// in its own [`Bytes`] and is written beside its header. The buffer is sans-IO: a driver
/// takes [`io_slices`](WriteBuf::io_slices), writes them, and reports back with
/// [`advance`](WriteBuf::advance).
///
/// # Example
///
/// ```
/// use std::io::IoSlice;
/// use bytes::Bytes;
/// use msg_core::{Encoding, FrameKind, WriteBuf};
///
/// let mut buf = WriteBuf::new(1 << 20);
/// buf.push(FrameKind::Request, Encoding::IDENTITY, 1, b"", &Bytes::from_static(b"a")).unwrap();
/// buf.push(FrameKind::Request, Encoding::IDENTITY, 2, b"", &Bytes::from(vec![0; 10_000])).unwrap();
/// assert_eq!(buf.len(), 20 + 1 + 20 + 10_000);
///
/// let mut slices = [IoSlice::new(&[]); 8];
/// let n = buf.io_slices(&mut slices);
/// assert_eq!(n, 2, "small frame and second header coalesced, large payload beside them");
/// buf.advance(buf.len());
/// assert!(buf.is_empty());
/// ```
#[derive(Debug)]
pub struct WriteBuf {
    /// Segments ready to go, in order, before `staging`.
    segments: VecDeque<Bytes>,
    /// Coalesced headers and small payloads, written after `segments`.
    staging: BytesMut,
    len: usize,
    /// The most bytes waiting since the buffer was last empty: a buffer that carries only
    /// a few small frames at a time (an idle connection's pings) keeps a small allocation.
    peak: usize,
    max_frame_len: usize,
}

/// What the coalescing buffer starts with, when the first frame comes.
const STAGING_START: usize = 512;
/// What it is given once a batch of frames has needed more than [`STAGING_START`].
const STAGING_BUSY: usize = 16 * 1024;

impl WriteBuf {
    /// An empty buffer that refuses frames larger than `max_frame_len`.
    pub fn new(max_frame_len: usize) -> Self {
        WriteBuf {
            segments: VecDeque::new(),
            staging: BytesMut::new(),
            len: 0,
            peak: 0,
            max_frame_len,
        }
    }

    /// Lowers the limit on the frames it takes to `max`, if that is lower: for a peer that
    /// said it receives no larger frames.
    pub fn limit(&mut self, max: usize) {
        self.max_frame_len = self.max_frame_len.min(max);
    }

    /// Queues one frame.
    ///
    /// # Errors
    ///
    /// As [`header_for`]: nothing is queued for a frame that is too large or whose topic
    /// does not fit.
    pub fn push(
        &mut self,
        kind: FrameKind,
        encoding: Encoding,
        id: u64,
        topic: &[u8],
        payload: &Bytes,
    ) -> Result<(), FrameError> {
        self.push_flagged(kind, Flags::NONE, encoding, id, topic, payload)
    }

    /// Queues a frame with `flags` in its header, as [`push`](Self::push) does.
    ///
    /// # Errors
    ///
    /// As [`push`](Self::push), and [`FrameError::ReservedFlags`] for flags the kind does
    /// not carry.
    pub fn push_flagged(
        &mut self,
        kind: FrameKind,
        flags: Flags,
        encoding: Encoding,
        id: u64,
        topic: &[u8],
        payload: &Bytes,
    ) -> Result<(), FrameError> {
        let header = flagged_header(
            kind,
            flags,
            encoding,
            id,
            topic.len(),
            payload.len(),
            self.max_frame_len,
        )?;
        if self.staging.capacity() == 0 {
            self.staging.reserve(STAGING_START);
        }
        header.encode(&mut self.staging);
        self.staging.extend_from_slice(topic);
        if payload.len() >= COPY_THRESHOLD {
            let head = self.staging.split().freeze();
            self.segments.push_back(head);
            self.segments.push_back(payload.clone());
        } else {
            self.staging.extend_from_slice(payload);
        }
        self.len += HEADER_LEN + topic.len() + payload.len();
        self.peak = self.peak.max(self.len);
        Ok(())
    }

    /// Queues a frame from a head encoded once for many receivers, with `id` patched into
    /// it, and the payload it was made for (its length is in the head).
    pub fn push_shared(&mut self, head: &SharedHead, id: u64, payload: &Bytes) {
        if self.staging.capacity() == 0 {
            self.staging.reserve(STAGING_START);
        }
        let mut header = [0; HEADER_LEN];
        header[..ID_AT.start].copy_from_slice(&head.front.to_ne_bytes());
        header[ID_AT].copy_from_slice(&id.to_be_bytes());
        header[ID_AT.end..].copy_from_slice(&head.back.to_ne_bytes());
        self.staging.extend_from_slice(&header);
        self.staging.extend_from_slice(&head.topic);
        if payload.len() >= COPY_THRESHOLD {
            let split = self.staging.split().freeze();
            self.segments.push_back(split);
            self.segments.push_back(payload.clone());
        } else {
            self.staging.extend_from_slice(payload);
        }
        self.len += head.len() + payload.len();
        self.peak = self.peak.max(self.len);
    }

    /// Queues bytes that are already encoded, such as a frame shared between many
    /// receivers.
    pub fn push_encoded(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.len += bytes.len();
        self.peak = self.peak.max(self.len);
        if bytes.len() >= COPY_THRESHOLD {
            if !self.staging.is_empty() {
                let head = self.staging.split().freeze();
                self.segments.push_back(head);
            }
            self.segments.push_back(bytes);
        } else {
            self.staging.extend_from_slice(&bytes);
        }
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many slices [`io_slices`](Self::io_slices) would fill at most, to size the
    /// array given to it.
    pub fn slice_count(&self) -> usize {
        self.segments.len() + usize::from(!self.staging.is_empty())
    }

    /// Fills `dst` with the next slices to write, in order, and returns how many it filled.
    pub fn io_slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for seg in &self.segments {
            if n == dst.len() {
                return n;
            }
            if !seg.is_empty() {
                dst[n] = IoSlice::new(seg);
                n += 1;
            }
        }
        if n < dst.len() && !self.staging.is_empty() {
            dst[n] = IoSlice::new(&self.staging);
            n += 1;
        }
        n
    }

    /// Marks `n` bytes as written.
    ///
    /// # Panics
    ///
    /// If `n` is more than [`len`](Self::len): a writer never reports more than it was given.
    pub fn advance(&mut self, mut n: usize) {
        assert!(n <= self.len, "advanced past the end of the write buffer");
        self.len -= n;
        while n > 0 {
            let Some(front) = self.segments.front_mut() else {
                self.staging.advance(n);
                break;
            };
            if n < front.len() {
                front.advance(n);
                break;
            }
            n -= front.len();
            self.segments.pop_front();
        }
        if self.len == 0 {
            // Rewind the coalescing buffer so its allocation is reused; one that carries
            // batches gets room for them at once.
            self.staging.clear();
            if self.peak > STAGING_START && self.staging.capacity() < 4096 {
                self.staging.reserve(STAGING_BUSY);
            }
            self.peak = 0;
        }
    }

    /// Gives the buffer's memory back if nothing waits: for a connection gone idle.
    pub fn shrink(&mut self) {
        if self.len == 0 {
            self.staging = BytesMut::new();
            self.segments = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::codec::Decoder;

    use super::*;
    use crate::{Frame, FrameCodec};

    /// Takes everything queued in `buf`, at most `step` bytes per write. Every write must
    /// take at least one byte, so the loop ends within as many rounds as there are bytes; a
    /// buffer that stops giving bytes fails the test instead of hanging it.
    fn drain(buf: &mut WriteBuf, step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let most_rounds = buf.len();
        let mut rounds = 0;
        while !buf.is_empty() {
            rounds += 1;
            assert!(
                rounds <= most_rounds,
                "{rounds} writes for {most_rounds} bytes"
            );
            let mut slices = [IoSlice::new(&[]); 3];
            let n = buf.io_slices(&mut slices);
            let mut taken = 0;
            for s in &slices[..n] {
                let want = (step - taken).min(s.len());
                out.extend_from_slice(&s[..want]);
                taken += want;
                if taken == step {
                    break;
                }
            }
            assert!(taken > 0, "a write of {step} bytes took nothing");
            buf.advance(taken);
        }
        out
    }

    #[test]
    fn partial_writes_keep_every_byte_in_order() {
        for step in [1, 7, 20, 4096, 100_000] {
            let mut buf = WriteBuf::new(1 << 20);
            let frames: Vec<Frame> = (0..10u64)
                .map(|i| {
                    let len = if i % 3 == 0 { 5000 } else { i as usize };
                    Frame::new(FrameKind::Request, i, Bytes::from(vec![i as u8; len]))
                })
                .collect();
            for f in &frames {
                buf.push(f.kind, f.encoding, f.id, b"", &f.payload).unwrap();
            }
            let wire = drain(&mut buf, step);
            let mut codec = FrameCodec::new();
            let mut src = BytesMut::from(&wire[..]);
            let mut out = Vec::new();
            while let Some(f) = codec.decode(&mut src).unwrap() {
                out.push(f);
                assert!(out.len() <= frames.len(), "more frames out than in");
            }
            assert_eq!(out, frames, "step {step}");
        }
    }

    #[test]
    fn a_shared_head_writes_the_same_bytes_as_push_with_each_id() {
        for size in [0, 5, 5000] {
            let payload = Bytes::from(vec![3u8; size]);
            let head = SharedHead::new(
                FrameKind::Publish,
                Encoding::IDENTITY,
                Bytes::from_static(b"a.b"),
                payload.len(),
                1 << 20,
            )
            .unwrap();
            let mut shared = WriteBuf::new(1 << 20);
            let mut pushed = WriteBuf::new(1 << 20);
            for id in [1, u64::MAX, 42] {
                shared.push_shared(&head, id, &payload);
                pushed
                    .push(FrameKind::Publish, Encoding::IDENTITY, id, b"a.b", &payload)
                    .unwrap();
            }
            assert_eq!(drain(&mut shared, 7), drain(&mut pushed, 7), "size {size}");
        }
    }

    #[test]
    fn a_shared_head_refuses_what_push_refuses() {
        let err = SharedHead::new(
            FrameKind::Publish,
            Encoding::IDENTITY,
            Bytes::from_static(b"t"),
            10,
            10,
        );
        assert!(matches!(
            err,
            Err(FrameError::TooLarge { len: 11, max: 10 })
        ));
        let err = SharedHead::new(
            FrameKind::Response,
            Encoding::IDENTITY,
            Bytes::from_static(b"t"),
            1,
            10,
        );
        assert!(matches!(err, Err(FrameError::BadTopic(_))));
    }

    #[test]
    fn push_refuses_oversize_and_queues_nothing() {
        let mut buf = WriteBuf::new(10);
        let err = buf.push(
            FrameKind::Request,
            Encoding::IDENTITY,
            1,
            b"",
            &Bytes::from(vec![0; 11]),
        );
        assert!(matches!(
            err,
            Err(FrameError::TooLarge { len: 11, max: 10 })
        ));
        assert!(buf.is_empty());
    }
}
