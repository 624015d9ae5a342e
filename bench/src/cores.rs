//! The machine's core-to-core cost: how long a cache line written on one CPU takes to reach
//! the other, measured by two threads pinned to two CPUs passing a counter back and
//! forth.
//!
//! On the 2-vCPU development machine this cost is bimodal over time: about 40 ns per hop
//! in some periods and about 160 ns in others, with a single thread's speed the same in
//! both (the host places the two vCPUs on cores that share a cache, or on cores that do
//! not). A client and server on 2 workers pass a few cache lines between the workers per
//! request (the slot table, the reply's cell, the woken task), so the book's client runs
//! at about 0.6x of its usual rate while the hop is slow. The bench measures the hop before
//! every run and prints it beside each row, so that a slow row can be told from a slow
//! build.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one probe passes the counter.
const PROBE: Duration = Duration::from_millis(50);

/// The CPUs this process may run on, in order (a container may be given any of the host's).
fn allowed() -> Vec<usize> {
    // SAFETY: `set` is a plain bit set on the stack, which sched_getaffinity fills in.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// Pins the calling thread to CPU `cpu`; returns whether it did.
fn pin(cpu: usize) -> bool {
    // SAFETY: `set` is a plain bit set on the stack, initialised by CPU_ZERO, and
    // sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Nanoseconds per hop of one cache line between the first two CPUs this process may run
/// on, over [`PROBE`]; `None` where it may run on one only.
pub(crate) fn hop_ns() -> Option<f64> {
    let cpus = allowed();
    if cpus.len() < 2 {
        return None;
    }
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sides: Vec<_> = (0..2u64)
        .map(|side| {
            let (count, stop) = (count.clone(), stop.clone());
            let cpu = cpus[side as usize];
            std::thread::spawn(move || {
                if !pin(cpu) {
                    return false;
                }
                // Each side moves the counter on when it is its turn (even for side 0,
                // odd for side 1): every increment is one trip of the line.
                while !stop.load(Ordering::Relaxed) {
                    let n = count.load(Ordering::Acquire);
                    if n % 2 == side {
                        count.store(n + 1, Ordering::Release);
                    }
                }
                true
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(PROBE);
    let hops = count.load(Ordering::Acquire);
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let pinned = sides.into_iter().all(|side| side.join().unwrap_or(false));
    (pinned && hops > 0).then(|| elapsed.as_nanos() as f64 / hops as f64)
}

/// [`hop_ns`] for a table cell: whole nanoseconds, or `-` on one CPU.
pub(crate) fn show(hop: Option<f64>) -> String {
    hop.map_or_else(|| "-".to_owned(), |ns| format!("{ns:.0}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hop_between_two_cpus_takes_between_a_nanosecond_and_a_millisecond() {
        let cpus = allowed();
        match hop_ns() {
            Some(ns) => assert!((1.0..1_000_000.0).contains(&ns), "{ns} ns per hop"),
            None => assert!(cpus.len() < 2, "CPUs {cpus:?}, and no hop measured"),
        }
    }
}
