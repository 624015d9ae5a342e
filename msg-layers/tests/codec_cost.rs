//! What one compress and one decompress call costs, per codec and size, on this machine:
//! the measurement behind the size from which msg moves codec work off the connection's
//! task (`msg::compression::OFFLOAD_MIN_LEN`). Run it by hand, optimized:
//!
//! ```text
//! cargo test -p msg-layers --release --test codec_cost -- --ignored --nocapture
//! ```

use std::time::{Duration, Instant};

use msg_layers::compression::{
    Compressor, GzipCompressor, Lz4Compressor, SnappyCompressor, ZstdCompressor,
};

/// Compressible data like a service's messages: JSON records, numbers varying.
fn payload(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 128);
    let mut i: u64 = 0;
    while out.len() < len {
        let record = format!(
            "{{\"id\":{i},\"user\":\"user{}\",\"score\":{},\"tags\":[\"a{}\",\"b\"]}},",
            i % 97,
            (i * 7919) % 100_003,
            i % 13
        );
        out.extend_from_slice(record.as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

/// The median time of `f` over enough runs to take about 50 ms (at least 5, at most 1000).
fn median(mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    f();
    let once = start.elapsed().max(Duration::from_nanos(100));
    let runs = (Duration::from_millis(50).as_nanos() / once.as_nanos()).clamp(5, 1000) as usize;
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

#[test]
#[ignore = "a measurement, run by hand with --release"]
fn codec_cost_per_call() {
    let codecs: Vec<(&str, Box<dyn Compressor>)> = vec![
        ("gzip-6", Box::new(GzipCompressor::new(6))),
        ("zstd-3", Box::new(ZstdCompressor::new(3))),
        ("lz4", Box::new(Lz4Compressor::new())),
        ("snappy", Box::new(SnappyCompressor::new())),
    ];
    let sizes = [
        1 << 10,
        4 << 10,
        16 << 10,
        64 << 10,
        256 << 10,
        1 << 20,
        4 << 20,
    ];
    println!("codec    size      compress  decompress  (us, median)");
    for (name, codec) in &codecs {
        for &size in &sizes {
            let data = payload(size);
            let packed = codec.compress(&data).unwrap();
            let c = median(|| {
                std::hint::black_box(codec.compress(&data).unwrap());
            });
            let d = median(|| {
                std::hint::black_box(codec.decompress(&packed, size).unwrap());
            });
            println!(
                "{name:<8} {:>5} KiB {:>9.1} {:>11.1}   ratio {:.2}",
                size >> 10,
                c.as_secs_f64() * 1e6,
                d.as_secs_f64() * 1e6,
                packed.len() as f64 / size as f64
            );
        }
    }
}
