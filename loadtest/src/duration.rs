//! Parsing of human durations given on the command line (`10s`, `500ms`,
//! `1m`), with the upper bound every phase of a run must respect.

use std::time::Duration;

/// Longest duration accepted for any phase of a run (one hour).
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

/// Parses a duration such as `500ms`, `10s`, `1.5s`, `2m` or `1h`.
///
/// The unit is mandatory (`us`, `ms`, `s`, `m`, `h`); the number may have a
/// fractional part. Values above [`MAX_DURATION`] are refused.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let text = input.trim();
    if text.is_empty() {
        return Err("empty duration (expected e.g. 10s, 500ms, 1m)".to_string());
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("duration `{text}` has no unit (expected e.g. 10s, 500ms, 1m)"))?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(format!("duration `{text}` does not start with a number"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("duration `{text}` has an invalid number `{number}`"))?;
    let unit_secs = match unit {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "duration `{text}` has unknown unit `{other}` (use us, ms, s, m or h)"
            ));
        }
    };
    let secs = value * unit_secs;
    if !secs.is_finite() || secs > MAX_DURATION.as_secs_f64() {
        return Err(format!("duration `{text}` is longer than the 1h maximum"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_common_forms() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_bad_input() {
        for bad in [
            "",
            "10",
            "s",
            "ms",
            "ten s",
            "10 s",
            "10sec",
            "-1s",
            "1..5s",
            ".5s",
            "5.s",
            "10d",
            "61m",
            "2h",
            "1e3s",
            "99999999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "`{bad}` should be refused");
        }
    }
}
