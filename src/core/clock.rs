//! The one clock every timestamp in a trace is on: CLOCK_MONOTONIC in nanoseconds.
//!
//! It is the clock behind Rust's `Instant` on Linux, Python's `time.monotonic_ns()`
//! (and `time.monotonic()`, which vLLM stamps with) and C++ `std::chrono::steady_clock`,
//! so stamps taken by an engine on its own thread can be compared with the driver's.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A point on CLOCK_MONOTONIC, in nanoseconds.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MonoNs(pub u64);

impl MonoNs {
    /// Nanoseconds from `earlier` to `self`, saturating at zero.
    pub fn since(self, earlier: MonoNs) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    pub fn plus(self, d: Duration) -> MonoNs {
        MonoNs(self.0.saturating_add(d.as_nanos() as u64))
    }

    /// From seconds on `time.monotonic()` (vLLM's `RequestStateStats`).
    pub fn from_secs_f64(s: f64) -> Option<MonoNs> {
        (s.is_finite() && s > 0.0).then(|| MonoNs((s * 1e9).round() as u64))
    }
}

/// Reads CLOCK_MONOTONIC. Through the vDSO this costs tens of nanoseconds.
pub fn now() -> MonoNs {
    MonoNs(read(libc::CLOCK_MONOTONIC))
}

/// CLOCK_REALTIME minus CLOCK_MONOTONIC now, in nanoseconds: what turns a stamp of
/// this run into wall-clock time (torch.profiler's traces are on the wall clock),
/// read as the tightest of a few bracketing pairs.
pub fn realtime_minus_monotonic_ns() -> i64 {
    (0..3)
        .map(|_| {
            let a = read(libc::CLOCK_MONOTONIC);
            let r = read(libc::CLOCK_REALTIME);
            let b = read(libc::CLOCK_MONOTONIC);
            (b - a, r as i64 - (a / 2 + b / 2) as i64)
        })
        .min_by_key(|&(width, _)| width)
        .map_or(0, |(_, offset)| offset)
}

/// CPU time the calling thread has used, in nanoseconds (CLOCK_THREAD_CPUTIME_ID): what
/// a helper thread costs beside the driver.
pub fn thread_cpu_ns() -> u64 {
    read(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn read(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clocks read here
    // (CLOCK_MONOTONIC, CLOCK_THREAD_CPUTIME_ID) are always supported on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until `deadline` (no-op if it has passed). Sleeps coarsely, then spins the last
/// stretch, because a plain `thread::sleep` overshoots by 50–100 µs on a busy host.
pub fn sleep_until(deadline: MonoNs) {
    const SPIN_NS: u64 = 200_000;
    loop {
        let t = now();
        if t >= deadline {
            return;
        }
        let left = deadline.since(t);
        if left > SPIN_NS {
            std::thread::sleep(Duration::from_nanos(left - SPIN_NS));
        } else {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_matches_instant_rate() {
        let a = now();
        let i = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        let b = now();
        let el = i.elapsed().as_nanos() as i128;
        assert!(b > a);
        // Same clock: the two elapsed readings differ only by the reads' own cost.
        assert!(((b.since(a) as i128) - el).abs() < 1_000_000);
    }

    #[test]
    fn seconds_conversion() {
        assert_eq!(MonoNs::from_secs_f64(1.5), Some(MonoNs(1_500_000_000)));
        assert_eq!(MonoNs::from_secs_f64(0.0), None);
        assert_eq!(MonoNs::from_secs_f64(f64::NAN), None);
    }
}
