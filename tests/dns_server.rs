//! A small authoritative DNS server on a UDP loopback port, for the discovery tests: a zone
//! of A, AAAA and SRV records the test changes while it runs, NXDOMAIN for names not in it,
//! and a count of the queries asked for each name. Built on hickory-proto's message types;
//! no traffic leaves loopback.
//!
//! A test file takes it with `mod dns_server;`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;
use tokio::sync::watch;

/// One name's records.
#[derive(Debug, Clone, Default)]
struct Entry {
    addrs: Vec<IpAddr>,
    /// (host, port) pairs.
    srv: Vec<(String, u16)>,
}

#[derive(Default)]
struct Zone {
    names: HashMap<Name, Entry>,
    ttl: u32,
    /// Queries are read and counted, never answered, as by a server that hangs.
    silent: bool,
}

/// The server; it answers until dropped.
pub struct DnsServer {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    /// Queries asked so far, by name (lower case, fully qualified).
    queries: watch::Receiver<HashMap<String, u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn name(name: &str) -> Name {
    let mut name = Name::from_utf8(name).expect("a test name");
    name.set_fqdn(true);
    name.to_lowercase()
}

impl DnsServer {
    /// Starts a server on 127.0.0.1 (a port of the system's choosing) with an empty zone,
    /// giving records with a TTL of `ttl` seconds.
    pub async fn start(ttl: u32) -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind a UDP port");
        let addr = socket.local_addr().expect("its address");
        let zone = Arc::new(Mutex::new(Zone {
            names: HashMap::new(),
            ttl,
            silent: false,
        }));
        let (counts, queries) = watch::channel(HashMap::new());
        let task = tokio::spawn(serve(socket, zone.clone(), counts));
        DnsServer {
            addr,
            zone,
            queries,
            task,
        }
    }

    /// The address to give the resolver as its name server.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A `Dns` source for `target` (`name:port`) asking this server only, with short
    /// backoffs (50 ms doubling to 200 ms) and a 2 s query timeout, as a test wants.
    pub fn source(&self, target: &str) -> msg::discover::Dns {
        msg::discover::Dns::builder(target)
            .expect("a valid target")
            .name_server(self.addr)
            .backoff(
                msg::Backoff::default()
                    .initial(std::time::Duration::from_millis(50))
                    .max(std::time::Duration::from_millis(200)),
            )
            .timeout(std::time::Duration::from_secs(2))
            .build()
    }

    /// Sets the A and AAAA records of `host` (from now on, `host` exists).
    pub fn set(&self, host: &str, addrs: &[IpAddr]) {
        let mut zone = self.zone.lock().unwrap();
        zone.names.entry(name(host)).or_default().addrs = addrs.to_vec();
    }

    /// Sets the SRV records of `service` to these hosts and ports.
    pub fn set_srv(&self, service: &str, targets: &[(&str, u16)]) {
        let mut zone = self.zone.lock().unwrap();
        zone.names.entry(name(service)).or_default().srv =
            targets.iter().map(|(h, p)| (h.to_string(), *p)).collect();
    }

    /// Removes `host` from the zone: it is NXDOMAIN from now on.
    pub fn remove(&self, host: &str) {
        self.zone.lock().unwrap().names.remove(&name(host));
    }

    /// Stops answering (queries are still counted): the resolver's queries time out.
    pub fn silence(&self) {
        self.zone.lock().unwrap().silent = true;
    }

    /// Queries asked for `host` so far (any type).
    pub fn queries(&self, host: &str) -> u64 {
        self.queries
            .borrow()
            .get(&name(host).to_string())
            .copied()
            .unwrap_or(0)
    }

    /// Waits until `host` has been asked for more than `n` times.
    pub async fn asked_more_than(&self, host: &str, n: u64) {
        let key = name(host).to_string();
        let mut queries = self.queries.clone();
        queries
            .wait_for(|counts| counts.get(&key).copied().unwrap_or(0) > n)
            .await
            .expect("the server runs");
    }
}

async fn serve(
    socket: UdpSocket,
    zone: Arc<Mutex<Zone>>,
    counts: watch::Sender<HashMap<String, u64>>,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        // Whatever is no DNS query is not answered, as a real server would.
        let Ok(query) = Message::from_vec(&buf[..len]) else {
            continue;
        };
        let reply = {
            let zone = zone.lock().unwrap();
            let reply = answer(&query, &zone, &counts);
            if zone.silent {
                continue;
            }
            reply
        };
        if let Ok(bytes) = reply.to_vec() {
            let _ = socket.send_to(&bytes, from).await;
        }
    }
}

fn answer(query: &Message, zone: &Zone, counts: &watch::Sender<HashMap<String, u64>>) -> Message {
    let mut reply = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = true;
    let Some(question) = query.queries.first() else {
        reply.metadata.response_code = ResponseCode::FormErr;
        return reply;
    };
    reply.add_query(question.clone());
    let asked = question.name().to_lowercase();
    counts.send_modify(|counts| *counts.entry(asked.to_string()).or_default() += 1);
    let Some(entry) = zone.names.get(&asked) else {
        reply.metadata.response_code = ResponseCode::NXDomain;
        return reply;
    };
    let owner = question.name().clone();
    match question.query_type() {
        RecordType::A => {
            for ip in &entry.addrs {
                if let IpAddr::V4(v4) = ip {
                    reply.add_answer(Record::from_rdata(
                        owner.clone(),
                        zone.ttl,
                        RData::A(A(*v4)),
                    ));
                }
            }
        }
        RecordType::AAAA => {
            for ip in &entry.addrs {
                if let IpAddr::V6(v6) = ip {
                    reply.add_answer(Record::from_rdata(
                        owner.clone(),
                        zone.ttl,
                        RData::AAAA(AAAA(*v6)),
                    ));
                }
            }
        }
        RecordType::SRV => {
            for (host, port) in &entry.srv {
                let srv = SRV::new(0, 0, *port, name(host));
                reply.add_answer(Record::from_rdata(owner.clone(), zone.ttl, RData::SRV(srv)));
            }
        }
        // The name exists, with no record of this type: an empty NOERROR answer.
        _ => {}
    }
    reply
}
