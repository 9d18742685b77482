//! The bounds every app field is held to at the API edge. Durations are at most a year; counts and
//! sizes are far above any real app and far below what would hurt an agent (a 300-character id made
//! every sandbox path "File name too long").

/// The longest duration of any `…Seconds` field: one year.
pub const MAX_SECONDS: f64 = 31_536_000.0;
/// `taskKillGracePeriodSeconds`: at most an hour, the master's bound for a kill policy (a
/// longer one would be refused at launch, TASK_ERROR, relaunched forever).
pub const MAX_KILL_GRACE_SECONDS: f64 = 3600.0;
/// Health-check timings: at most a day, the master's bound.
pub const MAX_HEALTH_SECONDS: f64 = 86_400.0;
/// Characters in one segment of an app id (a DNS label's length).
pub const MAX_ID_SEGMENT: usize = 63;
/// Characters in a whole app id.
pub const MAX_ID: usize = 255;
pub const MAX_INSTANCES: u32 = 100_000;
/// Bytes of `cmd`, of all `args` together, of a health check's command.
pub const MAX_CMD: usize = 64 * 1024;
/// Entries of `args` (the master takes at most 1,000 arguments).
pub const MAX_ARGS: usize = 1000;
/// Entries of `env`: the master takes at most 1,000 variables, and the framework adds its
/// own (`MARATHON_APP_ID`, `HOST`, `PORT*`, … up to two per port).
pub const MAX_ENV: usize = 800;
/// Bytes of all `env` names and values together (the master takes at most 256 KiB, the
/// framework's own variables included).
pub const MAX_ENV_TOTAL: usize = 192 * 1024;
pub const MAX_ENV_KEY: usize = 255;
pub const MAX_ENV_VALUE: usize = 32 * 1024;
/// Entries of `labels` (the master keeps at most 100 labels per task; the framework adds
/// its own).
pub const MAX_LABELS: usize = 90;
pub const MAX_LABEL_KEY: usize = 255;
pub const MAX_LABEL_VALUE: usize = 4096;
/// Entries of `constraints`, `healthChecks`, `portDefinitions`, port mappings, volumes,
/// `fetch`, `dependencies`, docker parameters, networks.
pub const MAX_LIST: usize = 64;
pub const MAX_HEALTH_CHECKS: usize = 16;
/// Bytes of a short string: a name, a path, a URI, an image, a user, a constraint part.
pub const MAX_STRING: usize = 4096;
pub const MAX_PORT: u32 = 65_535;
/// `backoffFactor` is from 1 to this.
pub const MAX_BACKOFF_FACTOR: f64 = 100.0;
/// The master's bound for `consecutive_failures`.
pub const MAX_CONSECUTIVE_FAILURES: u32 = 1000;

/// `secs` as a usable duration: NaN, negative and infinite values (possible only in state
/// saved by an older version) become `0` or [`MAX_SECONDS`].
pub fn clamp_seconds(secs: f64) -> f64 {
    clamp_seconds_to(secs, MAX_SECONDS)
}

/// [`clamp_seconds`] with another ceiling (a kill grace period, a health-check timing).
pub fn clamp_seconds_to(secs: f64, max: f64) -> f64 {
    if secs.is_nan() {
        0.0
    } else {
        secs.clamp(0.0, max)
    }
}

/// A fraction clamped into 0..=1 (NaN: `default`).
pub fn clamp_fraction(v: f64, default: f64) -> f64 {
    if v.is_nan() {
        default
    } else {
        v.clamp(0.0, 1.0)
    }
}
