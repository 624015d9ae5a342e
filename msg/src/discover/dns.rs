//! [`Dns`]: the endpoints behind a DNS name, resolved again on the records' TTL.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::TokioResolver;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Change;
use crate::Backoff;

/// Shortest wait between two resolutions on the records' TTL: a record with a TTL of 0 (or
/// one already expired) is asked for again a second later, not in a loop.
pub const MIN_TTL: Duration = Duration::from_secs(1);

/// Longest wait between two resolutions: a record with a TTL of a day is still asked for
/// every 5 minutes, so that a change the zone's owner made without lowering the TTL first
/// is seen within 5 minutes.
pub const MAX_TTL: Duration = Duration::from_secs(300);

/// Shortest wait between two resolutions asked for by [`DnsRefresh::refresh`] (a socket
/// whose every endpoint is down): at most one a second, however often it is asked.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// Why one resolution failed. The [`Dns`] stream yields it as an item and goes on: it asks
/// again after a [`Backoff`] delay, and the endpoints it gave before stay as they were.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The target given to [`Dns::new`] or [`Dns::srv`] is no `name:port` or no DNS name.
    #[error("invalid DNS target `{target}`: {reason}")]
    InvalidTarget {
        /// The target as given.
        target: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The name does not exist (NXDOMAIN).
    #[error("no such DNS name `{name}` (NXDOMAIN)")]
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// The name exists but has no record of the kind asked for (A and AAAA, or SRV), or an
    /// SRV record's hosts have no address.
    #[error("DNS name `{name}` has no records")]
    NoRecords {
        /// The name asked for.
        name: String,
    },
    /// The system's resolver configuration (`/etc/resolv.conf`) could not be read.
    #[error("the system's DNS configuration could not be read: {reason}")]
    Config {
        /// Why, as the resolver tells it.
        reason: String,
    },
    /// The name servers did not answer, or answered with an error (SERVFAIL, REFUSED), or
    /// the answer could not be read.
    #[error("resolving `{name}` failed: {reason}")]
    Resolve {
        /// The name asked for.
        name: String,
        /// Why, as the resolver tells it.
        reason: String,
    },
}

/// One item of a [`Dns`] stream.
type Item = Result<Change<SocketAddr, SocketAddr>, DnsError>;

/// What to ask for.
#[derive(Debug, Clone)]
enum Query {
    /// A and AAAA records of a name; every address with the one port.
    Ip { name: Name, port: u16 },
    /// SRV records of a name; each one's host (its A and AAAA records) with its port.
    Srv { name: Name },
    /// An address given as such: itself, for good.
    Addr(SocketAddr),
}

/// Options of a [`Dns`] source, from [`Dns::builder`] or [`Dns::srv_builder`].
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use msg::discover::Dns;
/// use msg::Backoff;
///
/// let dns = Dns::builder("replicas.test:5555")?
///     .name_server("127.0.0.1:5353".parse().unwrap())
///     .backoff(Backoff::default().initial(Duration::from_millis(100)))
///     .build();
/// # Ok::<(), msg::discover::DnsError>(())
/// ```
#[derive(Debug, Clone)]
pub struct DnsBuilder {
    query: Query,
    name_servers: Vec<SocketAddr>,
    backoff: Backoff,
    timeout: Duration,
}

impl DnsBuilder {
    /// Asks these name servers (plain DNS, UDP with TCP for a truncated answer) instead of
    /// the system's. Called again, adds one. Default: the name servers, search domains and
    /// options of `/etc/resolv.conf`.
    pub fn name_server(mut self, addr: SocketAddr) -> Self {
        self.name_servers.push(addr);
        self
    }

    /// Sets the delays between resolutions that failed: doubling from its `initial` to its
    /// `max`, with its jitter; its `max_attempts` is not used (a `Dns` source asks forever).
    /// Default: 500 ms doubling to 30 s, with full jitter, so that a name that comes back is
    /// found soon and a name server that is down is not hammered.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets how long one query waits for a name server's answer before it is asked again or
    /// the next one is. Default: 5 s, as resolv.conf's `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The source. Nothing is asked until the stream is first polled.
    pub fn build(self) -> Dns {
        let refresh = Arc::new(Notify::new());
        let state = State {
            options: self,
            resolver: None,
            endpoints: BTreeSet::new(),
            pending: VecDeque::new(),
            next: None,
            last: None,
            delays: None,
            refresh: refresh.clone(),
        };
        Dns {
            stream: Box::pin(futures_util::stream::unfold(state, State::step)),
            refresh: DnsRefresh(refresh),
        }
    }
}

