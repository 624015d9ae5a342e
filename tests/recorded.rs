//! Metrics a test records under a recorder of its own, so that tests in one binary never see
//! each other's counts: the sockets' counters, the layers' metrics and
//! `msg_limit_hits_total` by limit.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::CompositeKey;

/// What the sockets and layers of one test recorded: read at any time, during the test or
/// after it, each read giving everything recorded until then.
#[derive(Clone)]
pub struct Recorded {
    snapshotter: Snapshotter,
    /// Everything taken from the recorder so far: its snapshots take what they read (a
    /// counter reads as what it gained since the last one), so they are summed here.
    totals: Arc<Mutex<HashMap<CompositeKey, Vec<f64>>>>,
}

/// Runs `test` on a current-thread runtime under a recorder of its own, handing it the
/// recording so far, and returns what `test` returned and the whole recording. A local
/// recorder covers only the thread it is set on; the current-thread runtime keeps every task
/// of the test there.
pub fn recorded<T, F: Future<Output = T>>(test: impl FnOnce(Recorded) -> F) -> (T, Recorded) {
    let recorder = DebuggingRecorder::new();
    let recording = Recorded {
        snapshotter: recorder.snapshotter(),
        totals: Arc::default(),
    };
    let output = metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(test(recording.clone()))
    });
    (output, recording)
}

impl Recorded {
    /// Everything recorded so far, by metric: a counter as one value, its count; a gauge
    /// as its last value; a histogram as its samples.
    fn totals(&self) -> std::sync::MutexGuard<'_, HashMap<CompositeKey, Vec<f64>>> {
        let mut totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let total = totals.entry(key).or_default();
            match value {
                DebugValue::Counter(n) => match total.first_mut() {
                    Some(count) => *count += n as f64,
                    None => total.push(n as f64),
                },
                DebugValue::Gauge(g) => *total = vec![g.into_inner()],
                DebugValue::Histogram(samples) => {
                    total.extend(samples.iter().map(|s| s.into_inner()))
                }
            }
        }
        totals
    }

    /// Every value of the metrics named `name` that carry the label `label` (all of them
    /// when `None`): a counter's count, a gauge's last value, a histogram's samples.
    pub fn values(&self, name: &str, label: Option<(&str, &str)>) -> Vec<f64> {
        self.totals()
            .iter()
            .filter(|(key, _)| {
                key.key().name() == name
                    && label.is_none_or(|(k, v)| {
                        key.key().labels().any(|l| l.key() == k && l.value() == v)
                    })
            })
            .flat_map(|(_, values)| values.iter().copied())
            .collect()
    }

    /// The sum of the counters named `name` that carry the label `label`.
    pub fn counter(&self, name: &str, label: (&str, &str)) -> u64 {
        self.values(name, Some(label)).iter().sum::<f64>() as u64
    }

    /// How many times the limit named `limit` was met (`msg_limit_hits_total{limit}`).
    pub fn limit_hits(&self, limit: &str) -> u64 {
        self.counter("msg_limit_hits_total", ("limit", limit))
    }

    /// Every limit met so far, with its count.
    pub fn all_limit_hits(&self) -> Vec<(String, u64)> {
        let mut hits: Vec<(String, u64)> = self
            .totals()
            .iter()
            .filter(|(key, _)| key.key().name() == "msg_limit_hits_total")
            .filter_map(|(key, values)| {
                let limit = key.key().labels().find(|l| l.key() == "limit")?;
                Some((limit.value().to_owned(), values.iter().sum::<f64>() as u64))
            })
            .collect();
        hits.sort();
        hits
    }
}

/// Shows the limits met, which is what a failing test most often needs to see.
impl fmt::Debug for Recorded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorded")
            .field("limit_hits", &self.all_limit_hits())
            .finish()
    }
}
