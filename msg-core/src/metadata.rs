//! [`Metadata`]: the name/value pairs a request carries beside its route, and their wire
//! form.

use std::fmt;

use bytes::{BufMut, Bytes};

use crate::{FrameError, Route, MAX_ROUTE_LEN};

/// The longest topic field a request with metadata carries: its route and every entry,
/// encoded (see `PROTOCOL.md`, "Metadata"). A receiver checks it in the frame's header,
/// before it reserves anything for the body, as it checks a route's bound.
pub const MAX_METADATA_LEN: usize = 8 * 1024;

/// The longest name of an entry, in bytes.
pub const MAX_METADATA_NAME_LEN: usize = 255;

/// Name/value pairs a request carries beside its payload, as an HTTP request carries
/// headers: an API key, a tenant, a trace id, a deadline of the caller's.
///
/// Names are 1 to [`MAX_METADATA_NAME_LEN`] bytes of the characters an HTTP header name allows
/// (ASCII letters, digits and ``!#$%&'*+-.^_`|~``) and are compared without regard to
/// case; values are any bytes. A name appears at most once: [`insert`](Self::insert)
/// replaces. Everything together, encoded with the route, is at most
/// [`MAX_METADATA_LEN`] bytes, checked when the request is sent.
///
/// Requests carry metadata; replies and publications do not. An empty `Metadata` costs
/// nothing on the wire and no allocation; one received shares the connection's read
/// buffer.
///
/// # Example
///
/// ```
/// use msg::{Message, Metadata};
///
/// let msg = Message::from("42").with_metadata("x-api-key", "secret")?;
/// assert_eq!(msg.metadata().get_str("X-API-Key"), Some("secret"));
///
/// let mut meta = Metadata::new();
/// assert!(meta.insert("bad name", "x").is_err(), "no spaces in a name");
/// # Ok::<(), msg::MetadataError>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// `None` when empty: a request without metadata allocates nothing. Boxed, so that
    /// every `Message` carries one word for it rather than a `Vec`'s three.
    #[allow(clippy::box_collection)]
    entries: Option<Box<Vec<(Bytes, Bytes)>>>,
}

/// Why an entry of [`Metadata`] was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetadataError {
    /// The name is empty, longer than [`MAX_METADATA_NAME_LEN`], or has a character an HTTP header
    /// name does not allow.
    InvalidName {
        /// The name, lossily as text.
        name: String,
    },
    /// The value is longer than the wire carries for one entry (65,535 bytes).
    ValueTooLong {
        /// The value's length.
        len: usize,
    },
    /// The route and every entry together, encoded, are longer than the wire carries.
    TooLong {
        /// Their length, encoded.
        len: usize,
        /// The limit, [`MAX_METADATA_LEN`].
        max: usize,
    },
}

impl fmt::Display for MetadataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetadataError::InvalidName { name } => write!(
                f,
                "{name:?} is not a metadata name: 1 to {MAX_METADATA_NAME_LEN} of the characters an \
                 HTTP header name allows"
            ),
            MetadataError::ValueTooLong { len } => write!(
                f,
                "a metadata value of {len} bytes exceeds the {}-byte limit",
                u16::MAX
            ),
            MetadataError::TooLong { len, max } => write!(
                f,
                "a request's route and metadata take {len} bytes encoded, over the \
                 {max}-byte limit"
            ),
        }
    }
}

impl std::error::Error for MetadataError {}