/// The endpoints behind a DNS name, as a discovery stream of [`Change`]s keyed by address.
///
/// It resolves the name when first polled and yields a [`Change::Insert`] for each address;
/// then it resolves again when the records' TTL runs out (clamped to [`MIN_TTL`] ..
/// [`MAX_TTL`]), or sooner when told to by a [`DnsRefresh`] (at most once per
/// [`MIN_REFRESH_INTERVAL`]), and yields only the difference from the last answer: an insert
/// for each new address, a remove for each that is gone, nothing when it is unchanged.
///
/// A resolution that fails (NXDOMAIN, no records, no answer) yields a [`DnsError`] item and
/// changes nothing: the endpoints given before stay, and the name is asked for again after
/// a [`Backoff`] delay. The stream never ends.
///
/// The resolver is hickory-resolver's, on tokio, with its cache cleared before each
/// resolution (each answer is fresh from the name servers).
///
/// # Example
///
/// ```no_run
/// use msg::discover::{Change, Dns};
/// use tokio_stream::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), msg::discover::DnsError> {
/// let mut dns = Dns::new("replicas.internal:5555")?;
/// while let Some(change) = dns.next().await {
///     match change {
///         Ok(Change::Insert(addr, _)) => println!("up: {addr}"),
///         Ok(Change::Remove(addr)) => println!("gone: {addr}"),
///         Err(e) => println!("{e}"),
///     }
/// }
/// # Ok(())
/// # }
/// ```
pub struct Dns {
    stream: Pin<Box<dyn Stream<Item = Item> + Send>>,
    refresh: DnsRefresh,
}

impl fmt::Debug for Dns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dns").finish_non_exhaustive()
    }
}

impl Dns {
    /// The addresses (A and AAAA records) of `target`, a `name:port`, each with the port,
    /// with the system's name servers. See [`Dns::builder`] for options.
    ///
    /// # Errors
    ///
    /// [`DnsError::InvalidTarget`] if `target` is no `name:port` with a valid name and port.
    pub fn new(target: &str) -> Result<Dns, DnsError> {
        Ok(Self::builder(target)?.build())
    }

    /// The hosts and ports of the SRV records of `name` (such as `_pub._tcp.prices.internal`),
    /// each host's addresses with its port, with the system's name servers. Every host is an
    /// endpoint: the records' priorities and weights are not used (the socket balances on
    /// load). See [`Dns::srv_builder`] for options.
    ///
    /// # Errors
    ///
    /// [`DnsError::InvalidTarget`] if `name` is no valid DNS name.
    pub fn srv(name: &str) -> Result<Dns, DnsError> {
        Ok(Self::srv_builder(name)?.build())
    }

    /// Options for the A/AAAA source of `target` (`name:port`).
    ///
    /// # Errors
    ///
    /// [`DnsError::InvalidTarget`] if `target` is no `name:port` with a valid name and port.
    pub fn builder(target: &str) -> Result<DnsBuilder, DnsError> {
        let invalid = |reason| DnsError::InvalidTarget {
            target: target.to_owned(),
            reason,
        };
        let (host, port) = target
            .rsplit_once(':')
            .ok_or_else(|| invalid("no port (expected name:port)"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| invalid("the port is no number below 65536"))?;
        // An IPv6 literal comes in brackets, as in a URL.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(DnsBuilder::new(Query::Addr(SocketAddr::new(ip, port))));
        }
        let name = parse_name(host).ok_or_else(|| invalid("not a DNS name"))?;
        Ok(DnsBuilder::new(Query::Ip { name, port }))
    }

    /// Options for the SRV source of `name`.
    ///
    /// # Errors
    ///
    /// [`DnsError::InvalidTarget`] if `name` is no valid DNS name.
    pub fn srv_builder(name: &str) -> Result<DnsBuilder, DnsError> {
        let name = parse_name(name).ok_or_else(|| DnsError::InvalidTarget {
            target: name.to_owned(),
            reason: "not a DNS name",
        })?;
        Ok(DnsBuilder::new(Query::Srv { name }))
    }

