//! Job schedules: Chronos's ISO 8601 repeating intervals `R[n]/<start>/<period>` and, beyond
//! Chronos, five-field cron expressions (`*/5 * * * *`), both in UTC. Pure: the current time is a
//! parameter.

use chrono::{DateTime, Datelike, Duration as ChronoDuration, Months, TimeZone, Timelike, Utc};

/// A calendar period: months are calendar months (as Joda's `Period`, which Chronos uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub months: u32,
    pub seconds: i64,
}

impl Period {
    fn is_zero(&self) -> bool {
        self.months == 0 && self.seconds == 0
    }

    /// `t` plus this period; `None` past the end of time (checked: a saved period must not
    /// panic the scheduler, and a period that cannot be added must not repeat `t` forever).
    pub fn after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let t = if self.months > 0 {
            t.checked_add_months(Months::new(self.months))?
        } else {
            t
        };
        t.checked_add_signed(ChronoDuration::try_seconds(self.seconds)?)
    }

    /// The length of the period in seconds, months counted as 30 days (for `epsilon`).
    pub fn approx_seconds(&self) -> i64 {
        i64::from(self.months) * 30 * 86_400 + self.seconds
    }
}

/// The longest period or epsilon read back from saved state (the API accepts at most
/// [`MAX_API_PERIOD_SECONDS`]).
pub const MAX_PERIOD_YEARS: u32 = 1000;
/// The longest schedule period or epsilon the API accepts: 366 days, months counted as 30 days
/// (`P1Y`, `P12M`, `P52W`, `P366D`, `PT31536000S` pass; `P13M` does not).
pub const MAX_API_PERIOD_SECONDS: i64 = 366 * 86_400;
/// The most repetitions `R<n>/…` may ask for.
pub const MAX_REPEATS: u64 = 1_000_000_000;
const MAX_PERIOD_SECONDS: i64 = MAX_PERIOD_YEARS as i64 * 366 * 86_400;

/// Parses an ISO 8601 duration: `P1Y2M3DT4H5M6S`, `PT30S`, `P2W`, `PT0.5S` (fractions of seconds
/// are rounded up to whole seconds).
///
/// # Errors
/// A sentence naming what is wrong.
pub fn parse_duration(s: &str) -> Result<Period, String> {
    let bad = || format!("'{s}' is not an ISO 8601 duration like PT30S, PT1H or P1D");
    // Checked arithmetic throughout: 'P9999999999Y' or 'PT1e20S'-sized values overflowed, and a
    // period past MAX_PERIOD_YEARS would overflow the date arithmetic of the scheduler later.
    let too_long = || format!("'{s}' is longer than {MAX_PERIOD_YEARS} years");
    let rest = s.strip_prefix('P').ok_or_else(bad)?;
    if rest.is_empty() {
        return Err(bad());
    }
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => {
            if t.is_empty() {
                return Err(bad());
            }
            (d, Some(t))
        }
        None => (rest, None),
    };
    let mut p = Period {
        months: 0,
        seconds: 0,
    };
    let mut num = String::new();
    for c in date.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u32 = num.parse().map_err(|_| bad())?;
        num.clear();
        let (months, seconds) = match c {
            'Y' => (u64::from(n) * 12, 0),
            'M' => (u64::from(n), 0),
            'W' => (0, i64::from(n) * 7 * 86_400),
            'D' => (0, i64::from(n) * 86_400),
            _ => return Err(bad()),
        };
        p.months = u32::try_from(u64::from(p.months) + months)
            .ok()
            .filter(|m| *m <= MAX_PERIOD_YEARS * 12)
            .ok_or_else(too_long)?;
        p.seconds = p
            .seconds
            .checked_add(seconds)
            .filter(|s| *s <= MAX_PERIOD_SECONDS)
            .ok_or_else(too_long)?;
    }
    if !num.is_empty() {
        return Err(bad());
    }
    if let Some(time) = time {
        for c in time.chars() {
            if c.is_ascii_digit() || c == '.' || c == ',' {
                num.push(if c == ',' { '.' } else { c });
                continue;
            }
            let n: f64 = num.parse().map_err(|_| bad())?;
            num.clear();
            let unit = match c {
                'H' => 3600.0,
                'M' => 60.0,
                'S' => 1.0,
                _ => return Err(bad()),
            };
            let add = (n * unit).ceil();
            if !add.is_finite() || add > MAX_PERIOD_SECONDS as f64 {
                return Err(too_long());
            }
            p.seconds = p
                .seconds
                .checked_add(add as i64)
                .filter(|s| *s <= MAX_PERIOD_SECONDS)
                .ok_or_else(too_long)?;
        }
        if !num.is_empty() {
            return Err(bad());
        }
    }
    Ok(p)
}

