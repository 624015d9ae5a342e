//! [`Router`]: one reply socket serving many operations, each a plain async function, in
//! the manner of axum's router.
//!
//! A request names its route (`req.request_to("users.get", body)`, or a
//! [`Message::with_route`] through a tower stack); the router runs that route's handler,
//! or its fallback for a request that names none or an unknown one. Handlers are async
//! functions whose arguments are [extractors](crate::extract) and whose return is anything
//! [`IntoReply`](crate::IntoReply); a router is a `tower::Service` of requests, served by
//! [`serve`](crate::serve) like any other, with every layer.
//!
//! # Example
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//! use msg::extract::State;
//! use msg::{serve, Code, Error, RepSocket, ReqSocket, Router, Status, Tcp};
//!
//! #[derive(Clone, Default)]
//! struct App {
//!     created: Arc<AtomicU64>,
//! }
//!
//! async fn create(State(app): State<App>, name: String) -> Result<String, Status> {
//!     if name.is_empty() {
//!         return Err(Status::new(Code::InvalidArgument, "a user needs a name"));
//!     }
//!     let id = app.created.fetch_add(1, Ordering::Relaxed);
//!     Ok(format!("{id}: {name}"))
//! }
//!
//! async fn count(State(app): State<App>) -> String {
//!     app.created.load(Ordering::Relaxed).to_string()
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! let users = Router::new().route("create", create).route("count", count);
//! let app = Router::new()
//!     .nest("users", users)
//!     .route("health", || async { "ok" })
//!     .with_state(App::default());
//!
//! let mut rep = RepSocket::new(Tcp::default());
//! rep.bind("127.0.0.1:0").await?;
//! let addr = rep.local_addr().unwrap();
//! tokio::spawn(serve(rep, app));
//!
//! let mut req = ReqSocket::new(Tcp::default());
//! req.connect(addr).await?;
//! assert_eq!(req.request_to("users.create", "ada").await?, "0: ada");
//! assert_eq!(req.request_to("users.count", "").await?, "1");
//! assert_eq!(req.request_to("health", "").await?, "ok");
//! let err = req.request_to("users.create", "").await.unwrap_err();
//! assert!(matches!(err, Error::Remote { code: Code::InvalidArgument, .. }));
//! let err = req.request_to("users.delete", "").await.unwrap_err();
//! assert!(matches!(err, Error::Remote { code: Code::NotFound, .. }));
//! # Ok(())
//! # }
//! ```
//!
//! # Cost
//!
//! Finding the route is one hash lookup with the route the request carries, which shares
//! the connection's read buffer: no allocation. A handler's call is one boxed future; each
//! layer given to [`Router::layer`] or [`Router::route_layer`] adds one more. The peer's
//! address is kept as it is for TCP, TLS and QUIC (a `SocketAddr`); another transport's
//! (IPC's path) is shared behind an `Arc`, one allocation per request (see [`AnyPeer`]).

mod extensions;
pub mod extract;
mod handler;
#[cfg(feature = "axum")]
mod http;
#[cfg(feature = "json")]
mod json;
mod peer;
pub mod reply;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use msg_core::{Code, Message};
use tower::{BoxError, Layer, Service, ServiceExt};

use crate::{Request, Status};

pub use extensions::Extensions;
pub use handler::{Handler, HandlerFuture};
#[cfg(feature = "axum")]
pub use http::{http_status, UnknownPeer, CODE_HEADER};
#[cfg(feature = "json")]
pub use json::Json;
pub use peer::AnyPeer;

/// What a route runs: a handler with its state, or a service, behind the layers given to
/// the router. Cheap to clone (an `Arc`), always ready; a `tower::Service` of
/// `Request<AnyPeer>`, so that layers wrap it.
#[derive(Clone)]
pub struct RouteService(Arc<dyn ErasedRoute>);

impl fmt::Debug for RouteService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RouteService")
    }
}

/// A route's service, called through a shared reference.
trait ErasedRoute: Send + Sync + 'static {
    fn call(&self, request: Request<AnyPeer>) -> RouteFuture;
}

/// The future of a [`Router`]'s call: the reply, or the failure the client gets.
pub struct RouteFuture(HandlerFuture);

impl fmt::Debug for RouteFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RouteFuture")
    }
}

impl Future for RouteFuture {
    type Output = Result<Message, BoxError>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl Service<Request<AnyPeer>> for RouteService {
    type Response = Message;
    type Error = BoxError;
    type Future = RouteFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, request: Request<AnyPeer>) -> RouteFuture {
        self.0.call(request)
    }
}

