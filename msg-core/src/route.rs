//! [`Route`]: the name of the operation a request asks for, carried in its frame.

use std::borrow::Borrow;
use std::fmt;

use bytes::Bytes;

/// The longest route the wire carries, in bytes: a route is a short name such as
/// `users.get`, and a receiver checks this bound in the frame's header, before it reserves
/// anything for the body.
pub const MAX_ROUTE_LEN: usize = 255;

/// The name of the operation a request asks for, such as `users.get`: UTF-8, from 1 to
/// [`MAX_ROUTE_LEN`] bytes.
///
/// A request carries it in its frame's topic field (see `PROTOCOL.md`); a server's
/// `msg::Router` dispatches on it. A request without a route goes to the router's
/// fallback.
///
/// A route made from a `&'static str` costs no allocation, and one received shares the
/// connection's read buffer; cloning one is cheap.
///
/// # Example
///
/// ```
/// use msg::{Route, RouteError};
///
/// let route = Route::from_static("users.get");
/// assert_eq!(route.as_str(), "users.get");
/// assert_eq!(Route::new("users.get".to_string())?, route);
///
/// assert!(matches!(Route::new(String::new()), Err(RouteError::Empty)));
/// assert!(matches!(Route::new("x".repeat(256)), Err(RouteError::TooLong { len: 256, .. })));
/// # Ok::<(), RouteError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route(Bytes);

/// Why a route was refused: see [`Route`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouteError {
    /// The route is empty: a request without a route carries none at all.
    Empty,
    /// The route is longer than the wire carries.
    TooLong {
        /// The route's length, in bytes.
        len: usize,
        /// The limit, [`MAX_ROUTE_LEN`].
        max: usize,
    },
    /// The route's bytes are not UTF-8.
    NotUtf8,
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::Empty => f.write_str("a route cannot be empty"),
            RouteError::TooLong { len, max } => {
                write!(f, "a route of {len} bytes exceeds the {max}-byte limit")
            }
            RouteError::NotUtf8 => f.write_str("a route must be UTF-8"),
        }
    }
}

impl std::error::Error for RouteError {}

/// Checks a route's length.
const fn check_len(len: usize) -> Result<(), RouteError> {
    if len == 0 {
        Err(RouteError::Empty)
    } else if len > MAX_ROUTE_LEN {
        Err(RouteError::TooLong {
            len,
            max: MAX_ROUTE_LEN,
        })
    } else {
        Ok(())
    }
}

impl Route {
    /// A route from an owned name.
    ///
    /// # Errors
    ///
    /// [`RouteError::Empty`] or [`RouteError::TooLong`].
    pub fn new(name: impl Into<String>) -> Result<Route, RouteError> {
        let name = name.into();
        check_len(name.len())?;
        Ok(Route(Bytes::from(name)))
    }

    /// A route from a name known when the program is written; no allocation.
    ///
    /// # Panics
    ///
    /// If `name` is empty or longer than [`MAX_ROUTE_LEN`]: a mistake in the program, not
    /// in its input. Use [`try_from_static`](Self::try_from_static) to check instead.
    pub const fn from_static(name: &'static str) -> Route {
        if check_len(name.len()).is_err() {
            panic!("a route is from 1 to 255 bytes long");
        }
        Route(Bytes::from_static(name.as_bytes()))
    }

    /// A route from a name known when the program is written, checked; no allocation.
    ///
    /// # Errors
    ///
    /// [`RouteError::Empty`] or [`RouteError::TooLong`].
    pub const fn try_from_static(name: &'static str) -> Result<Route, RouteError> {
        match check_len(name.len()) {
            Ok(()) => Ok(Route(Bytes::from_static(name.as_bytes()))),
            Err(e) => Err(e),
        }
    }

    /// A route from the bytes a frame carried, without a copy.
    ///
    /// # Errors
    ///
    /// [`RouteError::Empty`], [`RouteError::TooLong`] or [`RouteError::NotUtf8`].
    pub fn from_wire(bytes: Bytes) -> Result<Route, RouteError> {
        check_len(bytes.len())?;
        std::str::from_utf8(&bytes).map_err(|_| RouteError::NotUtf8)?;
        Ok(Route(bytes))
    }

    /// The route's name.
    pub fn as_str(&self) -> &str {
        // Checked to be UTF-8 when the route was made; a route of at most 255 bytes costs
        // little to check again, and this crate has no unsafe code.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The route's bytes, as the wire carries them.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for Route {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<[u8]> for Route {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq<str> for Route {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for Route {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl TryFrom<String> for Route {
    type Error = RouteError;

    fn try_from(name: String) -> Result<Route, RouteError> {
        Route::new(name)
    }
}

impl TryFrom<&'static str> for Route {
    type Error = RouteError;

    fn try_from(name: &'static str) -> Result<Route, RouteError> {
        Route::try_from_static(name)
    }
}

/// What names a route: a [`Route`], a `&'static str` (no allocation) or a `String`.
pub trait IntoRoute {
    /// The route.
    ///
    /// # Errors
    ///
    /// The name is not a valid route: see [`RouteError`].
    fn into_route(self) -> Result<Route, RouteError>;
}

impl IntoRoute for Route {
    fn into_route(self) -> Result<Route, RouteError> {
        Ok(self)
    }
}

impl IntoRoute for &Route {
    fn into_route(self) -> Result<Route, RouteError> {
        Ok(self.clone())
    }
}

impl IntoRoute for &'static str {
    fn into_route(self) -> Result<Route, RouteError> {
        Route::try_from_static(self)
    }
}

impl IntoRoute for String {
    fn into_route(self) -> Result<Route, RouteError> {
        Route::new(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_is_one_to_255_bytes_of_utf8() {
        assert_eq!(Route::new("a").unwrap(), "a");
        assert_eq!(Route::new("é".repeat(127)).unwrap().as_str().len(), 254);
        assert_eq!(Route::new("x".repeat(255)).unwrap().as_str().len(), 255);
        assert_eq!(Route::new(""), Err(RouteError::Empty));
        assert_eq!(
            Route::new("x".repeat(256)),
            Err(RouteError::TooLong { len: 256, max: 255 })
        );
        assert_eq!(
            Route::from_wire(Bytes::from_static(b"\xff\xfe")),
            Err(RouteError::NotUtf8)
        );
        assert_eq!(
            Route::from_wire(Bytes::from_static(b"users.get")).unwrap(),
            Route::from_static("users.get")
        );
    }
}
