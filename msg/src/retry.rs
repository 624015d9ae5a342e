//! [`RetryPolicy`]: a `tower::retry` policy for a [`ReqSocket`](crate::ReqSocket), with capped
//! exponential backoff, jitter and a retry budget. Opt-in: nothing retries unless you stack
//! `tower::retry::RetryLayer::new(RetryPolicy::default())` over a socket.
//!
//! # What is retried: the idempotency rule
//!
//! A request is retried only when retrying cannot make the server act twice, unless you
//! say it may:
//!
//! - **Always** (the request never reached a server, or never ran there):
//!   [`Error::NotConnected`] (no connection within `reconnect_wait`),
//!   [`Error::Transport`] (the dial failed) and [`Error::NotProcessed`] (the server went
//!   away before it ran the request), but for the failures no retry can fix, below.
//! - **Only if you mark the policy [`idempotent`](RetryPolicy::idempotent)** (the request
//!   may have reached the server, and the handler may have run): the connection was lost
//!   with the request on the wire ([`Error::ConnectionClosed`], [`Error::Io`],
//!   [`Error::HeartbeatTimeout`]) or it timed out ([`Error::Timeout`]).
//! - **Never**: [`Error::Remote`] (the handler ran and failed: retrying would run it again
//!   for the same answer), every error about the request itself (too large, closed
//!   socket, refused handshake), and, even with [`idempotent`](RetryPolicy::idempotent),
//!   a certificate or configuration error ([`Error::is_permanent`]: this side does not
//!   trust the server's certificate, or the server refused this side's, or the transport
//!   lacks the configuration). A `ReqSocket` whose dial fails that way fails the requests
//!   waiting for the connection at once, with that error.
//!
//! The budget (tower's `TpsBudget`) caps retries at a share of recent successful requests,
//! so that a failing server is not hammered by every client at once.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use msg::retry::RetryPolicy;
//! use msg::{ReqSocket, Tcp};
//! use tower::retry::RetryLayer;
//! use tower::ServiceBuilder;
//!
//! let req = ReqSocket::new(Tcp::default());
//! let policy = RetryPolicy::default().max_retries(5).idempotent(true);
//! let svc = ServiceBuilder::new().layer(RetryLayer::new(policy)).service(req);
//! ```
//!
//! # Over tower's timeout
//!
//! The policy also takes the `BoxError` that tower's own layers return, so it stacks over
//! `timeout` as written, with no `map_err` in between. Each attempt gets its own timeout; one
//! that times out may have reached the server, so it is retried only when the policy is
//! [`idempotent`](RetryPolicy::idempotent). `msg::Error::from` turns the stack's error back
//! into an [`Error`] (tower's `Elapsed` becomes [`Error::Timeout`]).
//!
//! ```
//! use std::time::Duration;
//! use msg::retry::RetryPolicy;
//! use msg::{Error, Message, ReqSocket, Tcp};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # async fn call(req: ReqSocket<Tcp>) -> Result<(), Error> {
//! let client = ServiceBuilder::new()
//!     .retry(RetryPolicy::default().idempotent(true))
//!     .timeout(Duration::from_secs(1))
//!     .service(req);
//! let reply = client.oneshot(Message::from("price?")).await.map_err(Error::from)?;
//! # let _ = reply;
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use msg_core::Message;
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::Policy;

use crate::{Backoff, Error};

/// Retries what is safe to retry; see the [module](self) docs.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    backoff: Backoff,
    max_retries: u32,
    idempotent: bool,
    budget: Arc<TpsBudget>,
    /// Retries made for this request (each request gets its own copy of the policy).
    retries: u32,
}

impl Default for RetryPolicy {
    /// Up to 3 retries per request, backoff from 50 ms to 1 s with full jitter, a budget of
    /// 10 retries a second plus 20% of the successful requests of the last 10 s, and only
    /// requests that never reached a server.
    fn default() -> Self {
        RetryPolicy {
            backoff: Backoff::default(),
            max_retries: 3,
            idempotent: false,
            budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
            retries: 0,
        }
    }
}

