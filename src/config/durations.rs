//! Durations as the config writes them (`"30s"`, `"15m"`, `"1h30m"`): [`HumanDuration`], its
//! strict parser and the compact formatter that chat messages and errors use.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// A duration written as `"30s"`, `"15m"`, `"26h"`, `"7d"` or a sum such as `"1h30m"`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(HumanDuration).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{s}` is not a duration like \"30s\", \"15m\", \"26h\", \"7d\" or \"1h30m\""
            ))
        })
    }
}

/// The units a config duration may use: humantime knows more (`ms`, `min`, `seconds`, `w`,
/// `M`, `y`), but a month or a year has no fixed length and a `5ms` deadline is a typo.
const DURATION_UNITS: [&str; 4] = ["s", "m", "h", "d"];

/// Parses a positive duration with `humantime`, in whole `s`, `m`, `h` and `d`: `"30s"`,
/// `"15m"`, `"26h"`, `"7d"`, and sums of them (`"1h30m"`, `"1h 30m"`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let units_known = s
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|unit| !unit.is_empty())
        .all(|unit| DURATION_UNITS.contains(&unit));
    // humantime reads a bare number as an error already; a sign, a fraction or any character
    // but ASCII letters, digits and spaces (`µs`) is refused here so that the message does not
    // depend on its wording.
    let plain = s.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ');
    if !units_known || !plain {
        return None;
    }
    humantime::parse_duration(s)
        .ok()
        .filter(|d| !d.is_zero() && d.subsec_nanos() == 0)
}

/// Renders a duration compactly (`"15m"`, `"1h30m"`, `"45s"`), in a form [`parse_duration`]
/// reads back. Not `humantime::format_duration`: it writes `"1day 2h"`, and chat messages and the
/// config's own examples say `"26h"`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        return "0s".into();
    }
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 {
        out.push_str(&format!("{sec}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_strictly() {
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("26h"), Some(Duration::from_secs(93600)));
        assert_eq!(parse_duration(" 7d "), Some(Duration::from_secs(7 * 86400)));
        // What humantime adds to one number and one unit: sums, with or without spaces.
        for sum in ["1h30m", "1h 30m", "90m", "1h 1800s"] {
            assert_eq!(
                parse_duration(sum),
                Some(Duration::from_secs(5400)),
                "{sum}"
            );
        }
        for bad in [
            "1µs",
            "1\u{00a0}s",
            "",
            "m",
            "0m",
            "0h 0m",
            "-1m",
            "+1m",
            "1.5h",
            "15",
            "15 m x",
            "1y",
            "1M",
            "1w",
            "5ms",
            "2 seconds",
            "1min",
            "1h30",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        // format_duration's output reads back.
        for secs in [45, 900, 5400, 93600, 7 * 86400 + 1] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse_duration(&format_duration(d)), Some(d), "{secs}");
        }
    }
}