/// A handler and the state it is called with.
struct HandlerRoute<H, T, S> {
    handler: H,
    state: S,
    _args: std::marker::PhantomData<fn() -> T>,
}

impl<H, T, S> ErasedRoute for HandlerRoute<H, T, S>
where
    H: Handler<T, S>,
    S: Clone + Send + Sync + 'static,
    T: 'static,
{
    #[inline]
    fn call(&self, request: Request<AnyPeer>) -> RouteFuture {
        RouteFuture(self.handler.clone().call(request, self.state.clone()))
    }
}

/// A tower service (a layered route, or one given as a route), called on a clone: what
/// axum does, so that the clone's `poll_ready` (a concurrency limit's permit) is its own.
/// The mutex is held only to clone it, and lets services that are not `Sync` in.
struct ServiceRoute<T>(Mutex<T>);

impl<T> ErasedRoute for ServiceRoute<T>
where
    T: Service<Request<AnyPeer>> + Clone + Send + 'static,
    T::Response: Into<Message>,
    T::Error: Into<BoxError>,
    T::Future: Send + 'static,
{
    fn call(&self, request: Request<AnyPeer>) -> RouteFuture {
        let service = match self.0.lock() {
            Ok(service) => service.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        RouteFuture(HandlerFuture::new(async move {
            match service.oneshot(request).await {
                Ok(reply) => Ok(reply.into()),
                Err(e) => Err(e.into()),
            }
        }))
    }
}

/// What answers a request no route takes, when the router has no fallback.
struct NotFound;

impl ErasedRoute for NotFound {
    fn call(&self, request: Request<AnyPeer>) -> RouteFuture {
        let status = match request.message().route() {
            Some(route) => Status::new(Code::NotFound, format!("no route `{route}`")),
            None => Status::new(
                Code::NotFound,
                "the request names no route, and the router has no fallback",
            ),
        };
        RouteFuture(HandlerFuture::ready(Err(BoxError::from(status))))
    }
}

impl RouteService {
    /// `service` as a route.
    fn from_service<T>(service: T) -> RouteService
    where
        T: Service<Request<AnyPeer>> + Clone + Send + 'static,
        T::Response: Into<Message>,
        T::Error: Into<BoxError>,
        T::Future: Send + 'static,
    {
        RouteService(Arc::new(ServiceRoute(Mutex::new(service))))
    }
}

/// Makes a route's service once the state is known.
type MakeRoute<S> = Arc<dyn Fn(&S) -> RouteService + Send + Sync>;

fn make_handler<H, T, S>(handler: H) -> MakeRoute<S>
where
    H: Handler<T, S>,
    S: Clone + Send + Sync + 'static,
    T: 'static,
{
    Arc::new(move |state: &S| {
        RouteService(Arc::new(HandlerRoute {
            handler: handler.clone(),
            state: state.clone(),
            _args: std::marker::PhantomData,
        }))
    })
}

fn make_layered<S, L>(make: MakeRoute<S>, layer: L) -> MakeRoute<S>
where
    S: 'static,
    L: Layer<RouteService> + Send + Sync + 'static,
    L::Service: Service<Request<AnyPeer>> + Clone + Send + 'static,
    <L::Service as Service<Request<AnyPeer>>>::Response: Into<Message>,
    <L::Service as Service<Request<AnyPeer>>>::Error: Into<BoxError>,
    <L::Service as Service<Request<AnyPeer>>>::Future: Send + 'static,
{
    Arc::new(move |state: &S| RouteService::from_service(layer.layer(make(state))))
}

/// The routes of a router whose state is given: what it serves with.
struct Table {
    /// Hashed with FxHash, not the default SipHash: the keys are the server's own routes,
    /// fixed once the table is made, so a client choosing what it asks for cannot make
    /// the table degrade, and a short route hashes in a few instructions.
    /// Keyed by the route's bytes: a received route was checked to be UTF-8 once, on
    /// arrival, and is not checked again to find its handler.
    routes: rustc_hash::FxHashMap<Box<[u8]>, RouteService>,
    /// Fallbacks of nested routers, by prefix (with its dot): for unknown routes under it.
    nested: Vec<(Box<[u8]>, RouteService)>,
    fallback: RouteService,
}

impl Table {
    #[inline]
    fn lookup(&self, route: Option<&msg_core::Route>) -> &RouteService {
        let Some(route) = route else {
            return &self.fallback;
        };
        let name: &[u8] = route.as_bytes();
        if let Some(service) = self.routes.get(name) {
            return service;
        }
        self.nested
            .iter()
            .filter(|(prefix, _)| name.starts_with(prefix))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(&self.fallback, |(_, service)| service)
    }
}

/// Routes requests by the route they name to plain async functions ([`Handler`]s), in the
/// manner of axum's router: see the [module](self) for an example.
///
/// `S` is the state its handlers take ([`State<S>`](crate::extract::State)) and that
/// [`with_state`](Self::with_state) gives; a `Router<()>` (the default) has all it needs,
/// and is a `tower::Service<Request<A>>` for the addresses `A` of every transport, to give
/// to [`serve`](crate::serve) and wrap in layers. Cloning a router is cheap.
///
/// A request that names no route, or a route the router does not have, goes to the
/// [`fallback`](Self::fallback); without one, the client gets
/// [`Error::Remote`](crate::Error::Remote) with [`Code::NotFound`].
pub struct Router<S = ()> {
    routes: HashMap<Box<str>, MakeRoute<S>>,
    nested: Vec<(Box<str>, MakeRoute<S>)>,
    fallback: MakeRoute<S>,
    has_fallback: bool,
    /// The routes made with the state, once served; shared by the clones.
    table: Arc<OnceLock<Table>>,
}

impl<S> Clone for Router<S> {
    fn clone(&self) -> Self {
        Router {
            routes: self.routes.clone(),
            nested: self.nested.clone(),
            fallback: self.fallback.clone(),
            has_fallback: self.has_fallback,
            table: self.table.clone(),
        }
    }
}

impl<S> fmt::Debug for Router<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut routes: Vec<&str> = self.routes.keys().map(|r| &**r).collect();
        routes.sort_unstable();
        f.debug_struct("Router").field("routes", &routes).finish()
    }
}

