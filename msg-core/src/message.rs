//! The message model: a payload of [`Bytes`] with the headers that travel beside it.

use std::fmt;

use bytes::Bytes;

use crate::{Metadata, MetadataError, Route};

/// How a message payload is encoded on the wire.
///
/// The encoding travels in every frame header, so a receiver knows how to decode a payload
/// without any configuration of its own. Codes `0..=127` are reserved for encodings that
/// `msg` defines; codes `128..=255` are free for applications' own codecs.
///
/// # Example
///
/// ```
/// use msg::Encoding;
///
/// assert_eq!(Encoding::default(), Encoding::IDENTITY);
/// assert!(Encoding::custom(200).is_some());
/// assert!(Encoding::custom(3).is_none(), "codes below 128 are reserved");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Encoding(u8);

impl Encoding {
    /// The payload is sent as is.
    pub const IDENTITY: Encoding = Encoding(0);
    /// The payload is gzip-compressed.
    pub const GZIP: Encoding = Encoding(1);
    /// The payload is zstd-compressed.
    pub const ZSTD: Encoding = Encoding(2);
    /// The payload is Snappy-compressed (raw format).
    pub const SNAPPY: Encoding = Encoding(3);
    /// The payload is LZ4-compressed (block format, size-prefixed).
    pub const LZ4: Encoding = Encoding(4);

    /// The first code free for applications' own encodings.
    pub const FIRST_CUSTOM: u8 = 128;

    /// Makes an application-defined encoding, or `None` if `code` is reserved (below 128).
    pub const fn custom(code: u8) -> Option<Encoding> {
        if code >= Self::FIRST_CUSTOM {
            Some(Encoding(code))
        } else {
            None
        }
    }

    /// Makes an encoding from its wire code, reserved or not.
    pub const fn from_code(code: u8) -> Encoding {
        Encoding(code)
    }

    /// The encoding's wire code.
    pub const fn code(self) -> u8 {
        self.0
    }

    /// Whether the payload is sent as is.
    pub const fn is_identity(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Debug for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Encoding {
    /// The encoding's name, `"custom"` for the applications' codes and `"reserved"` for the
    /// others: a label for logs and metrics that costs no allocation.
    pub const fn name(self) -> &'static str {
        match self {
            Encoding::IDENTITY => "identity",
            Encoding::GZIP => "gzip",
            Encoding::ZSTD => "zstd",
            Encoding::SNAPPY => "snappy",
            Encoding::LZ4 => "lz4",
            Encoding(code) if code >= Encoding::FIRST_CUSTOM => "custom",
            Encoding(_) => "reserved",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            "custom" | "reserved" => write!(f, "encoding({})", self.0),
            name => f.write_str(name),
        }
    }
}

/// The headers that travel beside a payload.
///
/// Layers read and change them: a compression layer sets [`encoding`](Self::encoding) after
/// it compresses the payload, and the receiving socket reads it back.
///
/// A request's [`route`](Self::route) and [`metadata`](Self::metadata) are held behind one
/// pointer, allocated only for a message that has either: every message stays two words
/// of headers and a payload, which is what the sockets move on their hot paths.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Headers {
    /// How the payload is encoded. Default: [`Encoding::IDENTITY`].
    pub encoding: Encoding,
    /// The route and the metadata, when the message has either.
    extra: Option<Box<Extra>>,
}

/// What few messages carry: see [`Headers`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Extra {
    route: Option<Route>,
    metadata: Metadata,
}

/// What [`Headers::metadata`] lends when a message has none.
static NO_METADATA: Metadata = Metadata::new();

impl Headers {
    /// The operation a request asks for, which a server's router dispatches on; `None`
    /// goes to its fallback. Carried by requests only: a reply or a publication does not
    /// send it. Default: `None`.
    #[inline]
    pub fn route(&self) -> Option<&Route> {
        self.extra.as_ref().and_then(|extra| extra.route.as_ref())
    }

    /// Sets or clears the route.
    pub fn set_route(&mut self, route: Option<Route>) {
        match (&mut self.extra, route) {
            (Some(extra), route) => extra.route = route,
            (None, None) => {}
            (None, route) => {
                self.extra = Some(Box::new(Extra {
                    route,
                    metadata: Metadata::new(),
                }))
            }
        }
    }

    /// Name/value pairs a request carries beside its payload, such as an API key. Carried
    /// by requests only, as the route is. Default: empty.
    #[inline]
    pub fn metadata(&self) -> &Metadata {
        self.extra
            .as_ref()
            .map_or(&NO_METADATA, |extra| &extra.metadata)
    }

    /// The metadata, to change.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.extra.get_or_insert_with(Box::default).metadata
    }
}

