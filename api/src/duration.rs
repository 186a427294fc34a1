//! Durations as a cluster admin writes them on a command line: `500ms`,
//! `30s`, `1.5m`, `1h`; a bare number is seconds. One parser for every binary.

use std::time::Duration;

/// A duration that may be zero (a delay or a grace period of "none").
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 =
        number.parse().map_err(|_| format!("'{text}' is not a duration: write e.g. 500ms, 30s, 5m, 1h"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown unit '{unit}' in '{text}': use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("'{text}' is out of range"))
}

/// A period something repeats at: zero is refused, since it would spin (a
/// zero resync or GC interval calls the cloud in a tight loop).
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        zero if zero.is_zero() => {
            Err(format!("'{}' is zero: give a positive duration, e.g. 500ms or 30s", text.trim()))
        }
        period => Ok(period),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_an_admin_writes_them() {
        let ok = [
            ("500ms", Duration::from_millis(500)),
            ("90", Duration::from_secs(90)),
            ("2s", Duration::from_secs(2)),
            (" 1.5s ", Duration::from_millis(1500)),
            ("1.5m", Duration::from_secs(90)),
            ("1h", Duration::from_secs(3600)),
            ("0", Duration::ZERO),
            ("0ms", Duration::ZERO),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(want), "{text:?}");
        }
        let bad = [
            ("5 parsecs", "unknown unit"),
            ("3d", "unknown unit"),
            ("soon", "e.g."),
            ("", "e.g."),
            ("1.2.3s", "e.g."),
            ("99999999999999999999999h", "out of range"),
        ];
        for (text, want) in bad {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn an_interval_is_never_zero() {
        assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
        for zero in ["0", "0s", "0.0m"] {
            let err = parse_interval(zero).unwrap_err();
            assert!(err.contains("is zero") && err.contains("positive"), "{zero:?}: {err}");
        }
        assert!(parse_interval("fast").unwrap_err().contains("e.g."));
    }
}