/// A cron field: the allowed values.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CronField(Vec<bool>);

impl CronField {
    fn parse(s: &str, min: u32, max: u32, name: &str) -> Result<Self, String> {
        let mut allowed = vec![false; (max + 1) as usize];
        for part in s.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, st)) => (
                    r,
                    st.parse::<u32>()
                        .ok()
                        .filter(|v| *v > 0)
                        .ok_or_else(|| format!("{name} step '{st}' must be a positive number"))?,
                ),
                None => (part, 1),
            };
            let (lo, hi) = if range == "*" {
                (min, max)
            } else if let Some((a, b)) = range.split_once('-') {
                let a: u32 = a
                    .parse()
                    .map_err(|_| format!("{name} '{a}' is not a number"))?;
                let b: u32 = b
                    .parse()
                    .map_err(|_| format!("{name} '{b}' is not a number"))?;
                (a, b)
            } else {
                let v: u32 = range
                    .parse()
                    .map_err(|_| format!("{name} '{range}' is not a number"))?;
                (v, if part.contains('/') { max } else { v })
            };
            if lo < min || hi > max || lo > hi {
                return Err(format!("{name} '{part}' is outside {min}-{max}"));
            }
            // Stepping by a huge step ('1/4294967295') must end the loop, not overflow.
            let mut v = Some(lo);
            while let Some(x) = v.filter(|x| *x <= hi) {
                allowed[x as usize] = true;
                v = x.checked_add(step);
            }
        }
        Ok(CronField(allowed))
    }

    fn has(&self, v: u32) -> bool {
        self.0.get(v as usize).copied().unwrap_or(false)
    }
}

/// A five-field cron expression: minute hour day-of-month month day-of-week (0 or 7 = Sunday).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minute: CronField,
    hour: CronField,
    dom: CronField,
    month: CronField,
    dow: CronField,
    dom_any: bool,
    dow_any: bool,
}

impl Cron {
    /// # Errors
    /// A sentence naming the bad field.
    pub fn parse(s: &str) -> Result<Self, String> {
        let f: Vec<&str> = s.split_whitespace().collect();
        if f.len() != 5 {
            return Err(format!(
                "'{s}' is not a cron expression: expected 5 fields (minute hour day month weekday)"
            ));
        }
        let mut dow = CronField::parse(f[4], 0, 7, "weekday")?;
        if dow.has(7) {
            dow.0[0] = true;
        }
        let cron = Cron {
            minute: CronField::parse(f[0], 0, 59, "minute")?,
            hour: CronField::parse(f[1], 0, 23, "hour")?,
            dom: CronField::parse(f[2], 1, 31, "day of month")?,
            month: CronField::parse(f[3], 1, 12, "month")?,
            dow,
            dom_any: f[2] == "*",
            dow_any: f[4] == "*",
        };
        // With the weekday unrestricted, only the day of month decides: `0 0 31 2 *` (31 February)
        // would never run, and each look for its next time would scan years of minutes.
        const LONGEST_MONTH: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        if cron.dow_any {
            let some_day_exists = (1..=12u32)
                .filter(|m| cron.month.has(*m))
                .any(|m| (1..=LONGEST_MONTH[(m - 1) as usize]).any(|d| cron.dom.has(d)));
            if !some_day_exists {
                return Err(format!(
                    "'{s}': day of month '{}' never falls in month '{}', so the schedule would never run",
                    f[2], f[3]
                ));
            }
        }
        Ok(cron)
    }