    /// A handle that asks this source to resolve again now, for a socket whose every
    /// endpoint is down (see [`DnsRefresh`]).
    pub fn refresher(&self) -> DnsRefresh {
        self.refresh.clone()
    }
}

fn parse_name(host: &str) -> Option<Name> {
    if host.is_empty() {
        return None;
    }
    Name::from_utf8(host).ok()
}

impl Stream for Dns {
    type Item = Result<Change<SocketAddr, SocketAddr>, DnsError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.stream.as_mut().poll_next(cx)
    }
}

/// Asks a [`Dns`] source to resolve again now, rather than when the TTL runs out: what a
/// socket calls when every endpoint it has is down, since the replicas may have moved.
///
/// Rate limited: the source resolves at most once per [`MIN_REFRESH_INTERVAL`], however
/// often it is asked, and not during the backoff after a failed resolution. Asked while a
/// resolution is under way, it resolves once more after it (rate limited too).
#[derive(Debug, Clone)]
pub struct DnsRefresh(Arc<Notify>);

impl DnsRefresh {
    /// Asks for a resolution now (rate limited).
    pub fn refresh(&self) {
        self.0.notify_one();
    }
}

impl DnsBuilder {
    fn new(query: Query) -> Self {
        DnsBuilder {
            query,
            name_servers: Vec::new(),
            backoff: Backoff::default()
                .initial(Duration::from_millis(500))
                .max(Duration::from_secs(30)),
            timeout: Duration::from_secs(5),
        }
    }

    /// A resolver with these options, or the system's configuration.
    fn resolver(&self) -> Result<TokioResolver, DnsError> {
        let mut builder = if self.name_servers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| DnsError::Config {
                reason: e.to_string(),
            })?
        } else {
            let servers = self
                .name_servers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let options = builder.options_mut();
        options.timeout = self.timeout;
        // Both families: a name with A and AAAA records gives every address.
        options.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
        builder.build().map_err(|e| DnsError::Config {
            reason: e.to_string(),
        })
    }
}

/// The source's state between two items.
struct State {
    options: DnsBuilder,
    /// Made at the first resolution (it reads the system's configuration then).
    resolver: Option<TokioResolver>,
    /// The endpoints given so far.
    endpoints: BTreeSet<SocketAddr>,
    /// Changes found and not yet yielded.
    pending: VecDeque<Change<SocketAddr, SocketAddr>>,
    /// When to resolve next; `None` before the first resolution.
    next: Option<Instant>,
    /// When the last resolution started, for the refresh's rate limit.
    last: Option<Instant>,
    /// The delays after failed resolutions, since the last success.
    delays: Option<Box<dyn Iterator<Item = Duration> + Send>>,
    refresh: Arc<Notify>,
}

impl State {
    /// Yields the next change or error, resolving as often as it takes.
    async fn step(mut self) -> Option<(Item, Self)> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                return Some((Ok(change), self));
            }
            self.wait().await;
            self.last = Some(Instant::now());
            match self.resolve().await {
                Ok((found, valid_until)) => {
                    self.delays = None;
                    self.next = Some(valid_until);
                    self.differ(found);
                }
                Err(e) => {
                    let backoff = self.options.backoff;
                    let delays = self
                        .delays
                        .get_or_insert_with(|| Box::new(backoff.delays()));
                    let delay = delays.next().unwrap_or(backoff.max);
                    self.next = Some(Instant::now() + delay);
                    tracing::debug!(error = %e, ?delay, "DNS resolution failed; asking again later");
                    return Some((Err(e), self));
                }
            }
        }
    }

    /// Waits until the next resolution is due: the TTL or the backoff ran out, or a refresh
    /// was asked for (not within [`MIN_REFRESH_INTERVAL`] of the last, nor during a backoff).
    async fn wait(&mut self) {
        let Some(next) = self.next else {
            return;
        };
        let refreshed = tokio::select! {
            _ = tokio::time::sleep_until(next) => false,
            _ = self.refresh.notified(), if self.delays.is_none() => true,
        };
        if refreshed {
            let earliest = self.last.map_or(next, |last| last + MIN_REFRESH_INTERVAL);
            tokio::time::sleep_until(earliest.min(next)).await;
        }
    }

    /// One resolution: the endpoints found, and when to resolve again.
    async fn resolve(&mut self) -> Result<(BTreeSet<SocketAddr>, Instant), DnsError> {
        let (found, valid_until) = match &self.options.query {
            Query::Addr(addr) => return Ok((BTreeSet::from([*addr]), Instant::now() + MAX_TTL)),
            Query::Ip { name, port } => {
                let resolver = resolver(&mut self.resolver, &self.options)?;
                resolve_ip(resolver, name, *port).await?
            }
            Query::Srv { name } => {
                let resolver = resolver(&mut self.resolver, &self.options)?;
                resolve_srv(resolver, name).await?
            }
        };
        if found.is_empty() {
            return Err(DnsError::NoRecords {
                name: self.options.query.to_string(),
            });
        }
        let ttl = valid_until
            .saturating_duration_since(std::time::Instant::now())
            .clamp(MIN_TTL, MAX_TTL);
        Ok((found, Instant::now() + ttl))
    }

    /// Queues the changes from the endpoints given so far to `found`: inserts first, so
    /// that a socket gains the new endpoints before it loses the old.
    fn differ(&mut self, found: BTreeSet<SocketAddr>) {
        for addr in found.difference(&self.endpoints) {
            self.pending.push_back(Change::Insert(*addr, *addr));
        }
        for addr in self.endpoints.difference(&found) {
            self.pending.push_back(Change::Remove(*addr));
        }
        self.endpoints = found;
    }
}