/// A message: [`Headers`] and a [`Bytes`] payload.
///
/// This is what flows through the tower layers on both sides of a socket. Cloning a message
/// is cheap: the payload is reference-counted.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use msg::{Encoding, Message};
///
/// let mut msg = Message::from(Bytes::from_static(b"hello"));
/// assert_eq!(msg.payload(), &Bytes::from_static(b"hello"));
/// assert_eq!(msg.encoding(), Encoding::IDENTITY);
///
/// msg.set_encoding(Encoding::GZIP);
/// assert_eq!(msg.headers().encoding, Encoding::GZIP);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    headers: Headers,
    payload: Bytes,
}

impl Message {
    /// Makes a message with default headers.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Message {
            headers: Headers::default(),
            payload: payload.into(),
        }
    }

    /// Makes a message from its parts.
    pub fn from_parts(headers: Headers, payload: Bytes) -> Self {
        Message { headers, payload }
    }

    /// Splits the message into its parts.
    pub fn into_parts(self) -> (Headers, Bytes) {
        (self.headers, self.payload)
    }

    /// The payload, as it is on the wire (still encoded if [`encoding`](Self::encoding) says
    /// so).
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The payload, to replace or change.
    pub fn payload_mut(&mut self) -> &mut Bytes {
        &mut self.payload
    }

    /// Takes the payload out of the message.
    pub fn into_payload(self) -> Bytes {
        self.payload
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The headers, to change.
    pub fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }

    /// How the payload is encoded.
    pub fn encoding(&self) -> Encoding {
        self.headers.encoding
    }

    /// Sets how the payload is encoded.
    pub fn set_encoding(&mut self, encoding: Encoding) {
        self.headers.encoding = encoding;
    }

    /// Returns the message with its encoding set.
    pub fn with_encoding(mut self, encoding: Encoding) -> Self {
        self.headers.encoding = encoding;
        self
    }

    /// The route the request names, if any (see [`Headers::route`]).
    #[inline]
    pub fn route(&self) -> Option<&Route> {
        self.headers.route()
    }

    /// Sets or clears the route the request names.
    pub fn set_route(&mut self, route: Option<Route>) {
        self.headers.set_route(route);
    }

    /// Returns the message naming `route`: sent as a request, it goes to the server
    /// router's handler for that route (the tower way to say what
    /// `ReqSocket::request_to` says).
    ///
    /// # Example
    ///
    /// ```
    /// use msg::{Message, Route};
    ///
    /// let msg = Message::from("42").with_route(Route::from_static("users.get"));
    /// assert_eq!(msg.route().unwrap(), "users.get");
    /// ```
    pub fn with_route(mut self, route: Route) -> Self {
        self.headers.set_route(Some(route));
        self
    }
}

impl Message {
    /// The request's metadata (see [`Headers::metadata`]).
    #[inline]
    pub fn metadata(&self) -> &Metadata {
        self.headers.metadata()
    }

    /// The request's metadata, to change.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        self.headers.metadata_mut()
    }

    /// Returns the message with `name` set to `value` in its metadata, which a request
    /// carries to the server beside its payload (an API key, a tenant).
    ///
    /// # Errors
    ///
    /// The name or the value does not fit: see [`MetadataError`].
    ///
    /// # Example
    ///
    /// ```
    /// use msg::Message;
    ///
    /// let msg = Message::from("42").with_metadata("x-api-key", "secret")?;
    /// assert_eq!(msg.metadata().get_str("x-api-key"), Some("secret"));
    /// # Ok::<(), msg::MetadataError>(())
    /// ```
    pub fn with_metadata(
        mut self,
        name: impl AsRef<str>,
        value: impl Into<Bytes>,
    ) -> Result<Self, MetadataError> {
        self.headers.metadata_mut().insert(name, value)?;
        Ok(self)
    }
}

impl From<Bytes> for Message {
    fn from(payload: Bytes) -> Self {
        Message::new(payload)
    }
}

impl From<Vec<u8>> for Message {
    fn from(payload: Vec<u8>) -> Self {
        Message::new(payload)
    }
}

impl From<String> for Message {
    fn from(payload: String) -> Self {
        Message::new(payload)
    }
}

impl From<&'static str> for Message {
    fn from(payload: &'static str) -> Self {
        Message::new(payload)
    }
}

impl From<&'static [u8]> for Message {
    fn from(payload: &'static [u8]) -> Self {
        Message::new(payload)
    }
}

impl From<Message> for Bytes {
    fn from(msg: Message) -> Self {
        msg.payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_headers_of_two_words_and_a_payload() {
        assert_eq!(std::mem::size_of::<Headers>(), 16);
        assert_eq!(std::mem::size_of::<Message>(), 48);
        let mut msg = Message::from("x");
        assert!(
            msg.headers.extra.is_none(),
            "nothing allocated for a plain message"
        );
        msg.set_route(None);
        assert!(msg.metadata().is_empty() && msg.headers.extra.is_none());
        msg.set_route(Some(Route::from_static("a.b")));
        msg.metadata_mut().insert("k", "v").unwrap();
        assert_eq!(
            (msg.route().unwrap().as_str(), msg.metadata().get_str("k")),
            ("a.b", Some("v"))
        );
    }
}
