//! Task health checks, pure: what a task's `HealthCheck` asks for ([`HealthCheckSpec::from_proto`],
//! validated) and what each probe result means ([`HealthTracker::record`]). No I/O, no clock: `now`
//! is a parameter. The async probes live in [`crate::prober`]; the agent actor owns one tracker per
//! running task and turns its verdicts into status updates and kills.
//!
//! ```text
//!  task RUNNING ─▶ wait delay ─▶ probe ─▶ result ─▶ HealthTracker::record(now, result)
//!                                  ▲         │          │
//!                                  └interval─┘          ├─ Quiet              (nothing changed)
//!                                                       ├─ Report{healthy}    (TASK_RUNNING update)
//!                                                       └─ Kill{message}      (REASON_TASK_UNHEALTHY)
//! ```
//!
//! Semantics follow Mesos: failures during the grace period are not counted, but the grace period
//! ends early at the first success (a task that was healthy once and then fails is unhealthy at once);
//! an update is sent only when the health changes; with `consecutive_failures > 0` the task is killed
//! when that many checks in a row fail.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use agora_proto::v1::{self, health_check::Type};

/// Interval between checks when the task leaves `interval_seconds` at 0 (Mesos' default).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Probe timeout when the task leaves `timeout_seconds` at 0 (Mesos' default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a task's `health_check` cannot be used; the task then ends in TASK_ERROR with this text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HealthCheckError {
    /// `type` is TYPE_UNSPECIFIED or unknown.
    #[error("health_check.type must be COMMAND, HTTP or TCP")]
    NoType,
    /// The sub-message for the type is absent (`http` for HTTP, …).
    #[error("health_check.{0} must be set for a {1} health check")]
    Missing(&'static str, &'static str),
    /// A port is 0 or above 65535.
    #[error("health_check.{field} must be a port between 1 and 65535, not {value}")]
    Port { field: &'static str, value: u32 },
    /// A duration is negative, NaN, infinite or above [`crate::limits::MAX_HEALTH_SECONDS`].
    #[error("health_check.{field} must be between 0 and 31536000 seconds, not {value}")]
    Seconds { field: &'static str, value: f64 },
    /// Only plain HTTP is probed (no TLS stack in the agent).
    #[error("health_check.http.scheme '{0}' is not supported (only 'http' and 'https')")]
    Scheme(String),
    /// A status in `http.statuses` is not an HTTP status code.
    #[error("health_check.http.statuses contains {0}, which is not an HTTP status (100-599)")]
    Status(u32),
    /// `http.path` would not fit in a request line.
    #[error("health_check.http.path {0:?} must not contain whitespace or control characters")]
    Path(String),
    /// The command cannot be run.
    #[error("health_check.command: {0}")]
    Command(String),
}

/// What one check does.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// `GET http(s)://127.0.0.1:<port><path>`; healthy on a status in `statuses` (empty: 200–399).
    /// Over TLS the task's certificate is not verified (it is the task's own, often self-signed,
    /// and the check dials 127.0.0.1), as Marathon's HTTPS checks do.
    Http {
        port: u16,
        path: String,
        statuses: Vec<u16>,
        tls: bool,
    },
    /// A TCP connection to `127.0.0.1:<port>` is accepted.
    Tcp { port: u16 },
    /// The command exits 0. `argv` as the task's own command would be run (`/bin/sh -c …`).
    Command {
        argv: Vec<String>,
        env: Vec<(String, String)>,
    },
}

/// Timing of the checks and when to give up on the task.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthPolicy {
    /// Failures within this time after the task reached RUNNING are not counted (until a success).
    pub grace: Duration,
    /// From RUNNING to the first check.
    pub delay: Duration,
    /// From the end of one check to the start of the next.
    pub interval: Duration,
    /// A probe that takes longer fails.
    pub timeout: Duration,
    /// Kill the task after this many failures in a row; 0 never kills.
    pub consecutive_failures: u32,
}

/// A validated `HealthCheck`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckSpec {
    pub probe: Probe,
    pub policy: HealthPolicy,
}

