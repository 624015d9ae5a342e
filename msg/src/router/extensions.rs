//! [`Extensions`]: values of any type that layers attach to a request for its handler.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;

/// A value kept in [`Extensions`]: any `Clone + Send + Sync` type.
trait Value: Any + Send + Sync {
    fn clone_box(&self) -> Box<dyn Value>;
    fn as_any(&self) -> &dyn Any;
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

impl<T: Clone + Send + Sync + 'static> Value for T {
    fn clone_box(&self) -> Box<dyn Value> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// Values of any type, one per type, that layers attach to a
/// [`Request`](crate::Request) for the handler: the user an authentication layer found, a
/// request id. A [`Router`](crate::Router)'s handlers read them with
/// [`Extension`](crate::extract::Extension).
///
/// Empty, it costs one word and no allocation: requests arrive with none.
///
/// # Example
///
/// ```
/// use msg::Extensions;
///
/// let mut ext = Extensions::new();
/// assert!(ext.insert(7u32).is_none());
/// assert_eq!(ext.get::<u32>(), Some(&7));
/// assert_eq!(ext.insert(8u32), Some(7));
/// assert_eq!(ext.remove::<u32>(), Some(8));
/// assert!(ext.is_empty());
/// ```
#[derive(Default)]
pub struct Extensions {
    // Boxed so that a request without extensions (all of them, as they arrive) carries
    // one word, not a whole map's.
    #[allow(clippy::box_collection)]
    map: Option<Box<HashMap<TypeId, Box<dyn Value>>>>,
}

impl Extensions {
    /// No values.
    pub const fn new() -> Self {
        Extensions { map: None }
    }

    /// Attaches `value`, and returns the value of its type attached before, if any.
    pub fn insert<T: Clone + Send + Sync + 'static>(&mut self, value: T) -> Option<T> {
        self.map
            .get_or_insert_with(Box::default)
            .insert(TypeId::of::<T>(), Box::new(value))
            .and_then(|old| old.into_any().downcast::<T>().ok())
            .map(|old| *old)
    }

    /// The value of type `T`, if one is attached.
    pub fn get<T: 'static>(&self) -> Option<&T> {
        self.map
            .as_ref()?
            .get(&TypeId::of::<T>())
            .and_then(|value| value.as_ref().as_any().downcast_ref::<T>())
    }

    /// Takes the value of type `T` out, if one is attached.
    pub fn remove<T: 'static>(&mut self) -> Option<T> {
        self.map
            .as_mut()?
            .remove(&TypeId::of::<T>())
            .and_then(|old| old.into_any().downcast::<T>().ok())
            .map(|old| *old)
    }

    /// Whether no value is attached.
    pub fn is_empty(&self) -> bool {
        self.map.as_ref().is_none_or(|map| map.is_empty())
    }
}

impl Clone for Extensions {
    fn clone(&self) -> Self {
        Extensions {
            map: self.map.as_ref().map(|map| {
                Box::new(
                    map.iter()
                        .map(|(id, value)| (*id, (**value).clone_box()))
                        .collect(),
                )
            }),
        }
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extensions")
            .field("len", &self.map.as_ref().map_or(0, |map| map.len()))
            .finish()
    }
}
