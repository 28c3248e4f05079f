//! Latency and throughput recording: HDR histograms (microseconds, 3 significant digits), outcomes by
//! status and problem code, and a per-second timeline for the report's plots.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded exactly (2 minutes); longer ones are clamped to it.
pub const HIST_MAX_US: u64 = 120_000_000;
/// Significant decimal digits the histograms keep (relative error ≤ 0.1%).
pub const HIST_SIGFIG: u8 = 3;

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, HIST_SIGFIG).expect("static histogram bounds are valid")
}

/// Records a latency in microseconds (at least 1 µs, at most [`HIST_MAX_US`]).
pub fn record_latency(h: &mut Histogram<u64>, latency: Duration) {
    let us = (latency.as_micros() as u64).clamp(1, HIST_MAX_US);
    h.record(us).expect("value clamped into the histogram's range");
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The quantile `q` (0..=1) of `h` in µs: the smallest recorded value (to the histogram's precision)
/// such that at least `q` of all values are ≤ it. 0 for an empty histogram.
pub fn quantile_us(h: &Histogram<u64>, q: f64) -> u64 {
    if h.is_empty() {
        return 0;
    }
    h.value_at_quantile(q.clamp(0.0, 1.0))
}

pub fn summarize(h: &Histogram<u64>) -> Summary {
    if h.is_empty() {
        return Summary {
            count: 0,
            min_ms: 0.0,
            mean_ms: 0.0,
            p50_ms: 0.0,
            p90_ms: 0.0,
            p99_ms: 0.0,
            p999_ms: 0.0,
            max_ms: 0.0,
        };
    }
    Summary {
        count: h.len(),
        min_ms: ms(h.min()),
        mean_ms: h.mean() / 1000.0,
        p50_ms: ms(quantile_us(h, 0.50)),
        p90_ms: ms(quantile_us(h, 0.90)),
        p99_ms: ms(quantile_us(h, 0.99)),
        p999_ms: ms(quantile_us(h, 0.999)),
        max_ms: ms(h.max()),
    }
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The expected success status (201 for writes, 200 for reads).
    Ok,
    /// Anything else: `"<status> <code>"` for an HTTP answer, `"transport <kind>"` when none came.
    Failed(String),
}

struct Second {
    ok: u64,
    failed: u64,
    hist: Histogram<u64>,
}

/// Everything one run measured. Shared behind a mutex by the request tasks.
pub struct Recorder {
    started: Instant,
    all: Histogram<u64>,
    by_kind: BTreeMap<&'static str, (u64, Histogram<u64>)>,
    seconds: Vec<Second>,
    outcomes: BTreeMap<String, u64>,
    ok: u64,
    failed: u64,
    last_completion: Option<Instant>,
}

impl Recorder {
    pub fn new(started: Instant) -> Self {
        Recorder {
            started,
            all: new_hist(),
            by_kind: BTreeMap::new(),
            seconds: Vec::new(),
            outcomes: BTreeMap::new(),
            ok: 0,
            failed: 0,
            last_completion: None,
        }
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// Records one finished request of `kind` ("debit", "read", ...) that completed at `done`.
    pub fn record(&mut self, kind: &'static str, latency: Duration, done: Instant, outcome: Outcome) {
        record_latency(&mut self.all, latency);
        let k = self.by_kind.entry(kind).or_insert_with(|| (0, new_hist()));
        record_latency(&mut k.1, latency);
        let sec = done.saturating_duration_since(self.started).as_secs() as usize;
        while self.seconds.len() <= sec {
            self.seconds.push(Second {
                ok: 0,
                failed: 0,
                hist: new_hist(),
            });
        }
        let s = &mut self.seconds[sec];
        record_latency(&mut s.hist, latency);
        match outcome {
            Outcome::Ok => {
                self.ok += 1;
                k.0 += 1;
                s.ok += 1;
            }
            Outcome::Failed(what) => {
                self.failed += 1;
                s.failed += 1;
                *self.outcomes.entry(what).or_default() += 1;
            }
        }
        self.last_completion = Some(self.last_completion.map_or(done, |l| l.max(done)));
    }

    /// A failure without a latency (e.g. a request that never got an answer).
    pub fn count_failure(&mut self, what: String) {
        self.failed += 1;
        *self.outcomes.entry(what).or_default() += 1;
    }

    pub fn ok(&self) -> u64 {
        self.ok
    }

    pub fn failed(&self) -> u64 {
        self.failed
    }

    /// p99 of the last complete second, for the progress line.
    pub fn recent_p99_ms(&self, now: Instant) -> Option<f64> {
        let sec = now.saturating_duration_since(self.started).as_secs() as usize;
        let s = self.seconds.get(sec.checked_sub(1)?)?;
        (!s.hist.is_empty()).then(|| ms(quantile_us(&s.hist, 0.99)))
    }

    /// The run's figures. `sent` is how many requests went out, `offered_rate` the schedule's rate
    /// (None for closed loop), `send_window` how long sending lasted.
    pub fn finish(&self, sent: u64, offered_rate: Option<f64>, send_window: Duration) -> RunStats {
        let elapsed = self
            .last_completion
            .map(|l| l.saturating_duration_since(self.started))
            .unwrap_or_default()
            .max(send_window);
        let secs = elapsed.as_secs_f64().max(1e-9);
        RunStats {
            sent,
            completed: self.ok + self.failed,
            ok: self.ok,
            failed: self.failed,
            offered_rate,
            elapsed_s: elapsed.as_secs_f64(),
            achieved_ok_per_s: self.ok as f64 / secs,
            achieved_completed_per_s: (self.ok + self.failed) as f64 / secs,
            latency: summarize(&self.all),
            by_kind: self
                .by_kind
                .iter()
                .map(|(k, (ok, h))| {
                    (
                        k.to_string(),
                        KindStats {
                            ok: *ok,
                            latency: summarize(h),
                        },
                    )
                })
                .collect(),
            outcomes: self.outcomes.clone(),
            timeline: self
                .seconds
                .iter()
                .enumerate()
                .map(|(t, s)| TimelinePoint {
                    t_s: t as u64,
                    ok: s.ok,
                    failed: s.failed,
                    p50_ms: ms(quantile_us(&s.hist, 0.5)),
                    p99_ms: ms(quantile_us(&s.hist, 0.99)),
                    max_ms: if s.hist.is_empty() { 0.0 } else { ms(s.hist.max()) },
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct KindStats {
    pub ok: u64,
    pub latency: Summary,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelinePoint {
    pub t_s: u64,
    pub ok: u64,
    pub failed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunStats {
    pub sent: u64,
    pub completed: u64,
    pub ok: u64,
    pub failed: u64,
    /// Requests per second the schedule offered (open loop); none in closed loop.
    pub offered_rate: Option<f64>,
    pub elapsed_s: f64,
    pub achieved_ok_per_s: f64,
    pub achieved_completed_per_s: f64,
    /// All completed requests, measured from their intended send time (open loop) or actual send time
    /// (closed loop).
    pub latency: Summary,
    pub by_kind: BTreeMap<String, KindStats>,
    /// Failures by `"<status> <code>"` (or `"transport <kind>"`).
    pub outcomes: BTreeMap<String, u64>,
    pub timeline: Vec<TimelinePoint>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(got: f64, want: f64, rel: f64) -> bool {
        (got - want).abs() <= want.abs() * rel + 1e-9
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut h = new_hist();
        for us in 1..=10_000u64 {
            h.record(us).unwrap();
        }
        let s = summarize(&h);
        assert_eq!(s.count, 10_000);
        assert!(within(s.p50_ms, 5.0, 0.001), "{s:?}");
        assert!(within(s.p90_ms, 9.0, 0.001), "{s:?}");
        assert!(within(s.p99_ms, 9.9, 0.001), "{s:?}");
        assert!(within(s.p999_ms, 9.99, 0.001), "{s:?}");
        assert!(within(s.max_ms, 10.0, 0.001), "{s:?}");
        assert!(within(s.min_ms, 0.001, 0.001), "{s:?}");
        assert!(within(s.mean_ms, 5.0005, 0.001), "{s:?}");
    }

    #[test]
    fn a_rare_outlier_shows_in_the_tail_only() {
        let mut h = new_hist();
        for _ in 0..999 {
            record_latency(&mut h, Duration::from_millis(2));
        }
        record_latency(&mut h, Duration::from_secs(3));
        let s = summarize(&h);
        assert!(within(s.p50_ms, 2.0, 0.001));
        assert!(within(s.p99_ms, 2.0, 0.001));
        // 999 of 1000 values are 2 ms: p99.9 is still 2 ms; the outlier is the max.
        assert!(within(s.p999_ms, 2.0, 0.001), "{s:?}");
        assert!(within(s.max_ms, 3000.0, 0.001), "{s:?}");
        record_latency(&mut h, Duration::from_secs(3));
        assert!(
            within(summarize(&h).p999_ms, 3000.0, 0.001),
            "two in 1001 are above p99.9"
        );
    }

    #[test]
    fn extreme_values_are_clamped_not_lost() {
        let mut h = new_hist();
        record_latency(&mut h, Duration::ZERO);
        record_latency(&mut h, Duration::from_secs(3600));
        assert_eq!(h.len(), 2);
        assert_eq!(h.min(), 1);
        assert!(within(h.max() as f64, HIST_MAX_US as f64, 0.001));
    }

    #[test]
    fn empty_histograms_summarize_to_zero() {
        let s = summarize(&new_hist());
        assert_eq!(s.count, 0);
        assert_eq!(s.p99_ms, 0.0);
        assert_eq!(quantile_us(&new_hist(), 0.5), 0);
    }

    #[test]
    fn recorder_counts_outcomes_and_builds_a_timeline() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0);
        r.record(
            "debit",
            Duration::from_millis(1),
            t0 + Duration::from_millis(100),
            Outcome::Ok,
        );
        r.record(
            "debit",
            Duration::from_millis(3),
            t0 + Duration::from_millis(900),
            Outcome::Ok,
        );
        r.record(
            "debit",
            Duration::from_millis(5),
            t0 + Duration::from_millis(1500),
            Outcome::Failed("422 INSUFFICIENT_FUNDS".into()),
        );
        r.record(
            "read",
            Duration::from_millis(2),
            t0 + Duration::from_millis(2500),
            Outcome::Ok,
        );
        let s = r.finish(5, Some(2.0), Duration::from_secs(2));
        assert_eq!((s.sent, s.completed, s.ok, s.failed), (5, 4, 3, 1));
        assert_eq!(s.outcomes.get("422 INSUFFICIENT_FUNDS"), Some(&1));
        assert_eq!(s.by_kind["debit"].ok, 2);
        assert_eq!(s.by_kind["debit"].latency.count, 3);
        assert_eq!(s.by_kind["read"].ok, 1);
        assert_eq!(s.timeline.len(), 3);
        assert_eq!((s.timeline[0].ok, s.timeline[0].failed), (2, 0));
        assert_eq!((s.timeline[1].ok, s.timeline[1].failed), (0, 1));
        assert!(within(s.timeline[0].max_ms, 3.0, 0.001));
        // The last completion was at 2.5 s: 3 successes over 2.5 s.
        assert!(within(s.elapsed_s, 2.5, 0.001));
        assert!(within(s.achieved_ok_per_s, 1.2, 0.001));
    }
}
