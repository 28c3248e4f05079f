//! Open-loop arrival schedule: request `i` is *intended* to be sent at `start + i / rate`.
//!
//! Latency is measured from that intended time, not from when the request actually left, so a service
//! (or a client) that falls behind shows up as latency instead of being hidden by a slower send rate
//! ("coordinated omission"). The schedule is computed from the index, never accumulated, so it does not
//! drift over long runs.

use std::time::Duration;

/// A fixed-rate schedule relative to a start instant.
#[derive(Debug, Clone, Copy)]
pub struct RateSchedule {
    rate_per_sec: f64,
}

impl RateSchedule {
    /// `rate_per_sec` must be positive and finite.
    pub fn new(rate_per_sec: f64) -> Result<Self, String> {
        if !(rate_per_sec.is_finite() && rate_per_sec > 0.0) {
            return Err(format!("rate must be a positive number, got {rate_per_sec}"));
        }
        Ok(RateSchedule { rate_per_sec })
    }

    pub fn rate(&self) -> f64 {
        self.rate_per_sec
    }

    /// When request `i` (0-based) is due, relative to the start.
    pub fn offset(&self, i: u64) -> Duration {
        Duration::from_nanos((i as f64 * 1e9 / self.rate_per_sec).round() as u64)
    }

    /// How many requests are due at or before `elapsed` (request 0 is due at once).
    pub fn due_by(&self, elapsed: Duration) -> u64 {
        // Smallest i with offset(i) > elapsed; computed from the float estimate, then corrected for rounding.
        let mut n = (elapsed.as_secs_f64() * self.rate_per_sec).floor() as u64 + 1;
        while n > 0 && self.offset(n - 1) > elapsed {
            n -= 1;
        }
        while self.offset(n) <= elapsed {
            n += 1;
        }
        n
    }

    /// Requests in a run of `duration`: those due strictly before its end.
    pub fn total_for(&self, duration: Duration) -> u64 {
        if duration.is_zero() {
            return 0;
        }
        let mut n = (duration.as_secs_f64() * self.rate_per_sec).ceil() as u64;
        while n > 0 && self.offset(n - 1) >= duration {
            n -= 1;
        }
        while self.offset(n) < duration {
            n += 1;
        }
        n
    }
}

/// Small, fast, seedable PRNG (SplitMix64): each request derives its choices from its own index, so a
/// run's workload is reproducible and needs no shared random state.
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A value in `0..n` for request `i` and stream `stream` (n > 0).
pub fn pick(seed: u64, i: u64, stream: u64, n: u64) -> u64 {
    debug_assert!(n > 0);
    let r = splitmix64(seed ^ splitmix64(i.wrapping_mul(0x1000_0000_01B3).wrapping_add(stream)));
    // Multiply-shift: unbiased enough for load generation and cheaper than a modulo.
    ((r as u128 * n as u128) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_positive_rates() {
        assert!(RateSchedule::new(0.0).is_err());
        assert!(RateSchedule::new(-5.0).is_err());
        assert!(RateSchedule::new(f64::NAN).is_err());
        assert!(RateSchedule::new(f64::INFINITY).is_err());
    }

    #[test]
    fn offsets_are_evenly_spaced_from_the_index() {
        let s = RateSchedule::new(1000.0).unwrap();
        assert_eq!(s.offset(0), Duration::ZERO);
        assert_eq!(s.offset(1), Duration::from_millis(1));
        assert_eq!(s.offset(1500), Duration::from_millis(1500));
        let s = RateSchedule::new(3.0).unwrap();
        assert_eq!(s.offset(1), Duration::from_nanos(333_333_333));
        assert_eq!(s.offset(3), Duration::from_secs(1));
    }

    #[test]
    fn no_drift_over_a_long_run() {
        // Ten million requests at 7,000/s: the last is due exactly at its ideal time (±1 ns rounding).
        let s = RateSchedule::new(7000.0).unwrap();
        let i = 10_000_000u64;
        let ideal_ns = i as f64 * 1e9 / 7000.0;
        let got = s.offset(i).as_nanos() as f64;
        assert!((got - ideal_ns).abs() <= 1.0, "got {got}, ideal {ideal_ns}");
    }

    #[test]
    fn due_by_counts_requests_whose_time_has_come() {
        let s = RateSchedule::new(1000.0).unwrap();
        assert_eq!(s.due_by(Duration::ZERO), 1, "request 0 is due at once");
        assert_eq!(s.due_by(Duration::from_micros(999)), 1);
        assert_eq!(s.due_by(Duration::from_millis(1)), 2);
        assert_eq!(s.due_by(Duration::from_secs(1)), 1001);
        for ms in [0u64, 1, 7, 250, 999, 12_345] {
            let e = Duration::from_millis(ms) + Duration::from_nanos(1);
            let n = s.due_by(e);
            assert!(s.offset(n - 1) <= e && s.offset(n) > e, "at {e:?}: {n}");
        }
    }

    #[test]
    fn total_for_a_duration_matches_rate_times_duration() {
        let s = RateSchedule::new(1000.0).unwrap();
        assert_eq!(s.total_for(Duration::ZERO), 0);
        assert_eq!(s.total_for(Duration::from_secs(10)), 10_000);
        let s = RateSchedule::new(3.0).unwrap();
        // Due at 0, 1/3, 2/3 s: three fall before the end of one second.
        assert_eq!(s.total_for(Duration::from_secs(1)), 3);
        assert_eq!(s.total_for(Duration::from_millis(1001)), 4);
        let s = RateSchedule::new(0.5).unwrap();
        assert_eq!(s.total_for(Duration::from_secs(5)), 3, "at 0, 2 and 4 s");
    }

    #[test]
    fn picks_are_in_range_deterministic_and_spread() {
        let mut counts = [0u32; 10];
        for i in 0..100_000 {
            let v = pick(42, i, 0, 10);
            assert!(v < 10);
            assert_eq!(v, pick(42, i, 0, 10));
            counts[v as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "uneven: {counts:?}");
        }
        assert_ne!(
            (0..64).map(|i| pick(1, i, 0, 1000)).collect::<Vec<_>>(),
            (0..64).map(|i| pick(1, i, 1, 1000)).collect::<Vec<_>>(),
            "streams differ"
        );
        assert_eq!(pick(7, 3, 0, 1), 0);
    }
}