fn seconds(field: &'static str, value: f64, zero: Duration) -> Result<Duration, HealthCheckError> {
    if !value.is_finite() || !(0.0..=crate::limits::MAX_HEALTH_SECONDS).contains(&value) {
        return Err(HealthCheckError::Seconds { field, value });
    }
    // proto3 cannot tell an unset double from 0: for interval and timeout 0 makes no sense, so it
    // means the default; for grace and delay 0 means none.
    if value == 0.0 {
        return Ok(zero);
    }
    Duration::try_from_secs_f64(value).map_err(|_| HealthCheckError::Seconds { field, value })
}

fn port(field: &'static str, value: u32) -> Result<u16, HealthCheckError> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(HealthCheckError::Port { field, value })
}

impl HealthCheckSpec {
    /// Validates a task's health check.
    ///
    /// # Errors
    /// [`HealthCheckError`] naming the offending field.
    pub fn from_proto(hc: &v1::HealthCheck) -> Result<Self, HealthCheckError> {
        let policy = HealthPolicy {
            grace: seconds(
                "grace_period_seconds",
                hc.grace_period_seconds,
                Duration::ZERO,
            )?,
            delay: seconds("delay_seconds", hc.delay_seconds, Duration::ZERO)?,
            interval: seconds("interval_seconds", hc.interval_seconds, DEFAULT_INTERVAL)?,
            timeout: seconds("timeout_seconds", hc.timeout_seconds, DEFAULT_TIMEOUT)?,
            consecutive_failures: hc.consecutive_failures,
        };
        let probe = match Type::try_from(hc.r#type).unwrap_or(Type::Unspecified) {
            Type::Unspecified => return Err(HealthCheckError::NoType),
            Type::Http => {
                let h = hc
                    .http
                    .as_ref()
                    .ok_or(HealthCheckError::Missing("http", "HTTP"))?;
                let tls = h.scheme.eq_ignore_ascii_case("https");
                if !(h.scheme.is_empty() || h.scheme.eq_ignore_ascii_case("http") || tls) {
                    return Err(HealthCheckError::Scheme(h.scheme.clone()));
                }
                let statuses = h
                    .statuses
                    .iter()
                    .map(|s| {
                        u16::try_from(*s)
                            .ok()
                            .filter(|s| (100..=599).contains(s))
                            .ok_or(HealthCheckError::Status(*s))
                    })
                    .collect::<Result<Vec<u16>, _>>()?;
                let path = if h.path.is_empty() {
                    "/".to_string()
                } else if h.path.starts_with('/') {
                    h.path.clone()
                } else {
                    format!("/{}", h.path)
                };
                if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    // It goes into the request line verbatim: spaces or CR/LF would break it.
                    return Err(HealthCheckError::Path(path));
                }
                Probe::Http {
                    port: port("http.port", h.port)?,
                    path,
                    statuses,
                    tls,
                }
            }
            Type::Tcp => {
                let t = hc
                    .tcp
                    .as_ref()
                    .ok_or(HealthCheckError::Missing("tcp", "TCP"))?;
                Probe::Tcp {
                    port: port("tcp.port", t.port)?,
                }
            }
            Type::Command => {
                let c = hc
                    .command
                    .as_ref()
                    .ok_or(HealthCheckError::Missing("command", "COMMAND"))?;
                let argv = crate::command::argv(Some(c))
                    .map_err(|e| HealthCheckError::Command(e.to_string()))?;
                Probe::Command {
                    argv,
                    env: c
                        .environment
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                }
            }
        };
        Ok(HealthCheckSpec { probe, policy })
    }
}

/// Whether an HTTP status counts as healthy: one of `statuses`, or 200–399 when it is empty (as
/// Marathon does).
pub fn http_status_healthy(status: u16, statuses: &[u16]) -> bool {
    if statuses.is_empty() {
        (200..400).contains(&status)
    } else {
        statuses.contains(&status)
    }
}

