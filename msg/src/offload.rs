//! Codec work off the executor: compressing or decompressing a payload of at least
//! [`OFFLOAD_MIN_LEN`] bytes runs on tokio's blocking pool, so that it stalls no
//! connection's reads, cancels and pings, and no worker; a shorter one runs inline, at no
//! added cost. The one place every socket sends its codec work through.

use msg_core::{Encoding, Message};
use msg_layers::compression::{Codec, Decoders, DecompressError, OFFLOAD_MIN_LEN};
use tokio::task::JoinHandle;

/// Whether compressing `msg` with `codec` is worth the blocking pool: it would be
/// compressed, and it is long.
pub(crate) fn compress_offloaded(codec: &Codec, msg: &Message) -> bool {
    msg.encoding().is_identity() && msg.payload().len() >= OFFLOAD_MIN_LEN.max(codec.min_len())
}

/// Whether decoding `msg` is worth the blocking pool: it is encoded, and long.
pub(crate) fn decode_offloaded(msg: &Message) -> bool {
    !msg.encoding().is_identity() && msg.payload().len() >= OFFLOAD_MIN_LEN
}

/// Compresses `msg` on the blocking pool.
pub(crate) fn spawn_compress(codec: &Codec, msg: Message) -> JoinHandle<Message> {
    let codec = codec.clone();
    tokio::task::spawn_blocking(move || codec.compress(msg))
}

/// Decodes `msg` into at most `limit` bytes on the blocking pool.
pub(crate) fn spawn_decode(
    decoders: &Decoders,
    msg: Message,
    limit: usize,
) -> JoinHandle<Result<Message, DecompressError>> {
    let decoders = decoders.clone();
    tokio::task::spawn_blocking(move || decoders.decode(msg, limit))
}

/// `msg` compressed with `codec`: on the blocking pool if it is long, inline if not.
pub(crate) async fn compress(codec: &Codec, msg: Message) -> Message {
    if !compress_offloaded(codec, &msg) {
        return codec.compress(msg);
    }
    // The blocking task fails only if the codec panics: the message then goes as it is,
    // as it does when the codec fails.
    spawn_compress(codec, msg.clone()).await.unwrap_or(msg)
}

/// The outcome of decoding a payload of `encoding` on the blocking pool: a task that
/// panicked (a codec of the user's that panics) fails the message as corrupt, and nothing
/// else.
pub(crate) fn joined(
    encoding: Encoding,
    outcome: Result<Result<Message, DecompressError>, tokio::task::JoinError>,
) -> Result<Message, DecompressError> {
    outcome.unwrap_or_else(|e| {
        Err(DecompressError::Corrupt {
            encoding,
            reason: format!("the decoder failed: {e}"),
        })
    })
}
