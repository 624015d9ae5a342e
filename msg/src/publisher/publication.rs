//! [`Publication`]: a message and its topic, what a [`PubSocket`](super::PubSocket) takes as
//! a [`tower::Service`].

use msg_core::Message;
use msg_layers::compression::Codec;

/// A message to publish on a topic: what a [`PubSocket`](super::PubSocket) takes as a [`tower::Service`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub(super) topic: String,
    pub(super) message: Message,
}

impl Publication {
    /// A publication of `message` on `topic`.
    pub fn new(topic: impl Into<String>, message: impl Into<Message>) -> Self {
        Publication {
            topic: topic.into(),
            message: message.into(),
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The message, to change in a layer (to compress it, say).
    pub fn message_mut(&mut self) -> &mut Message {
        &mut self.message
    }
}

/// A publication: compressed on the way out, once for all subscribers.
impl msg_layers::compression::Compress<()> for Publication {
    type Output = ();

    fn compress_request(mut self, codec: &Codec) -> Self {
        self.message = codec.compress(self.message);
        self
    }

    fn compress_response(_: (), _codec: &Codec) {}
}

/// A publication's span: its size, encoding and topic.
impl msg_layers::trace::Describe for Publication {
    const KIND: &'static str = "publish";

    fn describe(&self, span: &tracing::Span) {
        span.record("size", self.message.payload().len());
        span.record("encoding", tracing::field::display(self.message.encoding()));
        span.record("topic", self.topic.as_str());
    }

    fn payload_len(&self) -> usize {
        self.message.payload().len()
    }
}
