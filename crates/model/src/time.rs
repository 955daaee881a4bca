//! Time without a clock: a [`Timestamp`] is whole seconds since the Unix epoch, always passed
//! in by the caller, so every decision that depends on time is a pure function of its inputs.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Whole seconds since the Unix epoch (UTC). Seconds are the resolution of Kubernetes object
/// times (`metav1.Time` serialises without fractions), so nothing finer is kept.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The timestamp `secs` seconds after the epoch.
    pub const fn from_secs(secs: i64) -> Self {
        Self(secs)
    }

    /// Seconds since the epoch.
    pub const fn as_secs(self) -> i64 {
        self.0
    }

    /// How long after `earlier` this is; zero when `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_secs(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, rhs: Duration) -> Timestamp {
        let secs = i64::try_from(rhs.as_secs()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(secs))
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, rhs: Duration) -> Timestamp {
        let secs = i64::try_from(rhs.as_secs()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_sub(secs))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}", self.0)
    }
}

/// The earlier of two optional times, where `None` means "not known" rather than "earliest".
pub fn min_time(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The later of two optional times, where `None` means "not known".
pub fn max_time(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The longest duration a profile holds: about a century. Longer ones, which the CRD
/// admits, read as this.
pub const MAX_DURATION_SECS: u64 = 100 * 365 * 24 * 3600;

/// Parses the duration strings users write in profiles: one or more `<integer><unit>` groups
/// with units `h`, `m` and `s`, e.g. `30m`, `24h`, `1h30m`. This is the subset of Go's
/// `time.ParseDuration` syntax that whole seconds can hold, so the CEL `duration()` function
/// the API server uses and this parser accept the same strings.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let invalid = || Error::InvalidDuration(text.to_owned());
    if text.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    let mut digits_start = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_digit() {
            i += 1;
            continue;
        }
        if i == digits_start {
            return Err(invalid());
        }
        // The CRD admits any number of digits: more than a machine word holds reads as the
        // longest duration rather than failing every read of the profile.
        let value: u64 = text[digits_start..i].parse().unwrap_or(u64::MAX);
        let unit = match b {
            b'h' => 3600,
            b'm' => 60,
            b's' => 1,
            _ => return Err(invalid()),
        };
        total = value
            .saturating_mul(unit)
            .saturating_add(total)
            .min(MAX_DURATION_SECS);
        i += 1;
        digits_start = i;
    }
    if digits_start != bytes.len() {
        // Trailing digits without a unit ("90") are refused, as Go refuses them.
        return Err(invalid());
    }
    Ok(Duration::from_secs(total))
}

/// Formats a duration in the syntax [`parse_duration`] reads, e.g. `1h30m`, `45s`, `0s`.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let h = secs / 3600;
    secs %= 3600;
    let m = secs / 60;
    secs %= 60;
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if secs > 0 {
        out.push_str(&format!("{secs}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(
            parse_duration("1h30m15s").unwrap(),
            Duration::from_secs(5415)
        );
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn refuses_what_the_schema_refuses() {
        for bad in ["", "90", "1d", "h", "1.5h", "-1h", "1h 30m", "m30"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn what_the_schema_admits_beyond_a_machine_word_reads_as_the_longest_duration() {
        let longest = Duration::from_secs(MAX_DURATION_SECS);
        for huge in [
            "99999999999999999999h",
            "18446744073709551615h",
            "1000000000h1s",
        ] {
            assert_eq!(parse_duration(huge).unwrap(), longest, "{huge}");
        }
        assert!(parse_duration("876000h").unwrap() <= longest);
    }

    #[test]
    fn format_round_trips() {
        for s in ["1h30m", "45s", "0s", "24h", "1h1s"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }

    #[test]
    fn optional_min_max_treat_none_as_unknown() {
        let a = Some(Timestamp(5));
        let b = Some(Timestamp(9));
        assert_eq!(min_time(a, b), a);
        assert_eq!(max_time(a, b), b);
        assert_eq!(min_time(None, b), b);
        assert_eq!(max_time(a, None), a);
        assert_eq!(Timestamp(10).since(Timestamp(20)), Duration::ZERO);
    }
}