    fn matches(&self, t: DateTime<Utc>) -> bool {
        let dom = self.dom.has(t.day());
        let dow = self.dow.has(t.weekday().num_days_from_sunday());
        // As in cron: when both day fields are restricted, either may match.
        let day = match (self.dom_any, self.dow_any) {
            (true, true) => true,
            (false, true) => dom,
            (true, false) => dow,
            (false, false) => dom || dow,
        };
        day && self.minute.has(t.minute()) && self.hour.has(t.hour()) && self.month.has(t.month())
    }

    /// The first minute strictly after `t` that matches (searching at most ~4 years ahead).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let minute = ChronoDuration::minutes(1);
        let start = t
            .with_second(0)?
            .with_nanosecond(0)?
            .checked_add_signed(minute)?;
        let mut c = start;
        for _ in 0..(4 * 366 * 24 * 60) {
            if self.matches(c) {
                return Some(c);
            }
            c = c.checked_add_signed(minute)?;
        }
        None
    }
}

/// A job's schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// `R[n]/start/period`; `repeats: None` repeats forever.
    Iso {
        repeats: Option<u64>,
        start: DateTime<Utc>,
        period: Period,
    },
    Cron(Cron),
}

/// Parses a start time: RFC 3339 / ISO 8601 (`2026-11-24T12:00:00Z`, `…+01:00`, `…T12:00Z`), or
/// empty for "now".
fn parse_start(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if s.is_empty() {
        return Ok(now);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%MZ",
        "%Y-%m-%dT%H:%M:%S%.fZ",
        "%Y-%m-%dT%H:%M:%S",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(Utc.from_utc_datetime(&t));
        }
    }
    Err(format!(
        "start '{s}' is not an ISO 8601 time like 2026-11-24T12:00:00Z"
    ))
}