impl RetryPolicy {
    /// Sets the most retries of one request. Default: 3.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Sets the delays between retries. Default: [`Backoff::default`].
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Says the requests are idempotent: a request that may have reached the server (lost
    /// with the connection, or timed out) may be sent again. Default: false.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    /// Sets the retry budget: `ttl` of history, `min_per_sec` retries a second always
    /// allowed, and `retry_percent` (0 to 1000) of the successful requests on top.
    pub fn budget(mut self, ttl: Duration, min_per_sec: u32, retry_percent: f32) -> Self {
        self.budget = Arc::new(TpsBudget::new(ttl, min_per_sec, retry_percent));
        self
    }

    /// Whether a request that failed with `e` may be sent again.
    pub fn is_retryable(&self, e: &Error) -> bool {
        match e {
            e if e.is_permanent() => false,
            Error::NotConnected { .. } | Error::Transport(_) | Error::NotProcessed => true,
            Error::ConnectionClosed
            | Error::Io(_)
            | Error::HeartbeatTimeout { .. }
            | Error::Timeout { .. } => self.idempotent,
            _ => false,
        }
    }
}

impl RetryPolicy {
    /// Whether a request that failed with `e`, as a layer under the retry sees it (tower's
    /// `Timeout`, `LoadShed` and most layers box their errors), may be sent again: tower's
    /// `Elapsed` as a timeout, its `Overloaded` as a request that never left, and a boxed
    /// [`Error`] as itself. Anything else is not retried.
    pub fn is_retryable_boxed(&self, e: &tower::BoxError) -> bool {
        if let Some(e) = e.downcast_ref::<Error>() {
            self.is_retryable(e)
        } else if e.is::<tower::timeout::error::Elapsed>() {
            self.idempotent
        } else {
            e.is::<tower::load_shed::error::Overloaded>()
        }
    }

    /// One outcome: a deposit for a success, a delay for a failure worth retrying.
    fn next<E: std::fmt::Display>(
        &mut self,
        result: Result<(), &E>,
        retryable: bool,
    ) -> Option<tokio::time::Sleep> {
        match result {
            Ok(()) => {
                self.budget.deposit();
                None
            }
            Err(e) if retryable && self.retries < self.max_retries => {
                if !self.budget.withdraw() {
                    tracing::debug!(target: "msg", error = %e, "retry budget spent; not retried");
                    return None;
                }
                let delay = self
                    .backoff
                    .delays()
                    .nth(self.retries as usize)
                    .unwrap_or_default();
                self.retries += 1;
                tracing::debug!(target: "msg", error = %e, retry = self.retries, ?delay, "retrying");
                Some(tokio::time::sleep(delay))
            }
            Err(_) => None,
        }
    }
}

/// The policy straight over a socket, or over layers that keep [`Error`].
impl Policy<Message, Message, Error> for RetryPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _req: &mut Message,
        result: &mut Result<Message, Error>,
    ) -> Option<Self::Future> {
        let retryable = result.as_ref().is_err_and(|e| self.is_retryable(e));
        self.next(result.as_ref().map(|_| ()), retryable)
    }

    fn clone_request(&mut self, req: &Message) -> Option<Message> {
        Some(req.clone())
    }
}

/// The policy over tower's own layers, whose error is a `BoxError`: `.retry(policy)
/// .timeout(d)` in a `ServiceBuilder` needs no `map_err` in between. A timeout counts as a
/// request that may have reached the server (retried only when
/// [`idempotent`](RetryPolicy::idempotent)).
impl Policy<Message, Message, tower::BoxError> for RetryPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _req: &mut Message,
        result: &mut Result<Message, tower::BoxError>,
    ) -> Option<Self::Future> {
        let retryable = result.as_ref().is_err_and(|e| self.is_retryable_boxed(e));
        self.next(result.as_ref().map(|_| ()), retryable)
    }

    fn clone_request(&mut self, req: &Message) -> Option<Message> {
        Some(req.clone())
    }
}