impl<S: Clone + Send + Sync + 'static> Default for Router<S> {
    fn default() -> Self {
        Router::new()
    }
}

fn not_found<S>() -> MakeRoute<S> {
    let service = RouteService(Arc::new(NotFound));
    Arc::new(move |_: &S| service.clone())
}

impl<S: Clone + Send + Sync + 'static> Router<S> {
    /// A router with no routes: every request gets [`Code::NotFound`].
    pub fn new() -> Self {
        Router {
            routes: HashMap::new(),
            nested: Vec::new(),
            fallback: not_found(),
            has_fallback: false,
            table: Arc::default(),
        }
    }

    /// The same routes, to serve anew: the table served is made again.
    fn changed(mut self) -> Self {
        self.table = Arc::default();
        self
    }

    /// Runs `handler` for requests to `route`.
    ///
    /// # Panics
    ///
    /// If `route` is not a valid route (empty, or longer than
    /// [`MAX_ROUTE_LEN`](crate::MAX_ROUTE_LEN)), or the router has it already: mistakes in
    /// the program, found when it builds its router.
    pub fn route<H, T>(self, route: &str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.add(route, make_handler(handler))
    }

    /// Runs `service` for requests to `route`: a `tower::Service` of requests, as
    /// [`serve`](crate::serve) takes one.
    ///
    /// # Panics
    ///
    /// As [`route`](Self::route).
    pub fn route_service<T>(self, route: &str, service: T) -> Self
    where
        T: Service<Request<AnyPeer>> + Clone + Send + 'static,
        T::Response: Into<Message>,
        T::Error: Into<BoxError>,
        T::Future: Send + 'static,
    {
        let service = RouteService::from_service(service);
        self.add(route, Arc::new(move |_: &S| service.clone()))
    }

    fn add(mut self, route: &str, make: MakeRoute<S>) -> Self {
        if let Err(e) = msg_core::Route::new(route) {
            panic!("`{route}` cannot be a route: {e}");
        }
        if self.routes.insert(route.into(), make).is_some() {
            panic!("the router has a route `{route}` already");
        }
        self.changed()
    }

    /// Adds the routes of `router` under `prefix` and a dot: its route `get` is
    /// `prefix.get` here. A request to an unknown route under the prefix goes to its
    /// fallback if it has one (set with [`fallback`](Self::fallback)), to this router's
    /// otherwise. Its layers stay on its routes; this router's later
    /// [`layer`](Self::layer) and [`route_layer`](Self::route_layer) wrap them too.
    ///
    /// # Panics
    ///
    /// As [`route`](Self::route), for a prefixed route.
    pub fn nest(mut self, prefix: &str, router: Router<S>) -> Self {
        let prefix = prefix.trim_end_matches('.');
        for (route, make) in router.routes {
            self = self.add(&format!("{prefix}.{route}"), make);
        }
        for (inner, make) in router.nested {
            self.nested.push((format!("{prefix}.{inner}").into(), make));
        }
        if router.has_fallback {
            self.nested
                .push((format!("{prefix}.").into(), router.fallback));
        }
        self.changed()
    }

    /// Runs `handler` for the requests no route takes: those that name no route, or one
    /// the router does not have. Without it, they get [`Code::NotFound`].
    pub fn fallback<H, T>(mut self, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.fallback = make_handler(handler);
        self.has_fallback = true;
        self.changed()
    }

    /// Wraps every route and the fallback in `layer`: a tower layer over the router's
    /// [`RouteService`]s, such as tower's timeout or concurrency limit, msg's
    /// [`TraceLayer`](crate::layers::TraceLayer), or an
    /// [`Extension`](crate::extract::Extension). It wraps the routes added so far; add it
    /// last. (Wrapping the whole router, `ServiceBuilder::new().layer(l).service(router)`,
    /// does the same for a layer generic over the address type.)
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<RouteService> + Clone + Send + Sync + 'static,
        L::Service: Service<Request<AnyPeer>> + Clone + Send + 'static,
        <L::Service as Service<Request<AnyPeer>>>::Response: Into<Message>,
        <L::Service as Service<Request<AnyPeer>>>::Error: Into<BoxError>,
        <L::Service as Service<Request<AnyPeer>>>::Future: Send + 'static,
    {
        self = self.route_layer(layer.clone());
        for (_, make) in &mut self.nested {
            *make = make_layered(make.clone(), layer.clone());
        }
        self.fallback = make_layered(self.fallback, layer);
        self.changed()
    }

    /// Wraps the routes added so far in `layer`, and not the fallback: a check that only
    /// requests to a known route should meet (a request to an unknown route still gets
    /// [`Code::NotFound`], not the layer's refusal).
    pub fn route_layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<RouteService> + Clone + Send + Sync + 'static,
        L::Service: Service<Request<AnyPeer>> + Clone + Send + 'static,
        <L::Service as Service<Request<AnyPeer>>>::Response: Into<Message>,
        <L::Service as Service<Request<AnyPeer>>>::Error: Into<BoxError>,
        <L::Service as Service<Request<AnyPeer>>>::Future: Send + 'static,
    {
        for make in self.routes.values_mut() {
            *make = make_layered(make.clone(), layer.clone());
        }
        self.changed()
    }

    /// Gives the handlers their state: the router then needs none (or the state `S2` of
    /// a router it will be nested in).
    pub fn with_state<S2: 'static>(self, state: S) -> Router<S2> {
        let bind = |make: MakeRoute<S>| -> MakeRoute<S2> {
            let state = state.clone();
            Arc::new(move |_: &S2| make(&state))
        };
        Router {
            routes: self
                .routes
                .into_iter()
                .map(|(route, make)| (route, bind(make)))
                .collect(),
            nested: self
                .nested
                .into_iter()
                .map(|(prefix, make)| (prefix, bind(make)))
                .collect(),
            fallback: bind(self.fallback),
            has_fallback: self.has_fallback,
            table: Arc::default(),
        }
    }

    /// The routes this router has, sorted.
    pub fn routes(&self) -> Vec<&str> {
        let mut routes: Vec<&str> = self.routes.keys().map(|r| &**r).collect();
        routes.sort_unstable();
        routes
    }
}

impl Router<()> {
    /// The routes' services, made once and shared by the clones.
    #[inline]
    fn table(&self) -> &Table {
        self.table.get_or_init(|| Table {
            routes: self
                .routes
                .iter()
                .map(|(route, make)| (Box::from(route.as_bytes()), make(&())))
                .collect(),
            nested: self
                .nested
                .iter()
                .map(|(prefix, make)| (Box::from(prefix.as_bytes()), make(&())))
                .collect(),
            fallback: (self.fallback)(&()),
        })
    }

    /// Calls the route `request` names.
    #[inline]
    fn dispatch(&self, request: Request<AnyPeer>) -> RouteFuture {
        self.table()
            .lookup(request.message().route())
            .0
            .call(request)
    }
}

/// Serves requests from a socket of any transport: each goes to the handler of its
/// route.
impl<A> Service<Request<A>> for Router<()>
where
    A: fmt::Debug + Clone + Send + Sync + 'static,
{
    type Response = Message;
    type Error = BoxError;
    type Future = RouteFuture;

    /// Always ready: each route is ready on its own (a layer's readiness is met in the
    /// call, on a clone of its service).
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, request: Request<A>) -> RouteFuture {
        self.dispatch(request.map_peer(AnyPeer::new))
    }
}