/// Whether `name` is a metadata name.
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_METADATA_NAME_LEN
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Metadata {
    /// No entries.
    pub const fn new() -> Metadata {
        Metadata { entries: None }
    }

    fn entries(&self) -> &[(Bytes, Bytes)] {
        self.entries.as_deref().map(Vec::as_slice).unwrap_or(&[])
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }

    /// The value of `name`, compared without regard to case.
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.entries()
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The value of `name` as text, if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Sets `name` to `value`, and returns the value it replaces.
    ///
    /// # Errors
    ///
    /// [`MetadataError::InvalidName`] or [`MetadataError::ValueTooLong`]: nothing changes.
    pub fn insert(
        &mut self,
        name: impl AsRef<str>,
        value: impl Into<Bytes>,
    ) -> Result<Option<Bytes>, MetadataError> {
        let name = name.as_ref();
        if !valid_name(name.as_bytes()) {
            return Err(MetadataError::InvalidName { name: name.into() });
        }
        let value = value.into();
        if value.len() > u16::MAX as usize {
            return Err(MetadataError::ValueTooLong { len: value.len() });
        }
        let entries = self.entries.get_or_insert_with(Default::default);
        if let Some(entry) = entries
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        {
            return Ok(Some(std::mem::replace(&mut entry.1, value)));
        }
        entries.push((Bytes::copy_from_slice(name.as_bytes()), value));
        Ok(None)
    }

    /// Removes `name`, and returns its value.
    pub fn remove(&mut self, name: &str) -> Option<Bytes> {
        let entries = self.entries.as_mut()?;
        let at = entries
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))?;
        let (_, value) = entries.remove(at);
        if entries.is_empty() {
            self.entries = None;
        }
        Some(value)
    }

    /// The entries, in the order they were inserted (or received): each name as it was
    /// given, and its value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        self.entries()
            .iter()
            // Every name was checked to be ASCII when it was inserted or received.
            .map(|(n, v)| (std::str::from_utf8(n).unwrap_or_default(), v))
    }

    /// Whether a request naming `route` can carry these entries: the two together,
    /// encoded, within [`MAX_METADATA_LEN`]. A socket checks this before it sends.
    ///
    /// # Errors
    ///
    /// [`MetadataError::TooLong`].
    pub fn check(&self, route: Option<&Route>) -> Result<(), MetadataError> {
        if self.is_empty() {
            return Ok(());
        }
        match self.encoded_len(route) {
            len if len > MAX_METADATA_LEN => Err(MetadataError::TooLong {
                len,
                max: MAX_METADATA_LEN,
            }),
            _ => Ok(()),
        }
    }

    /// The length of the topic field that carries `route` and these entries.
    pub(crate) fn encoded_len(&self, route: Option<&Route>) -> usize {
        1 + route.map_or(0, |r| r.as_bytes().len())
            + self
                .entries()
                .iter()
                .map(|(n, v)| 1 + n.len() + 2 + v.len())
                .sum::<usize>()
    }

    /// Writes the topic field of a request with metadata: the route's length and the
    /// route, then each entry as name length, name, value length, value.
    pub(crate) fn encode(&self, route: Option<&Route>, dst: &mut impl BufMut) {
        let route: &[u8] = route.map_or(&[], |r| r.as_bytes());
        // A route is at most 255 bytes, a name too, a value at most 65,535: checked when
        // each was made.
        dst.put_u8(route.len() as u8);
        dst.put_slice(route);
        for (name, value) in self.entries() {
            dst.put_u8(name.len() as u8);
            dst.put_slice(name);
            dst.put_u16(value.len() as u16);
            dst.put_slice(value);
        }
    }

    /// Reads the topic field of a request with metadata, without copying: the route, if
    /// it names one, and the entries.
    ///
    /// # Errors
    ///
    /// [`FrameError::Malformed`] if the field is cut short, a route is not UTF-8, or a
    /// name is not a metadata name.
    pub(crate) fn decode(mut field: Bytes) -> Result<(Option<Route>, Metadata), FrameError> {
        let malformed = |reason| FrameError::Malformed {
            kind: "request",
            reason,
        };
        let route_len = *field.first().ok_or(malformed("its metadata is empty"))? as usize;
        if field.len() < 1 + route_len {
            return Err(malformed("its metadata is cut short"));
        }
        let route = match route_len {
            0 => None,
            _ => Some(
                Route::from_wire(field.slice(1..1 + route_len))
                    .map_err(|_| malformed("its route is not UTF-8"))?,
            ),
        };
        debug_assert!(route_len <= MAX_ROUTE_LEN);
        bytes::Buf::advance(&mut field, 1 + route_len);
        let mut entries = Vec::new();
        while !field.is_empty() {
            let name_len = field[0] as usize;
            if field.len() < 1 + name_len + 2 {
                return Err(malformed("its metadata is cut short"));
            }
            let name = field.slice(1..1 + name_len);
            if !valid_name(&name) {
                return Err(malformed("a metadata name has a character a name cannot"));
            }
            let at = 1 + name_len;
            let value_len = u16::from_be_bytes([field[at], field[at + 1]]) as usize;
            if field.len() < at + 2 + value_len {
                return Err(malformed("its metadata is cut short"));
            }
            let value = field.slice(at + 2..at + 2 + value_len);
            bytes::Buf::advance(&mut field, at + 2 + value_len);
            match entries
                .iter_mut()
                .find(|(n, _): &&mut (Bytes, Bytes)| n.eq_ignore_ascii_case(&name))
            {
                Some(entry) => entry.1 = value,
                None => entries.push((name, value)),
            }
        }
        let metadata = Metadata {
            entries: (!entries.is_empty()).then(|| Box::new(entries)),
        };
        Ok((route, metadata))
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_their_wire_form_with_and_without_a_route() {
        let mut meta = Metadata::new();
        meta.insert("x-api-key", "secret").unwrap();
        meta.insert("Tenant", Bytes::from_static(b"\x00\xff"))
            .unwrap();
        meta.insert("empty", "").unwrap();
        for route in [None, Some(Route::from_static("users.get"))] {
            let mut field = Vec::new();
            meta.encode(route.as_ref(), &mut field);
            assert_eq!(field.len(), meta.encoded_len(route.as_ref()));
            let (r, m) = Metadata::decode(Bytes::from(field)).unwrap();
            assert_eq!(r, route);
            assert_eq!(m, meta);
            assert_eq!(m.get_str("X-API-KEY"), Some("secret"));
            assert_eq!(m.get("tenant").unwrap().as_ref(), b"\x00\xff");
        }
    }

    #[test]
    fn names_are_checked_and_replaced_without_regard_to_case() {
        let mut meta = Metadata::new();
        assert!(meta.is_empty() && meta.entries.is_none());
        for bad in ["", "a b", "a:b", "é", &"x".repeat(256)] {
            assert!(
                matches!(
                    meta.insert(bad, "v"),
                    Err(MetadataError::InvalidName { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            meta.insert("big", vec![0; 65_536]),
            Err(MetadataError::ValueTooLong { len: 65_536 })
        ));
        assert!(meta.is_empty(), "a refused entry changes nothing");
        assert_eq!(meta.insert("Key", "1").unwrap(), None);
        assert_eq!(meta.insert("KEY", "2").unwrap().unwrap(), "1");
        assert_eq!(meta.len(), 1);
        assert_eq!(meta.remove("key").unwrap(), "2");
        assert!(meta.entries.is_none(), "empty again, nothing held");
    }

    #[test]
    fn a_cut_or_hostile_field_is_malformed_and_never_panics() {
        let mut meta = Metadata::new();
        meta.insert("x-api-key", "secret").unwrap();
        let mut field = Vec::new();
        meta.encode(Some(&Route::from_static("a.b")), &mut field);
        for cut in 0..field.len() {
            let result = Metadata::decode(Bytes::copy_from_slice(&field[..cut]));
            // Cut right after the route, the field is whole and has no entries.
            if let Ok((_, m)) = result {
                assert!(m.is_empty(), "cut at {cut}");
            }
        }
        for hostile in [
            &b"\xff"[..],
            b"\x00\x05ab",
            b"\x00\x01 \x00\x00",
            b"\x01\xff",
        ] {
            assert!(
                matches!(
                    Metadata::decode(Bytes::copy_from_slice(hostile)),
                    Err(FrameError::Malformed { .. })
                ),
                "{hostile:?}"
            );
        }
    }
}