/// The status code of an HTTP/1.x response, from its first bytes (`HTTP/1.1 200 OK\r\n…`). `None`
/// until a whole status line is there, or when it is not HTTP.
pub fn parse_status_line(head: &[u8]) -> Option<u16> {
    let end = head.iter().position(|b| *b == b'\n')?;
    let line = std::str::from_utf8(&head[..end]).ok()?;
    let mut parts = line.trim_end_matches('\r').split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// What the agent must do after a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to report: the health did not change, or the failure fell in the grace period.
    Quiet,
    /// The task's health changed: send a TASK_RUNNING update with `healthy` set.
    Report { healthy: bool, message: String },
    /// The task failed `consecutive_failures` checks in a row: kill it (REASON_TASK_UNHEALTHY).
    Kill { message: String },
}

/// The health of one running task, fed with probe results. See the module documentation.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    policy: HealthPolicy,
    started: Instant,
    /// A check succeeded at least once: the grace period is over.
    passed_once: bool,
    failures: u32,
    healthy: Option<bool>,
    killed: bool,
}

impl HealthTracker {
    /// A tracker for a task that reached RUNNING at `started`. `healthy` is what was reported last
    /// (after an agent restart), so that an unchanged result is not reported twice.
    pub fn new(policy: HealthPolicy, started: Instant, healthy: Option<bool>) -> Self {
        HealthTracker {
            policy,
            started,
            // A task reported healthy before a restart has left its grace period for good.
            passed_once: healthy == Some(true),
            failures: 0,
            healthy,
            killed: false,
        }
    }

    /// The last health reported (`None` until the first result that counts).
    pub fn healthy(&self) -> Option<bool> {
        self.healthy
    }

