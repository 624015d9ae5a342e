//! `--fuzz N`: runs N inputs through every fuzz target of `msg::fuzz` and reports inputs per
//! second and findings (inputs that panicked), which are saved under `target/fuzz-findings`
//! to become regression tests.
//!
//! Inputs are seeds mutated at random (bits flipped, bytes set, ranges inserted, deleted,
//! duplicated, spliced from another seed, boundary values written) or fresh random bytes;
//! there is no coverage feedback, so this is a random search around valid inputs, spread
//! over two threads.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A small, fast generator (xorshift64*), seeded per thread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], out: &mut Vec<u8>) {
    out.clear();
    if rng.below(4) == 0 || seeds.is_empty() {
        let len = rng.below(512);
        out.extend((0..len).map(|_| rng.next() as u8));
        return;
    }
    out.extend_from_slice(&seeds[rng.below(seeds.len())]);
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] = rng.next() as u8;
            }
            2 => {
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                out.splice(at..at, bytes);
            }
            3 if at < out.len() => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                out.drain(at..end);
            }
            4 if at < out.len() => {
                let end = (at + 1 + rng.below(32)).min(out.len());
                let copy = out[at..end].to_vec();
                out.splice(at..at, copy);
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
            _ if !out.is_empty() => {
                let values: [&[u8]; 5] =
                    [&[0], &[0xff], &[0x7f], &[0x80], &[0xff, 0xff, 0xff, 0xff]];
                let v = values[rng.below(values.len())];
                let i = at.min(out.len() - 1);
                let end = (i + v.len()).min(out.len());
                out[i..end].copy_from_slice(&v[..end - i]);
            }
            _ => {}
        }
    }
}

/// What one target's run found.
pub(crate) struct FuzzRun {
    pub(crate) name: &'static str,
    pub(crate) inputs: u64,
    pub(crate) secs: f64,
    pub(crate) findings: u64,
}

/// Runs `inputs` inputs through `target` on two threads.
fn run_target(name: &'static str, target: msg::fuzz::Target, inputs: u64) -> FuzzRun {
    let seeds = Arc::new(msg::fuzz::seeds(name));
    let findings = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let seeds = seeds.clone();
            let findings = findings.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t + 1).wrapping_mul(0x1234_5678_9abc));
                let mut input = Vec::new();
                for _ in 0..inputs / 2 + (inputs % 2) * (1 - t) {
                    mutate(&mut rng, &seeds, &mut input);
                    if std::panic::catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
                        let n = findings.fetch_add(1, Ordering::Relaxed);
                        if n < 10 {
                            let dir = std::path::Path::new("target/fuzz-findings");
                            let _ = std::fs::create_dir_all(dir);
                            let _ = std::fs::write(dir.join(format!("{name}-{t}-{n}.bin")), &input);
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("fuzz thread");
    }
    FuzzRun {
        name,
        inputs,
        secs: start.elapsed().as_secs_f64(),
        findings: findings.load(Ordering::Relaxed),
    }
}

/// Runs every target (or those named in `only`) for `inputs` inputs each, and prints a row
/// per target. Returns the total of findings.
pub(crate) fn report(inputs: u64, only: &[String]) -> u64 {
    // A panic is a finding, counted and saved; its message would flood the terminal.
    std::panic::set_hook(Box::new(|_| {}));
    println!("fuzzing: {inputs} inputs per target, mutated seeds and random bytes, 2 threads");
    println!(
        "{:<15} {:>12} {:>10} {:>12} {:>9}",
        "target", "inputs", "secs", "inputs/s", "findings"
    );
    let mut total = 0;
    for &(name, target) in msg::fuzz::TARGETS {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        let run = run_target(name, target, inputs);
        total += run.findings;
        println!(
            "{:<15} {:>12} {:>10.1} {:>12.0} {:>9}",
            run.name,
            run.inputs,
            run.secs,
            run.inputs as f64 / run.secs,
            run.findings
        );
    }
    let _ = std::panic::take_hook();
    total
}
