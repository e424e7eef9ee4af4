//! This node's load as the node registry advertises it and the dashboard shows it: events published and
//! deliveries made per second, CPU use and resident memory. The counters are process-wide (like the Prometheus
//! ones beside them); [`LoadMeter`] turns them into rates between two readings.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

static PUBLISHED: AtomicU64 = AtomicU64::new(0);
static DELIVERED: AtomicU64 = AtomicU64::new(0);

/// Counts events published to rooms by this node.
pub fn count_published(events: u64) {
    PUBLISHED.fetch_add(events, Ordering::Relaxed);
}

/// Counts events handed to this node's clients.
pub fn count_delivered(deliveries: u64) {
    DELIVERED.fetch_add(deliveries, Ordering::Relaxed);
}

/// A node's load over the last interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeLoad {
    /// Events published to rooms per second.
    pub events_per_sec: f64,
    /// Events handed to clients per second.
    pub deliveries_per_sec: f64,
    /// CPU time used per wall time, in percent of one core.
    pub cpu_percent: f64,
    /// Resident memory, in bytes.
    pub rss_bytes: u64,
}

/// Counter values at one instant.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    published: u64,
    delivered: u64,
    cpu_ticks: Option<u64>,
}

impl Reading {
    fn now() -> Reading {
        Reading {
            at: Instant::now(),
            published: PUBLISHED.load(Ordering::Relaxed),
            delivered: DELIVERED.load(Ordering::Relaxed),
            cpu_ticks: cpu_ticks(),
        }
    }
}

/// Turns the counters into rates: each [`LoadMeter::sample`] covers the time since the previous one.
pub struct LoadMeter {
    last: Mutex<(Reading, NodeLoad)>,
}

/// Shortest interval a sample covers; a reading sooner than that returns the previous sample.
const MIN_INTERVAL_SECS: f64 = 0.5;

impl Default for LoadMeter {
    fn default() -> Self {
        LoadMeter {
            last: Mutex::new((Reading::now(), NodeLoad::default())),
        }
    }
}

impl LoadMeter {
    /// The load since the previous sample (or since the meter was made).
    pub fn sample(&self) -> NodeLoad {
        let mut last = self.last.lock();
        let now = Reading::now();
        let secs = now.at.duration_since(last.0.at).as_secs_f64();
        if secs < MIN_INTERVAL_SECS {
            return NodeLoad {
                rss_bytes: rss_bytes(),
                ..last.1
            };
        }
        let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
        let cpu_percent = match (now.cpu_ticks, last.0.cpu_ticks) {
            (Some(a), Some(b)) => a.saturating_sub(b) as f64 / ticks_per_sec() / secs * 100.0,
            _ => 0.0,
        };
        let load = NodeLoad {
            events_per_sec: rate(now.published, last.0.published),
            deliveries_per_sec: rate(now.delivered, last.0.delivered),
            cpu_percent,
            rss_bytes: rss_bytes(),
        };
        *last = (now, load);
        load
    }
}

/// User + system CPU time of this process in clock ticks (`/proc/self/stat`); `None` where there is no procfs.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ')': state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Resident memory of this process (`/proc/self/statm`), 0 where there is no procfs.
pub fn rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse::<u64>().ok())
        .map_or(0, |pages| pages * page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_reads_its_own_cpu_and_memory() {
        assert!(cpu_ticks().is_some());
        assert!(rss_bytes() > 1 << 20);
    }

    #[test]
    fn rates_cover_the_time_between_samples() {
        let meter = LoadMeter::default();
        {
            let mut last = meter.last.lock();
            last.0.at -= std::time::Duration::from_secs(2);
        }
        count_published(10);
        count_delivered(1000);
        let load = meter.sample();
        // Other tests may count too; at least what this one counted shows, over about two seconds.
        assert!(load.events_per_sec >= 4.9, "{load:?}");
        assert!(load.deliveries_per_sec >= 490.0, "{load:?}");
        assert!(load.rss_bytes > 0);
    }
}
