//! Bounds on the times the agent is handed (by a master, a framework or its own checkpoint), and the
//! checked conversions from their wire form (`f64` seconds) to [`Duration`]s. Every `f64 →
//! Duration` conversion of a value from outside goes through here, so that no value — NaN,
//! negative, `1e300`, `u64::MAX` seconds — can panic the agent (`Duration::from_secs_f64` panics
//! above `u64::MAX` seconds and `Instant + Duration` panics when the sum overflows).
//!
//! - A kill grace period is clamped to [`MAX_KILL_GRACE`] (with a log line); NaN or negative means
//!   "not given" (the caller's default).
//! - Health-check timings above [`MAX_HEALTH_SECONDS`] are refused by the task's validation (see
//!   [`crate::health`]), so the task ends TASK_ERROR naming the field.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use tracing::warn;

/// The longest kill grace period the agent waits between SIGTERM and SIGKILL. A longer one (from a
/// task's kill policy or a kill request) is clamped to this.
pub const MAX_KILL_GRACE: Duration = Duration::from_secs(3600);

/// The longest heartbeat interval the agent accepts from a master (a longer one is clamped).
pub const MAX_HEARTBEAT: Duration = Duration::from_secs(600);

/// The largest health-check delay, grace period, interval or timeout the agent accepts: one year
/// (365 days), as the services framework bounds its seconds fields.
pub const MAX_HEALTH_SECONDS: f64 = 31_536_000.0;

/// A kill grace period from `secs` (a task's `kill_policy.grace_period_seconds` or a kill's):
/// `None` for NaN, infinite-negative or negative values (use the default), clamped to
/// [`MAX_KILL_GRACE`] otherwise (`+inf` included). `field` names the source in the log line.
pub fn kill_grace(field: &str, secs: f64) -> Option<Duration> {
    if secs.is_nan() || secs < 0.0 {
        return None;
    }
    if secs > MAX_KILL_GRACE.as_secs_f64() {
        warn!(
            field,
            value = secs,
            max_seconds = MAX_KILL_GRACE.as_secs(),
            "kill grace period too long: clamped"
        );
        return Some(MAX_KILL_GRACE);
    }
    Duration::try_from_secs_f64(secs).ok()
}

/// `secs` as a [`Duration`] clamped to `max` when it is > 0 and not NaN/infinite; `None` otherwise.
pub fn positive_seconds(secs: f64, max: Duration) -> Option<Duration> {
    if !(secs.is_finite() && secs > 0.0) {
        return None;
    }
    Duration::try_from_secs_f64(secs.min(max.as_secs_f64()))
        .ok()
        .map(|d| d.min(max))
}

/// `at + d`, or `at` pushed as far as it goes when the sum would overflow (never panics).
pub fn instant_after(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .or_else(|| at.checked_add(Duration::from_secs(86_400 * 365 * 30)))
        .unwrap_or(at)
}

/// [`instant_after`] for tokio's clock.
pub fn tokio_instant_after(at: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    tokio::time::Instant::from_std(instant_after(at.into_std(), d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_grace_never_panics_and_clamps() {
        assert_eq!(kill_grace("g", f64::NAN), None);
        assert_eq!(kill_grace("g", -1.0), None);
        assert_eq!(kill_grace("g", f64::NEG_INFINITY), None);
        assert_eq!(kill_grace("g", 0.0), Some(Duration::ZERO));
        assert_eq!(kill_grace("g", 2.5), Some(Duration::from_millis(2500)));
        assert_eq!(kill_grace("g", 3600.0), Some(MAX_KILL_GRACE));
        for huge in [3600.5, 1.8e19, 1e300, f64::MAX, f64::INFINITY] {
            assert_eq!(kill_grace("g", huge), Some(MAX_KILL_GRACE), "{huge}");
        }
    }

    #[test]
    fn positive_seconds_bounds() {
        let max = Duration::from_secs(30);
        assert_eq!(positive_seconds(0.0, max), None);
        assert_eq!(positive_seconds(-3.0, max), None);
        assert_eq!(positive_seconds(f64::NAN, max), None);
        assert_eq!(positive_seconds(f64::INFINITY, max), None);
        assert_eq!(positive_seconds(1e300, max), Some(max));
        assert_eq!(positive_seconds(2.0, max), Some(Duration::from_secs(2)));
    }

    #[test]
    fn instant_after_saturates() {
        let now = Instant::now();
        assert_eq!(
            instant_after(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        assert!(instant_after(now, Duration::MAX) > now);
    }
}
