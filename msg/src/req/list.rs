//! [`list`]: a fixed list of endpoints as a discovery stream.

use std::convert::Infallible;

use futures_core::Stream;
use tower::discover::Change;

/// A fixed list of targets as a stream of discovery changes, for
/// [`ReqSocket::discover`](crate::ReqSocket::discover): one
/// [`Change::Insert`] per target, keyed by its place in the list, and nothing more. The
/// static list in one call: `req.discover(msg::discover::list(["10.0.0.1:4444",
/// "10.0.0.2:4444"]))`.
///
/// # Example
///
/// ```
/// use futures_util::StreamExt;
/// use tower::discover::Change;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let changes: Vec<_> = msg::discover::list(["127.0.0.1:4444", "127.0.0.1:4445"])
///     .collect()
///     .await;
/// assert!(matches!(changes[1], Ok(Change::Insert(1, "127.0.0.1:4445"))));
/// # }
/// ```
pub fn list<I>(
    targets: I,
) -> impl Stream<Item = Result<Change<usize, I::Item>, Infallible>> + Send + 'static
where
    I: IntoIterator,
    I::IntoIter: Send + 'static,
    I::Item: Send + 'static,
{
    futures_util::stream::iter(
        targets
            .into_iter()
            .enumerate()
            .map(|(key, target)| Ok(Change::Insert(key, target))),
    )
}
