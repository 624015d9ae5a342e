//! [`Heartbeat`]: when to ping a quiet peer and when to give it up, sans-IO.
//!
//! Any frame from the peer is a sign of life. A side that has heard nothing for
//! [`interval`](HeartbeatConfig::interval) sends a ping, and again every interval while the
//! silence lasts; the peer answers with a pong. A peer silent for
//! [`timeout`](HeartbeatConfig::timeout) is dead: its connection is closed.
//!
//! Time is an argument: the driver calls [`Heartbeat::tick`] when the deadline it was given
//! last has passed, saying whether bytes arrived since the tick before. The data path sets
//! no timer and reads no clock: it only notes that something arrived, and the one timer is
//! re-armed when it fires. So the peer's silence is measured from the first tick that found
//! nothing new: a dead peer is given up after at least the timeout and at most one interval
//! more, and never early.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, Instant};
//! use msg_core::{Beat, Heartbeat, HeartbeatConfig};
//!
//! let start = Instant::now();
//! let config = HeartbeatConfig::new(Duration::from_secs(1), Duration::from_secs(3));
//! let mut hb = Heartbeat::new(config, start);
//! assert_eq!(hb.deadline(), start + Duration::from_secs(1));
//!
//! // A second of silence: ping.
//! assert_eq!(hb.tick(start + Duration::from_secs(1), false, false), Beat::Ping);
//! // Three seconds of silence: the peer is dead.
//! assert_eq!(hb.tick(start + Duration::from_secs(3), false, false), Beat::Dead);
//! ```

use std::time::{Duration, Instant};

/// Heartbeat settings of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// Silence after which a ping is sent, and between pings while it lasts.
    pub interval: Duration,
    /// Silence after which the peer is given up.
    pub timeout: Duration,
}

impl HeartbeatConfig {
    /// A configuration; `interval` is raised to 1 ms and `timeout` to at least `interval`.
    pub fn new(interval: Duration, timeout: Duration) -> Self {
        let interval = interval.max(Duration::from_millis(1));
        HeartbeatConfig {
            interval,
            timeout: timeout.max(interval),
        }
    }
}

/// What a tick asks the driver to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Nothing: the peer was heard recently enough.
    Quiet,
    /// Send a ping.
    Ping,
    /// The peer has been silent past the timeout: close the connection.
    Dead,
}

/// One connection's heartbeat state.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    config: HeartbeatConfig,
    last_heard: Instant,
    last_ping: Option<Instant>,
    deadline: Instant,
}

impl Heartbeat {
    /// The state of a connection that was just established at `now`.
    pub fn new(config: HeartbeatConfig, now: Instant) -> Self {
        Heartbeat {
            config,
            last_heard: now,
            last_ping: None,
            deadline: now + config.interval,
        }
    }

    /// The settings.
    pub fn config(&self) -> HeartbeatConfig {
        self.config
    }

    /// When [`tick`](Self::tick) is next due. It only moves when `tick` runs.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Runs the heartbeat at `now`, at or after [`deadline`](Self::deadline). `heard` says
    /// bytes arrived from the peer since the last tick.
    ///
    /// `paused` says this side has stopped reading on purpose (its own back-pressure):
    /// silence then is not the peer's fault, so the peer is not given up, but it is still
    /// pinged every interval so that it hears from this side.
    pub fn tick(&mut self, now: Instant, heard: bool, paused: bool) -> Beat {
        if (heard || paused) && now > self.last_heard {
            self.last_heard = now;
        }
        let HeartbeatConfig { interval, timeout } = self.config;
        let silent = now.saturating_duration_since(self.last_heard);
        if silent >= timeout {
            self.deadline = now + interval;
            return Beat::Dead;
        }
        let ping_due = self
            .last_ping
            .is_none_or(|at| now.saturating_duration_since(at) >= interval);
        let beat = if (silent >= interval || paused) && ping_due {
            self.last_ping = Some(now);
            Beat::Ping
        } else {
            Beat::Quiet
        };
        self.deadline = if silent < interval && !paused {
            self.last_heard + interval
        } else {
            let next_ping = self.last_ping.map_or(now, |at| at + interval);
            next_ping
                .min(self.last_heard + timeout)
                .max(now + Duration::from_millis(1))
        };
        beat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn config() -> HeartbeatConfig {
        HeartbeatConfig::new(100 * MS, 300 * MS)
    }

    #[test]
    fn a_peer_heard_since_the_last_tick_is_not_pinged() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(config(), t0);
        assert_eq!(hb.tick(t0 + 100 * MS, true, false), Beat::Quiet);
        // The next tick is an interval later.
        assert_eq!(hb.deadline(), t0 + 200 * MS);
    }

