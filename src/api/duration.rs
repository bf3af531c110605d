//! Human durations as written in Release manifests (`30s`, `5m`, `1h30m`, `30d`).

use std::{borrow::Cow, fmt, str::FromStr};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The pattern the API server enforces for every duration field except budget periods.
///
/// Only Go units are allowed so that CEL's `duration()` can read them: every duration field
/// carries a CEL rule bounding it with `duration(self)`, which also rejects a value too large
/// for Go's durations (about 290 years), so nothing the API server stores overflows
/// [`Duration`]'s parser.
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";

/// The pattern for error-budget periods, which are counted in days or weeks: one whole number of
/// hours, days or weeks (`720h`, `30d`, `4w`).
///
/// CEL's `duration()` knows no days, so a period is not a Go duration; a single part keeps it
/// simple enough for [`PERIOD_BOUNDS_RULE`] to read.
pub const PERIOD_PATTERN: &str = r"^[0-9]{1,4}[hdw]$";

/// CEL rule bounding a budget period (of [`PERIOD_PATTERN`]) to 1h-90d: its number times the
/// hours in its unit.
pub const PERIOD_BOUNDS_RULE: &str = "[int(self.substring(0, size(self) - 1)) * (self.endsWith('w') ? 168 : self.endsWith('d') ? 24 : 1)].all(hours, hours >= 1 && hours <= 2160)";

/// A non-negative span of time, parsed from a string of `<number><unit>` parts.
///
/// Units: `ms`, `s`, `m`, `h`, `d` (24h), `w` (7d). Parts add up: `1h30m` is 90 minutes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(std::time::Duration);

/// Why a duration string could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("duration is empty; write e.g. 30s, 5m or 1h30m")]
    Empty,
    #[error("duration {input:?}: expected a number at {position}; write e.g. 30s, 5m or 1h30m")]
    MissingNumber { input: String, position: usize },
    #[error("duration {input:?}: number without a unit at the end; units are ms, s, m, h, d, w")]
    MissingUnit { input: String },
    #[error("duration {input:?}: unknown unit {unit:?}; units are ms, s, m, h, d, w")]
    UnknownUnit { input: String, unit: String },
    #[error("duration {input:?} is too large")]
    Overflow { input: String },
}

impl Duration {
    /// A duration of whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    /// A duration of whole milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Self(std::time::Duration::from_millis(millis))
    }

    /// The standard-library value.
    pub const fn as_std(&self) -> std::time::Duration {
        self.0
    }

    /// Whole seconds, rounded down.
    pub const fn as_secs(&self) -> u64 {
        self.0.as_secs()
    }

    /// Seconds as a float, for rates and arithmetic.
    pub fn as_secs_f64(&self) -> f64 {
        self.0.as_secs_f64()
    }

    /// The same span as a signed jiff span, for timestamp arithmetic.
    pub fn as_signed(&self) -> k8s_openapi::jiff::SignedDuration {
        k8s_openapi::jiff::SignedDuration::try_from(self.0)
            .unwrap_or(k8s_openapi::jiff::SignedDuration::MAX)
    }
}

impl From<std::time::Duration> for Duration {
    fn from(value: std::time::Duration) -> Self {
        Self(value)
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let text = input.trim();
        if text.is_empty() {
            return Err(DurationError::Empty);
        }
        let overflow = || DurationError::Overflow {
            input: input.to_string(),
        };
        let mut total_millis: u64 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(DurationError::MissingNumber {
                    input: input.to_string(),
                    position: text.len() - rest.len(),
                });
            }
            let number: u64 = rest[..digits].parse().map_err(|_| overflow())?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            if unit_len == 0 {
                return Err(DurationError::MissingUnit {
                    input: input.to_string(),
                });
            }
            let unit = &rest[..unit_len];
            let millis_per_unit: u64 = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "w" => 604_800_000,
                other => {
                    return Err(DurationError::UnknownUnit {
                        input: input.to_string(),
                        unit: other.to_string(),
                    });
                }
            };
            let part = number.checked_mul(millis_per_unit).ok_or_else(overflow)?;
            total_millis = total_millis.checked_add(part).ok_or_else(overflow)?;
            rest = &rest[unit_len..];
        }
        Ok(Self::from_millis(total_millis))
    }
}

impl fmt::Display for Duration {
    /// Writes the shortest Go-compatible form: `90s` is `1m30s`, `0` is `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut millis = self.0.as_millis();
        if millis == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
            if millis >= size {
                write!(f, "{}{unit}", millis / size)?;
                millis %= size;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": 32,
        })
    }
}

/// Schema for a budget period: whole hours, days or weeks ([`PERIOD_PATTERN`]).
pub fn period_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": PERIOD_PATTERN,
        "maxLength": 5,
        "description": "Length of the rolling error-budget period, 1h to 90d: a whole number of hours, days or weeks, e.g. 30d or 4w.",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_compound_units() {
        let cases = [
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("250ms", 250),
            ("30d", 2_592_000_000),
            ("2w", 1_209_600_000),
            ("1m30s500ms", 90_500),
        ];
        for (text, millis) in cases {
            assert_eq!(
                text.parse::<Duration>(),
                Ok(Duration::from_millis(millis)),
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_malformed_input_with_a_reason() {
        assert_eq!("".parse::<Duration>(), Err(DurationError::Empty));
        assert!(matches!(
            "5".parse::<Duration>(),
            Err(DurationError::MissingUnit { .. })
        ));
        assert!(matches!(
            "m5".parse::<Duration>(),
            Err(DurationError::MissingNumber { position: 0, .. })
        ));
        assert!(matches!(
            "5y".parse::<Duration>(),
            Err(DurationError::UnknownUnit { unit, .. }) if unit == "y"
        ));
        assert!(matches!(
            "-5s".parse::<Duration>(),
            Err(DurationError::MissingNumber { .. })
        ));
        assert!(matches!(
            "99999999999999999999s".parse::<Duration>(),
            Err(DurationError::Overflow { .. })
        ));
        let message = "5y".parse::<Duration>().unwrap_err().to_string();
        assert!(message.contains("unknown unit \"y\""), "{message}");
    }

    #[test]
    fn displays_in_canonical_go_form() {
        assert_eq!(Duration::from_secs(90).to_string(), "1m30s");
        assert_eq!(Duration::from_secs(0).to_string(), "0s");
        assert_eq!(Duration::from_secs(86_400).to_string(), "24h");
        assert_eq!(Duration::from_millis(1_500).to_string(), "1s500ms");
    }

    #[test]
    fn round_trips_through_serde() {
        let parsed: Duration = serde_json::from_str("\"1h30m\"").unwrap();
        assert_eq!(parsed, Duration::from_secs(5_400));
        assert_eq!(serde_json::to_string(&parsed).unwrap(), "\"1h30m\"");
        let error = serde_json::from_str::<Duration>("\"soon\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("soon"), "{error}");
    }

    #[test]
    fn display_output_matches_the_schema_pattern() {
        for secs in [1, 59, 60, 61, 3_599, 3_600, 86_400, 100_000] {
            let text = Duration::from_secs(secs).to_string();
            assert!(text.parse::<Duration>().is_ok());
            assert!(!text.contains('d'), "{text} must stay CEL-compatible");
        }
    }
}