/// The resolver, made at the first resolution (it reads the system's configuration then),
/// with its cache cleared: each answer comes fresh from the name servers, as the cache
/// would give back the last answer to a refresh, and a negative one for longer than the
/// backoff.
fn resolver<'a>(
    slot: &'a mut Option<TokioResolver>,
    options: &DnsBuilder,
) -> Result<&'a TokioResolver, DnsError> {
    let resolver = match slot {
        Some(resolver) => resolver,
        None => slot.insert(options.resolver()?),
    };
    resolver.clear_cache();
    Ok(resolver)
}

/// The addresses of `name`, each with `port`, and until when they hold.
async fn resolve_ip(
    resolver: &TokioResolver,
    name: &Name,
    port: u16,
) -> Result<(BTreeSet<SocketAddr>, std::time::Instant), DnsError> {
    let lookup = resolver
        .lookup_ip(name.clone())
        .await
        .map_err(|e| dns_error(name, e))?;
    let found = lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
    Ok((found, lookup.valid_until()))
}

/// The addresses of the hosts of `name`'s SRV records, each with its record's port, and
/// until when they hold (the soonest of the records').
async fn resolve_srv(
    resolver: &TokioResolver,
    name: &Name,
) -> Result<(BTreeSet<SocketAddr>, std::time::Instant), DnsError> {
    let lookup = resolver
        .srv_lookup(name.clone())
        .await
        .map_err(|e| dns_error(name, e))?;
    let mut valid_until = lookup.valid_until();
    let srvs: Vec<(Name, u16)> = lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::SRV(srv) => Some((srv.target.clone(), srv.port)),
            _ => None,
        })
        .collect();
    let mut found = BTreeSet::new();
    for (host, port) in srvs {
        // "." is the record's way to say there is no such service.
        if host.is_root() {
            continue;
        }
        match resolve_ip(resolver, &host, port).await {
            Ok((addrs, until)) => {
                found.extend(addrs);
                valid_until = valid_until.min(until);
            }
            // One host that went away does not hide the others.
            Err(e) => tracing::debug!(host = %host, error = %e, "SRV host not resolved"),
        }
    }
    Ok((found, valid_until))
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Query::Ip { name, .. } | Query::Srv { name } => name.fmt(f),
            Query::Addr(addr) => addr.ip().fmt(f),
        }
    }
}

fn dns_error(name: &Name, e: NetError) -> DnsError {
    let name = name.to_string();
    if e.is_nx_domain() {
        DnsError::NotFound { name }
    } else if e.is_no_records_found() {
        DnsError::NoRecords { name }
    } else {
        DnsError::Resolve {
            name,
            reason: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_without_a_port_or_a_name_are_refused() {
        for bad in [
            "replicas",
            "replicas:",
            "replicas:99999",
            ":80",
            "bad name!:80",
        ] {
            match Dns::new(bad) {
                Err(DnsError::InvalidTarget { target, .. }) => assert_eq!(target, bad),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(Dns::new("replicas.internal:5555").is_ok());
        assert!(Dns::new("[::1]:5555").is_ok());
        assert!(Dns::srv("_pub._tcp.prices.internal").is_ok());
    }
}
