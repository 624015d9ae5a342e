//! A msg server written like an axum app: one `Router` with routes, a nested router, shared
//! state, JSON in and out, a typed error, and a timeout on the routes; a client naming the
//! routes with `request_to`.
//!
//! Run with `cargo run -p msg-examples --example router`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use msg::extract::State;
use msg::reply::Reply;
use msg::{serve, Code, Error, IntoReply, Json, RepSocket, ReqSocket, Router, Status, Tcp};
use serde::{Deserialize, Serialize};

/// The application's state, shared by every route and connection.
#[derive(Clone, Default)]
struct App {
    users: Arc<Mutex<HashMap<u64, String>>>,
}

#[derive(Deserialize)]
struct NewUser {
    name: String,
}

#[derive(Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

/// The errors of the user routes, each with its code for the client.
enum UserError {
    NoSuchUser(u64),
    BadId,
}

impl IntoReply for UserError {
    fn into_reply(self) -> Reply {
        Err(match self {
            UserError::NoSuchUser(id) => Status::new(Code::NotFound, format!("no user {id}")),
            UserError::BadId => Status::new(Code::InvalidArgument, "an id is a number"),
        })
    }
}

async fn create(State(app): State<App>, Json(new): Json<NewUser>) -> Json<User> {
    let mut users = app.users.lock().unwrap();
    let id = users.len() as u64 + 1;
    users.insert(id, new.name.clone());
    Json(User { id, name: new.name })
}

async fn get(State(app): State<App>, id: String) -> Result<Json<User>, UserError> {
    let id: u64 = id.parse().map_err(|_| UserError::BadId)?;
    let users = app.users.lock().unwrap();
    let name = users.get(&id).ok_or(UserError::NoSuchUser(id))?;
    Ok(Json(User {
        id,
        name: name.clone(),
    }))
}

async fn count(State(app): State<App>) -> String {
    app.users.lock().unwrap().len().to_string()
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let users = Router::new()
        .route("create", create)
        .route("get", get)
        .route("count", count);
    let app = Router::new()
        .nest("users", users)
        .route("health", || async { "ok" })
        .route_layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(1)))
        .with_state(App::default());

    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await?;
    let addr = rep.local_addr().expect("bound");
    tokio::spawn(serve(rep, app));

    let mut req = ReqSocket::new(Tcp::default());
    req.connect(addr).await?;

    let reply = req.request_to("users.create", r#"{"name": "ada"}"#).await?;
    println!("users.create -> {}", String::from_utf8_lossy(&reply));
    let reply = req.request_to("users.get", "1").await?;
    println!("users.get 1  -> {}", String::from_utf8_lossy(&reply));
    println!(
        "users.count  -> {}",
        String::from_utf8_lossy(&req.request_to("users.count", "").await?)
    );
    for (route, body) in [
        ("users.get", "2"),
        ("users.get", "x"),
        ("users.delete", "1"),
    ] {
        match req.request_to(route, body).await {
            Err(Error::Remote { code, message }) => println!("{route} {body} -> {code}: {message}"),
            other => println!("{route} {body} -> {other:?}"),
        }
    }
    Ok(())
}
