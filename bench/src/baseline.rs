//! The plain-tokio limit: 4-byte length-prefixed frames, every ready frame coalesced into
//! one write, no framing library, no channels, no tasks beyond one per side.

use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{Latency, Plan, System};

pub(crate) struct Baseline;

async fn server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            stream.set_nodelay(true).expect("nodelay");
            tokio::spawn(async move {
                let mut buf = BytesMut::with_capacity(64 * 1024);
                let mut out = BytesMut::with_capacity(64 * 1024);
                loop {
                    match stream.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    while buf.len() >= 4 {
                        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                        if buf.len() < 4 + len {
                            break;
                        }
                        out.extend_from_slice(&buf[..4 + len]);
                        buf.advance(4 + len);
                    }
                    if !out.is_empty() {
                        if stream.write_all(&out).await.is_err() {
                            return;
                        }
                        out.clear();
                    }
                }
            });
        }
    });
    addr
}

async fn client(addr: std::net::SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

fn push_frame(out: &mut BytesMut, payload: &[u8]) {
    out.put_u32(payload.len() as u32);
    out.extend_from_slice(payload);
}

/// Takes every complete frame off `buf`, returning how many there were.
fn take_frames(buf: &mut BytesMut) -> usize {
    let mut n = 0;
    while buf.len() >= 4 {
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if buf.len() < 4 + len {
            break;
        }
        buf.advance(4 + len);
        n += 1;
    }
    n
}

impl System for Baseline {
    const NAME: &'static str = "baseline";

    async fn latency(plan: Plan, size: usize) -> Latency {
        let addr = server().await;
        let mut stream = client(addr).await;
        let payload = vec![7u8; size];
        let mut out = BytesMut::new();
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut samples = Vec::with_capacity(plan.round_trips);
        for i in 0..plan.warmup + plan.round_trips {
            let t = Instant::now();
            push_frame(&mut out, &payload);
            stream.write_all(&out).await.expect("write");
            out.clear();
            while take_frames(&mut buf) == 0 {
                stream.read_buf(&mut buf).await.expect("read");
            }
            if i >= plan.warmup {
                samples.push(t.elapsed());
            }
        }
        Latency::from_samples(samples)
    }

    async fn throughput(plan: Plan, size: usize) -> f64 {
        let addr = server().await;
        let mut stream = client(addr).await;
        let payload = vec![7u8; size];
        let mut out = BytesMut::with_capacity(64 * 1024);
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let total = plan.throughput_requests;
        let t = Instant::now();
        let mut sent = 0;
        let mut received = 0;
        while sent < plan.in_flight.min(total) {
            push_frame(&mut out, &payload);
            sent += 1;
        }
        stream.write_all(&out).await.expect("write");
        out.clear();
        while received < total {
            stream.read_buf(&mut buf).await.expect("read");
            let n = take_frames(&mut buf);
            received += n;
            for _ in 0..n.min(total - sent) {
                push_frame(&mut out, &payload);
                sent += 1;
            }
            if !out.is_empty() {
                stream.write_all(&out).await.expect("write");
                out.clear();
            }
        }
        total as f64 / t.elapsed().max(Duration::from_nanos(1)).as_secs_f64()
    }
}
