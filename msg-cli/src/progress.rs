//! A progress bar on standard error, drawn by hand: a measurement's time gone and its rate
//! so far, redrawn ten times a second while standard error is a terminal.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Cells of the bar.
const WIDTH: usize = 30;

/// The bar of a measurement running; cleared when finished.
pub(crate) struct Progress {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Draws `label`'s bar over `duration`, with the rate of `done` per second, if standard
    /// error is a terminal.
    pub(crate) fn start(label: &'static str, duration: Duration, done: Arc<AtomicU64>) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress { task: None };
        }
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let line = bar(
                    label,
                    started.elapsed(),
                    duration,
                    done.load(Ordering::Relaxed),
                );
                let mut stderr = std::io::stderr().lock();
                let _ = write!(stderr, "\r{line}");
                let _ = stderr.flush();
            }
        });
        Progress { task: Some(task) }
    }

    /// Stops drawing and clears the line.
    pub(crate) fn finish(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let mut stderr = std::io::stderr().lock();
            // Carriage return, then erase the line.
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// One frame of the bar: `label [=====>    ] 1.2/3.0 s  41520/s`.
fn bar(label: &str, elapsed: Duration, total: Duration, done: u64) -> String {
    let share = if total.is_zero() {
        1.0
    } else {
        (elapsed.as_secs_f64() / total.as_secs_f64()).min(1.0)
    };
    let filled = ((share * WIDTH as f64) as usize).min(WIDTH);
    let mut cells = "=".repeat(filled);
    if filled < WIDTH {
        cells.push('>');
        cells.push_str(&" ".repeat(WIDTH - filled - 1));
    }
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-3);
    format!(
        "{label} [{cells}] {:.1}/{:.1} s  {rate:.0}/s",
        elapsed.as_secs_f64().min(total.as_secs_f64()),
        total.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_the_time_gone() {
        let half = bar(
            "req/rep",
            Duration::from_secs(1),
            Duration::from_secs(2),
            500,
        );
        assert_eq!(
            half,
            format!(
                "req/rep [{}>{}] 1.0/2.0 s  500/s",
                "=".repeat(15),
                " ".repeat(14)
            )
        );
        let full = bar("pub/sub", Duration::from_secs(3), Duration::from_secs(2), 0);
        assert!(full.starts_with(&format!("pub/sub [{}] 2.0/2.0 s", "=".repeat(30))));
    }
}
