//! [`Backoff`]: how long to wait between redials.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Delays between redials of a lost connection: doubling from
/// [`initial`](Self::initial) up to [`max`](Self::max), each shortened by a random share
/// of up to [`jitter`](Self::jitter) so that many clients do not redial in lockstep
/// (jitter 1 is "full jitter": each delay is random between 0 and its cap). Redials go on
/// forever unless [`max_attempts`](Self::max_attempts) is set.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use msg::Backoff;
///
/// let backoff = Backoff::default().max(Duration::from_secs(1)).jitter(0.0);
/// let delays: Vec<_> = backoff.delays().take(6).collect();
/// assert_eq!(delays[0], Duration::from_millis(50));
/// assert_eq!(delays[1], Duration::from_millis(100));
/// assert_eq!(delays[5], Duration::from_secs(1), "capped at max");
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Backoff {
    /// First delay. Default: 50 ms, so a peer that restarts is found again at once.
    pub initial: Duration,
    /// Longest delay. Default: 1 s, so a peer that comes back is found within a second,
    /// while a client redialing a peer that stays away costs it one attempt a second.
    pub max: Duration,
    /// Share of each delay that is random, from 0 to 1 (values outside are clamped). Default:
    /// 1, full jitter: many clients that lost the same server spread their redials over the
    /// whole delay instead of arriving together.
    pub jitter: f64,
    /// Dials after a connection is lost (or, for `connect_lazy`, before the first) before
    /// the socket gives up; a socket that gave up fails every request. Default: none,
    /// redial forever, as ZeroMQ does.
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(1),
            jitter: 1.0,
            max_attempts: None,
        }
    }
}

impl Backoff {
    /// Sets [`initial`](Self::initial).
    pub fn initial(mut self, initial: Duration) -> Self {
        self.initial = initial;
        self
    }

    /// Sets [`max`](Self::max).
    pub fn max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// Sets [`jitter`](Self::jitter), clamped to 0..=1.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// Sets [`max_attempts`](Self::max_attempts).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// The delays, one per failed attempt, forever.
    pub fn delays(&self) -> impl Iterator<Item = Duration> {
        let Backoff { initial, max, .. } = *self;
        // The field is public: a value out of range must not reach `mul_f64`, which
        // panics on a negative factor.
        let jitter = if self.jitter.is_nan() {
            0.0
        } else {
            self.jitter.clamp(0.0, 1.0)
        };
        // A seed that differs between processes and sockets; the spread matters, not its
        // quality.
        static SALT: AtomicU64 = AtomicU64::new(0);
        let mut state = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ SALT.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed))
            | 1;
        let mut next = initial;
        std::iter::from_fn(move || {
            let delay = next.min(max);
            next = next.saturating_mul(2);
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let share = (state >> 11) as f64 / (1u64 << 53) as f64;
            Some(delay.mul_f64(1.0 - jitter * share))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_jitter_is_clamped_instead_of_panicking() {
        for jitter in [2.0, -1.0, f64::NAN, f64::INFINITY] {
            let backoff = Backoff {
                jitter,
                ..Backoff::default()
            };
            for delay in backoff.delays().take(20) {
                assert!(delay <= backoff.max, "{jitter}: {delay:?}");
            }
        }
    }

    #[test]
    fn delays_are_capped_and_jittered_below_the_cap() {
        let backoff = Backoff::default().max(Duration::from_millis(400));
        let delays: Vec<_> = backoff.delays().take(50).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(400)));
        // Full jitter: not all the capped delays are equal.
        let capped = &delays[10..];
        assert!(capped.iter().any(|d| *d != capped[0]), "{capped:?}");
    }
}