impl Schedule {
    /// Parses `R[n]/<start>/<period>` or a cron expression. `now` fills an empty start.
    ///
    /// # Errors
    /// A sentence naming the bad part.
    pub fn parse(s: &str, now: DateTime<Utc>) -> Result<Self, String> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix('R') {
            let parts: Vec<&str> = rest.split('/').collect();
            if parts.len() != 3 {
                return Err(format!(
                    "'{s}' must be R[n]/<start>/<period>, e.g. R/2026-11-24T12:00:00Z/PT1H"
                ));
            }
            let repeats = if parts[0].is_empty() {
                None
            } else {
                Some(
                    parts[0]
                        .parse::<u64>()
                        .map_err(|_| format!("repetitions '{}' must be a number", parts[0]))?,
                )
            };
            let start = parse_start(parts[1], now)?;
            let period = parse_duration(parts[2])?;
            if period.is_zero() {
                return Err(format!("period '{}' must be longer than zero", parts[2]));
            }
            return Ok(Schedule::Iso {
                repeats,
                start,
                period,
            });
        }
        Cron::parse(s).map(Schedule::Cron)
    }

    /// The occurrence number `k` (0-based) after which nothing more is due, if bounded.
    pub fn repeats(&self) -> Option<u64> {
        match self {
            Schedule::Iso { repeats, .. } => *repeats,
            Schedule::Cron(_) => None,
        }
    }

    /// The first occurrence at or after `t` (ISO) / strictly after `t` (cron).
    pub fn first_at_or_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Iso { start, period, .. } => {
                if t <= *start {
                    return Some(*start);
                }
                if period.months == 0 {
                    let step = period.seconds.max(1);
                    let elapsed = (t - *start).num_seconds();
                    let k = elapsed.checked_add(step - 1)? / step;
                    let mut c = start
                        .checked_add_signed(ChronoDuration::try_seconds(k.checked_mul(step)?)?)?;
                    while c < t {
                        c = c.checked_add_signed(ChronoDuration::try_seconds(step)?)?;
                    }
                    return Some(c);
                }
                let mut c = *start;
                while c < t {
                    c = period.after(c)?;
                }
                Some(c)
            }
            Schedule::Cron(c) => c.next_after(t.checked_sub_signed(ChronoDuration::seconds(1))?),
        }
    }

    /// The occurrence after `t` (which is an occurrence).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Iso { period, .. } => period.after(t),
            Schedule::Cron(c) => c.next_after(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn iso_durations() {
        assert_eq!(
            parse_duration("PT30S"),
            Ok(Period {
                months: 0,
                seconds: 30
            })
        );
        assert_eq!(parse_duration("P1DT1H").map(|p| p.seconds), Ok(90_000));
        assert_eq!(parse_duration("P1Y2M").map(|p| p.months), Ok(14));
        assert_eq!(parse_duration("P2W").map(|p| p.seconds), Ok(1_209_600));
        assert_eq!(parse_duration("PT0.5S").map(|p| p.seconds), Ok(1));
        for bad in ["30S", "P", "PT", "P1H", "PTXS", "P1.5D"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn chronos_schedules_parse_and_step() {
        let now = at("2026-11-24T12:00:00Z");
        let s = Schedule::parse("R5/2026-11-24T12:00:00Z/PT10M", now).expect("parse");
        assert_eq!(s.repeats(), Some(5));
        assert_eq!(s.first_at_or_after(now), Some(now));
        assert_eq!(
            s.first_at_or_after(at("2026-11-24T12:00:01Z")),
            Some(at("2026-11-24T12:10:00Z"))
        );
        let forever = Schedule::parse("R//PT1S", now).expect("parse");
        assert_eq!(forever.repeats(), None);
        assert_eq!(forever.next_after(now), Some(at("2026-11-24T12:00:01Z")));
        let monthly = Schedule::parse("R/2026-01-31T00:00:00Z/P1M", now).expect("parse");
        assert_eq!(
            monthly.next_after(at("2026-01-31T00:00:00Z")),
            Some(at("2026-02-28T00:00:00Z"))
        );
        for (bad, says) in [
            ("R5/2026-11-24T12:00:00Z", "R[n]/<start>/<period>"),
            ("Rx/2026-11-24T12:00:00Z/PT1S", "repetitions"),
            ("R/yesterday/PT1S", "not an ISO 8601 time"),
            ("R/2026-11-24T12:00:00Z/PT0S", "longer than zero"),
            ("every hour", "expected 5 fields"),
        ] {
            let err = Schedule::parse(bad, now).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn cron_expressions() {
        let c = Cron::parse("*/15 9-17 * * 1-5").expect("parse");
        // Tuesday 2026-11-24 12:07 → 12:15.
        assert_eq!(
            c.next_after(at("2026-11-24T12:07:00Z")),
            Some(at("2026-11-24T12:15:00Z"))
        );
        // Friday after 17:45 → Monday 09:00.
        assert_eq!(
            c.next_after(at("2026-11-27T17:45:00Z")),
            Some(at("2026-11-30T09:00:00Z"))
        );
        let sunday = Cron::parse("0 0 * * 7").expect("parse");
        assert_eq!(
            sunday.next_after(at("2026-11-24T00:00:00Z")),
            Some(at("2026-11-29T00:00:00Z"))
        );
        assert!(Cron::parse("61 * * * *").unwrap_err().contains("minute"));
        assert!(Cron::parse("* * * * mon").unwrap_err().contains("weekday"));
        // A day that never comes is refused; 29 February and a weekday alternative are not.
        let never = Cron::parse("0 0 31 2 *").unwrap_err();
        assert!(
            never.contains("never run") && never.contains("31"),
            "{never}"
        );
        assert!(Cron::parse("0 0 31 4,6,9,11 *").is_err());
        assert!(
            Cron::parse("0 0 30,31 4,6,9,11 *").is_ok(),
            "30 April exists"
        );
        let leap = Cron::parse("0 0 29 2 *").expect("29 February exists");
        assert_eq!(
            leap.next_after(at("2026-11-24T00:00:00Z")),
            Some(at("2028-02-29T00:00:00Z"))
        );
        assert!(
            Cron::parse("0 0 31 2 1").is_ok(),
            "either day field may match"
        );
    }
}
