//! What each codec saves and costs on small messages, to choose the size below which a
//! payload is sent plain (`msg::compression::DEFAULT_MIN_LEN`).

use std::time::Instant;

use msg::compression::{
    Compressor, Decoders, GzipCompressor, Lz4Compressor, SnappyCompressor, ZstdCompressor,
};

/// A JSON-ish payload of `len` bytes, like the small messages of a typical service.
fn payload(len: usize, seed: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = seed;
    while out.len() < len {
        out.extend_from_slice(
            format!(
                r#"{{"id":{i},"user":"u{}","status":"active","score":{}}},"#,
                i * 7 % 1000,
                i * 13 % 97
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

/// Prints, per size and codec, the compressed size over the original and the time to
/// compress and decompress once.
pub(crate) fn report() {
    let codecs: Vec<(&str, Box<dyn Compressor>)> = vec![
        ("gzip 6", Box::new(GzipCompressor::new(6))),
        ("zstd 3", Box::new(ZstdCompressor::new(3))),
        ("snappy", Box::new(SnappyCompressor::new())),
        ("lz4", Box::new(Lz4Compressor::new())),
    ];
    let decoders = Decoders::default();
    println!("codecs on JSON-ish payloads: compressed size / original, and µs to compress and decompress");
    print!("{:<8}", "size");
    for (name, _) in &codecs {
        print!(" {:>16}", name);
    }
    println!();
    for len in [32usize, 64, 128, 256, 512, 1024, 4096] {
        print!("{len:<8}");
        for (_, codec) in &codecs {
            let rounds = 2000;
            let mut packed_total = 0;
            let t = Instant::now();
            for r in 0..rounds {
                let data = payload(len, r);
                let packed = codec.compress(&data).expect("compress");
                packed_total += packed.len();
                let plain = decoders
                    .decompress(codec.encoding(), &packed, len)
                    .expect("decompress");
                assert_eq!(plain.len(), len);
            }
            let us = t.elapsed().as_secs_f64() * 1e6 / rounds as f64;
            let ratio = packed_total as f64 / (len * rounds) as f64;
            print!(" {:>8.2} {:>5.1}µs", ratio, us);
        }
        println!();
    }
}