    /// Failed checks in a row so far (failures in the grace period do not count).
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// Applies the result of a check that ended at `now`: `Ok` if healthy, else why not.
    pub fn record(&mut self, now: Instant, result: Result<(), String>) -> Verdict {
        if self.killed {
            return Verdict::Quiet;
        }
        match result {
            Ok(()) => {
                self.failures = 0;
                self.passed_once = true;
                if self.healthy == Some(true) {
                    return Verdict::Quiet;
                }
                self.healthy = Some(true);
                Verdict::Report {
                    healthy: true,
                    message: "the health check passed".into(),
                }
            }
            Err(why) => {
                let in_grace = !self.passed_once
                    && now.saturating_duration_since(self.started) < self.policy.grace;
                if in_grace {
                    return Verdict::Quiet;
                }
                self.failures = self.failures.saturating_add(1);
                let limit = self.policy.consecutive_failures;
                let was = self.healthy.replace(false);
                if limit > 0 && self.failures >= limit {
                    self.killed = true;
                    return Verdict::Kill {
                        message: format!(
                            "killed after failing its health check {} time{} in a row: {why}",
                            self.failures,
                            if self.failures == 1 { "" } else { "s" }
                        ),
                    };
                }
                if was == Some(false) {
                    return Verdict::Quiet;
                }
                Verdict::Report {
                    healthy: false,
                    message: format!("the health check failed: {why}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use v1::health_check::{Http, Tcp};

    fn policy(grace: u64, failures: u32) -> HealthPolicy {
        HealthPolicy {
            grace: Duration::from_secs(grace),
            delay: Duration::ZERO,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            consecutive_failures: failures,
        }
    }

    /// Plays `(seconds after start, passed?)` through a tracker; returns the verdicts as short
    /// strings: `-` quiet, `H`/`U` reported healthy/unhealthy, `K` kill.
    fn play(p: HealthPolicy, results: &[(u64, bool)]) -> String {
        let t0 = Instant::now();
        let mut t = HealthTracker::new(p, t0, None);
        results
            .iter()
            .map(|(at, ok)| {
                let r = if *ok { Ok(()) } else { Err("no".into()) };
                match t.record(t0 + Duration::from_secs(*at), r) {
                    Verdict::Quiet => '-',
                    Verdict::Report { healthy: true, .. } => 'H',
                    Verdict::Report { healthy: false, .. } => 'U',
                    Verdict::Kill { .. } => 'K',
                }
            })
            .collect()
    }

    #[test]
    fn verdict_table() {
        let f = false;
        let t = true;
        // (name, policy, (seconds after start, passed?) results, verdicts as `play` prints them)
        type Case<'a> = (&'a str, HealthPolicy, &'a [(u64, bool)], &'a str);
        let cases: &[Case] = &[
            (
                "healthy once, reported once",
                policy(0, 3),
                &[(1, t), (2, t), (3, t)],
                "H--",
            ),
            (
                "unhealthy reported on the first failure, then quiet",
                policy(0, 0),
                &[(1, f), (2, f), (3, f)],
                "U--",
            ),
            (
                "flapping reports every change",
                policy(0, 0),
                &[(1, t), (2, f), (3, t), (4, f)],
                "HUHU",
            ),
            (
                "killed at the limit",
                policy(0, 3),
                &[(1, f), (2, f), (3, f), (4, f)],
                "U-K-",
            ),
            (
                "a success resets the count",
                policy(0, 3),
                &[(1, f), (2, f), (3, t), (4, f), (5, f), (6, f)],
                "U-HU-K",
            ),
            (
                "limit 1 kills at the first counted failure",
                policy(0, 1),
                &[(1, f)],
                "K",
            ),
            (
                "0 never kills",
                policy(0, 0),
                &[(1, f), (2, f), (3, f), (4, f), (5, f)],
                "U----",
            ),
            (
                "failures in the grace period are ignored",
                policy(10, 2),
                &[(1, f), (5, f), (9, f), (10, f), (11, f)],
                "---UK",
            ),
            (
                "a success ends the grace period",
                policy(10, 2),
                &[(1, f), (2, t), (3, f), (4, f)],
                "-HUK",
            ),
            (
                "healthy within grace is reported",
                policy(10, 2),
                &[(1, t)],
                "H",
            ),
        ];
        for (name, p, results, want) in cases {
            assert_eq!(play(*p, results), *want, "{name}");
        }
    }

    #[test]
    fn kill_message_counts_and_nothing_after_a_kill() {
        let t0 = Instant::now();
        let mut t = HealthTracker::new(policy(0, 2), t0, None);
        assert!(
            matches!(t.record(t0, Err("connection refused".into())), Verdict::Report { healthy: false, ref message } if message.contains("connection refused"))
        );
        assert_eq!(t.consecutive_failures(), 1);
        match t.record(t0, Err("connection refused".into())) {
            Verdict::Kill { message } => assert_eq!(
                message,
                "killed after failing its health check 2 times in a row: connection refused"
            ),
            v => panic!("{v:?}"),
        }
        assert_eq!(t.record(t0, Ok(())), Verdict::Quiet);
        assert_eq!(t.healthy(), Some(false));
    }

    #[test]
    fn restored_tracker_does_not_repeat_the_last_report() {
        let t0 = Instant::now();
        // Reported healthy before an agent restart: a pass is quiet, and the grace period is over.
        let mut t = HealthTracker::new(policy(100, 0), t0, Some(true));
        assert_eq!(t.record(t0, Ok(())), Verdict::Quiet);
        assert!(matches!(
            t.record(t0, Err("x".into())),
            Verdict::Report { healthy: false, .. }
        ));
        let mut t = HealthTracker::new(policy(0, 0), t0, Some(false));
        assert_eq!(t.record(t0, Err("x".into())), Verdict::Quiet);
    }

    #[test]
    fn http_statuses() {
        for (status, statuses, want) in [
            (200, &[][..], true),
            (302, &[], true),
            (399, &[], true),
            (199, &[], false),
            (400, &[], false),
            (503, &[], false),
            (503, &[503], true),
            (200, &[204], false),
        ] {
            assert_eq!(
                http_status_healthy(status, statuses),
                want,
                "{status} {statuses:?}"
            );
        }
        assert_eq!(
            parse_status_line(b"HTTP/1.1 204 No Content\r\nX: y\r\n"),
            Some(204)
        );
        assert_eq!(parse_status_line(b"HTTP/1.0 404\r\n"), Some(404));
        assert_eq!(
            parse_status_line(b"HTTP/1.1 200 OK"),
            None,
            "incomplete line"
        );
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 2000 OK\r\n"), None);
    }

    fn hc(t: Type) -> v1::HealthCheck {
        v1::HealthCheck {
            r#type: t as i32,
            ..Default::default()
        }
    }

    #[test]
    fn validation_and_defaults() {
        let mut h = hc(Type::Http);
        h.http = Some(Http {
            port: 8080,
            path: "health".into(),
            ..Default::default()
        });
        h.grace_period_seconds = 1.5;
        h.consecutive_failures = 3;
        let s = HealthCheckSpec::from_proto(&h).expect("valid");
        assert_eq!(
            s.probe,
            Probe::Http {
                port: 8080,
                path: "/health".into(),
                statuses: vec![],
                tls: false,
            }
        );
        assert_eq!(s.policy.grace, Duration::from_millis(1500));
        assert_eq!(s.policy.delay, Duration::ZERO);
        assert_eq!(s.policy.interval, DEFAULT_INTERVAL);
        assert_eq!(s.policy.timeout, DEFAULT_TIMEOUT);
        assert_eq!(s.policy.consecutive_failures, 3);

        let bad = |f: &dyn Fn(&mut v1::HealthCheck)| {
            let mut h = h.clone();
            f(&mut h);
            HealthCheckSpec::from_proto(&h)
                .expect_err("invalid")
                .to_string()
        };
        assert!(bad(&|h| h.r#type = 0).contains("health_check.type"));
        assert!(bad(&|h| h.http = None).contains("health_check.http must be set"));
        assert!(bad(&|h| h.http.as_mut().expect("http").port = 70000).contains("http.port"));
        assert!(bad(&|h| h.http.as_mut().expect("http").scheme = "ftp".into()).contains("'ftp'"));
        let mut secure = h.clone();
        secure.http.as_mut().expect("http").scheme = "HTTPS".into();
        assert!(matches!(
            HealthCheckSpec::from_proto(&secure)
                .expect("https is valid")
                .probe,
            Probe::Http { tls: true, .. }
        ));
        assert!(bad(&|h| h.http.as_mut().expect("http").statuses = vec![42]).contains("42"));
        assert!(
            bad(&|h| h.http.as_mut().expect("http").path = "/a b".into()).contains("http.path")
        );
        assert!(bad(&|h| h.timeout_seconds = -1.0).contains("timeout_seconds"));
        assert!(bad(&|h| h.interval_seconds = f64::NAN).contains("interval_seconds"));
        // Huge values are refused with the field's name, never converted (1e300 used to pass
        // validation as finite and then overflow `Instant + Duration`).
        for huge in [31_536_000.5, 1.8e19, 1e300, f64::INFINITY] {
            assert!(bad(&|h| h.delay_seconds = huge)
                .contains("health_check.delay_seconds must be between 0 and 31536000"));
            assert!(bad(&|h| h.grace_period_seconds = huge).contains("grace_period_seconds"));
            assert!(bad(&|h| h.interval_seconds = huge).contains("interval_seconds"));
            assert!(bad(&|h| h.timeout_seconds = huge).contains("timeout_seconds"));
        }
        let mut year = h.clone();
        year.delay_seconds = 31_536_000.0;
        assert!(HealthCheckSpec::from_proto(&year).is_ok());

        let mut t = hc(Type::Tcp);
        assert!(HealthCheckSpec::from_proto(&t).is_err());
        t.tcp = Some(Tcp { port: 0 });
        assert!(HealthCheckSpec::from_proto(&t)
            .expect_err("port 0")
            .to_string()
            .contains("tcp.port"));
        t.tcp = Some(Tcp { port: 31000 });
        assert_eq!(
            HealthCheckSpec::from_proto(&t).expect("tcp").probe,
            Probe::Tcp { port: 31000 }
        );

        let mut c = hc(Type::Command);
        c.command = Some(v1::CommandInfo {
            shell: true,
            value: "test -f ok".into(),
            ..Default::default()
        });
        assert_eq!(
            HealthCheckSpec::from_proto(&c).expect("command").probe,
            Probe::Command {
                argv: vec!["/bin/sh".into(), "-c".into(), "test -f ok".into()],
                env: vec![]
            }
        );
        c.command = Some(v1::CommandInfo::default());
        assert!(HealthCheckSpec::from_proto(&c).is_err());
    }
}
