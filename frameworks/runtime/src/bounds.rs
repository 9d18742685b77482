//! The checks every framework API applies to a field at its edge, reporting through `bad(path,
//! message)` so that one request collects every bad field (Marathon's 422 `details`, Chronos's
//! 400) with the field's JSON pointer.

/// `s` is at most `max` bytes.
pub fn too_long(bad: &mut impl FnMut(&str, String), path: &str, s: &str, max: usize) {
    if s.len() > max {
        bad(
            path,
            format!("is {} bytes long; at most {max} are allowed", s.len()),
        );
    }
}

/// A list has at most `max` entries.
pub fn too_many(bad: &mut impl FnMut(&str, String), path: &str, n: usize, max: usize) {
    if n > max {
        bad(path, format!("has {n} entries; at most {max} are allowed"));
    }
}

/// A duration in seconds is finite and within `0..=max` (NaN, infinities and negatives refused).
pub fn seconds_within(bad: &mut impl FnMut(&str, String), path: &str, v: f64, max: f64) {
    if !(v.is_finite() && (0.0..=max).contains(&v)) {
        bad(path, format!("must be between 0 and {max}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_check_names_the_field_at_its_edge() {
        let mut got = Vec::new();
        let mut bad = |p: &str, m: String| got.push(format!("{p}: {m}"));
        too_long(&mut bad, "/cmd", "abcd", 4);
        too_long(&mut bad, "/cmd", "abcde", 4);
        too_many(&mut bad, "/env", 3, 3);
        too_many(&mut bad, "/env", 4, 3);
        for v in [0.0, 10.0] {
            seconds_within(&mut bad, "/s", v, 10.0);
        }
        for v in [-0.1, 10.5, f64::NAN, f64::INFINITY, 1e300] {
            seconds_within(&mut bad, "/s", v, 10.0);
        }
        assert_eq!(
            got,
            [
                "/cmd: is 5 bytes long; at most 4 are allowed",
                "/env: has 4 entries; at most 3 are allowed",
                "/s: must be between 0 and 10",
                "/s: must be between 0 and 10",
                "/s: must be between 0 and 10",
                "/s: must be between 0 and 10",
                "/s: must be between 0 and 10",
            ]
        );
    }
}
