//! The duration type of every duration field in the API.
//!
//! On the wire a duration is a Go-style string (`30s`, `15m`, `720h`), exactly as users write
//! it; the schema keeps the pattern and, from the type's minimum, a CEL rule. The value is
//! parsed once, when the object is read, and the type carries its minimum, so a controller
//! never parses a duration or keeps a copy of a default: it asks the field.
use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::duration::{
    DurationError, GO_DURATION_MAX_LENGTH, GO_DURATION_PATTERN, format_go_duration, parse_go_duration,
};

/// A Go duration of at least `MIN_MS` milliseconds.
///
/// Reading an object never fails because of a duration: a watch that could not decode one
/// object would stop for every object of the kind. A value the API server would not admit
/// today (malformed, beyond Go's range, or shorter than the minimum: admitted before the rule
/// existed) is kept with its error; [`GoDuration::check`] reports it (the controllers turn it
/// into `Stalled/InvalidSpec` before acting), and [`GoDuration::get`] reads it as the minimum,
/// the safe side of every bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoDuration<const MIN_MS: u64> {
    text: String,
    parsed: Result<Duration, DurationError>,
}

impl<const MIN_MS: u64> GoDuration<MIN_MS> {
    /// The shortest value the schema admits.
    pub const MIN: Duration = Duration::from_millis(MIN_MS);

    /// A duration from its wire form (`"30s"`).
    pub fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        let parsed = parse_go_duration(&text);
        Self { text, parsed }
    }

    /// The value as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value, never below the minimum (an inadmissible value reads as the minimum; see
    /// [`GoDuration::check`]).
    pub fn get(&self) -> Duration {
        match &self.parsed {
            Ok(d) => (*d).max(Self::MIN),
            Err(_) => Self::MIN,
        }
    }

    /// [`GoDuration::get`] as a `chrono` span (saturated at chrono's maximum, far beyond Go's).
    pub fn time_delta(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::from_std(self.get()).unwrap_or(chrono::TimeDelta::MAX)
    }

    /// The schema's rules, checked again for objects admitted before they existed: the value
    /// parses and is at least the minimum. The error names `field` (e.g. `spec.interval`).
    pub fn check(&self, field: &str) -> Result<Duration, String> {
        let d = self.parsed.clone().map_err(|e| format!("{field}: {e}"))?;
        if d < Self::MIN {
            return Err(format!(
                "{field}: {:?} is shorter than the minimum of {}",
                self.text,
                format_go_duration(Self::MIN)
            ));
        }
        Ok(d)
    }

    /// The CEL rule of the field: at least the minimum. CEL's `duration()` parses with Go's own
    /// parser, so a value beyond Go's range (which the pattern alone lets through) fails it too.
    pub fn rule() -> String {
        format!("duration(self) >= duration('{}')", format_go_duration(Self::MIN))
    }

    /// The message of [`GoDuration::rule`] (the API server prefixes the field path).
    pub fn rule_message() -> String {
        format!("must be at least {}", format_go_duration(Self::MIN))
    }
}

impl<const MIN_MS: u64> fmt::Display for GoDuration<MIN_MS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Compares the value as written (`spec.interval == "30s"`).
impl<const MIN_MS: u64> PartialEq<&str> for GoDuration<MIN_MS> {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

impl<const MIN_MS: u64> From<&str> for GoDuration<MIN_MS> {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

impl<const MIN_MS: u64> Serialize for GoDuration<MIN_MS> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de, const MIN_MS: u64> Deserialize<'de> for GoDuration<MIN_MS> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

impl<const MIN_MS: u64> JsonSchema for GoDuration<MIN_MS> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("GoDurationAtLeast{MIN_MS}ms").into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": GO_DURATION_PATTERN,
            "maxLength": GO_DURATION_MAX_LENGTH,
            "x-kubernetes-validations": [{
                "rule": Self::rule(),
                "message": Self::rule_message(),
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type AtLeastOneSecond = GoDuration<1_000>;

    #[test]
    fn parses_once_and_keeps_the_text() {
        let d = AtLeastOneSecond::new("1h30m");
        assert_eq!(d.get(), Duration::from_secs(5400));
        assert_eq!(d.as_str(), "1h30m");
        assert_eq!(d.check("spec.x"), Ok(Duration::from_secs(5400)));
        assert_eq!(serde_json::to_value(&d).unwrap(), serde_json::json!("1h30m"));
        let back: AtLeastOneSecond = serde_json::from_value(serde_json::json!("1h30m")).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn an_inadmissible_value_is_read_and_reported_not_dropped() {
        for (text, want) in [
            ("500ms", "spec.x: \"500ms\" is shorter than the minimum of 1s"),
            ("ten", "spec.x: invalid duration \"ten\": expected a number at byte 0"),
            ("9999999999h", "spec.x: invalid duration \"9999999999h\": longer than Go's maximum"),
            ("", "spec.x: empty duration"),
        ] {
            let d: AtLeastOneSecond = serde_json::from_value(serde_json::json!(text)).expect("reading never fails");
            let err = d.check("spec.x").unwrap_err();
            assert!(err.starts_with(want), "{text:?}: {err}");
            assert_eq!(d.get(), Duration::from_secs(1), "{text:?} reads as the minimum");
            assert_eq!(d.as_str(), text, "kept as written");
        }
    }

    #[test]
    fn the_minimum_is_inclusive() {
        assert_eq!(AtLeastOneSecond::new("1s").check("f"), Ok(Duration::from_secs(1)));
        assert_eq!(AtLeastOneSecond::new("1000ms").get(), Duration::from_secs(1));
        assert_eq!(GoDuration::<100>::MIN, Duration::from_millis(100));
    }

    #[test]
    fn the_schema_carries_pattern_length_and_the_minimum_rule() {
        let schema = schemars::SchemaGenerator::default().into_root_schema_for::<GoDuration<3_600_000>>();
        let v = serde_json::to_value(&schema).unwrap();
        assert_eq!(v["type"], "string");
        assert_eq!(v["pattern"], GO_DURATION_PATTERN);
        assert_eq!(v["maxLength"], GO_DURATION_MAX_LENGTH, "bounded for the CEL cost estimate");
        assert_eq!(v["x-kubernetes-validations"][0]["rule"], "duration(self) >= duration('1h')");
        assert_eq!(v["x-kubernetes-validations"][0]["message"], "must be at least 1h");
    }
}