    #[test]
    fn a_silent_peer_is_pinged_every_interval_then_given_up_at_the_timeout() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(config(), t0);
        let mut beats = Vec::new();
        let mut now = hb.deadline();
        for _ in 0..10 {
            let beat = hb.tick(now, false, false);
            beats.push((now - t0, beat));
            if beat == Beat::Dead {
                break;
            }
            now = hb.deadline();
        }
        assert_eq!(
            beats,
            vec![
                (100 * MS, Beat::Ping),
                (200 * MS, Beat::Ping),
                (300 * MS, Beat::Dead)
            ]
        );
    }

    #[test]
    fn an_answer_to_a_ping_keeps_the_connection() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(config(), t0);
        assert_eq!(hb.tick(t0 + 100 * MS, false, false), Beat::Ping);
        assert_eq!(hb.deadline(), t0 + 200 * MS);
        // The pong came: the silence starts again from this tick.
        assert_eq!(hb.tick(t0 + 200 * MS, true, false), Beat::Quiet);
        assert_eq!(hb.deadline(), t0 + 300 * MS);
        assert_eq!(hb.tick(t0 + 300 * MS, false, false), Beat::Ping);
        assert_eq!(hb.tick(t0 + 400 * MS, false, false), Beat::Ping);
        assert_eq!(hb.tick(t0 + 500 * MS, false, false), Beat::Dead);
    }

    #[test]
    fn a_peer_is_never_given_up_before_the_timeout() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(config(), t0);
        // Traffic until 250 ms, seen by the tick at 300 ms.
        for at in [100, 200, 300] {
            assert_ne!(hb.tick(t0 + at * MS, true, false), Beat::Dead);
        }
        // Silent from here on: the peer is given up within a few ticks (one per interval
        // until the timeout); a heartbeat that never gives up fails here, not hangs.
        let mut now = hb.deadline();
        let mut ticks = 0;
        while hb.tick(now, false, false) != Beat::Dead {
            ticks += 1;
            assert!(ticks < 100, "still not given up after {ticks} silent ticks");
            now = hb.deadline();
        }
        assert!(now - t0 >= 250 * MS + 300 * MS, "{:?}", now - t0);
        assert!(now - t0 <= 300 * MS + 300 * MS + 100 * MS, "{:?}", now - t0);
    }

    #[test]
    fn a_paused_side_keeps_pinging_and_never_gives_up() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(config(), t0);
        let mut pings = 0;
        for i in 1..=20u32 {
            match hb.tick(t0 + i * 100 * MS, false, true) {
                Beat::Ping => pings += 1,
                Beat::Dead => panic!("a paused side gave its peer up"),
                Beat::Quiet => {}
            }
        }
        assert_eq!(pings, 20);
    }

    #[test]
    fn a_late_tick_still_detects_death() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(config(), t0);
        assert_eq!(hb.tick(t0 + 10_000 * MS, false, false), Beat::Dead);
    }

    #[test]
    fn config_keeps_timeout_at_least_the_interval() {
        let c = HeartbeatConfig::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(c.interval, MS);
        assert_eq!(c.timeout, MS);
    }
}
