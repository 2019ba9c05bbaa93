//! Go-style duration strings (`30s`, `15m`, `720h`, `1h30m`, `1.5h`, `300ms`).
//!
//! The custom resources carry durations the way Flux, Argo and `kubectl` users know them. The
//! schema enforces [`GO_DURATION_PATTERN`], so the API server rejects malformed values, and
//! [`parse_go_duration`] accepts exactly the strings that pattern matches (plus Go's overflow
//! limit), so a stored value always parses.
use std::time::Duration;

/// The schema pattern of a duration: one or more `<number><unit>` components, the number a
/// decimal with an optional fraction, the unit one of `ns`, `us`, `µs` (U+00B5), `μs` (U+03BC),
/// `ms`, `s`, `m`, `h`. No sign, no bare `0`, no empty string.
pub const GO_DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|μs|ms|s|m|h))+$";

/// Longest duration string the schema accepts (keeps CEL cost estimates small).
pub const GO_DURATION_MAX_LENGTH: u32 = 64;

/// Go's `time.Duration` is an `int64` of nanoseconds; longer values are rejected like Go does.
const MAX_NANOS: u128 = i64::MAX as u128;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("invalid duration {0:?}: negative durations are not allowed")]
    Negative(String),
    #[error("invalid duration {0:?}: expected a number at byte {1}")]
    ExpectedNumber(String, usize),
    #[error("invalid duration {0:?}: missing unit (one of ns, us, µs, ms, s, m, h)")]
    MissingUnit(String),
    #[error("invalid duration {0:?}: unknown unit {1:?} (one of ns, us, µs, ms, s, m, h)")]
    UnknownUnit(String, String),
    #[error("invalid duration {0:?}: longer than Go's maximum of 2562047h47m16.854775807s")]
    Overflow(String),
}

impl DurationError {
    /// Short label for metrics and Events.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Negative(_) => "negative",
            Self::ExpectedNumber(..) => "expected_number",
            Self::MissingUnit(_) => "missing_unit",
            Self::UnknownUnit(..) => "unknown_unit",
            Self::Overflow(_) => "overflow",
        }
    }
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => NANOS_PER_SEC,
        "m" => 60 * NANOS_PER_SEC,
        "h" => 3_600 * NANOS_PER_SEC,
        _ => return None,
    })
}

/// Parses a Go duration string (`300ms`, `30s`, `1h30m`, `1.5h`, `720h`) into a [`Duration`].
///
/// Accepts exactly what [`GO_DURATION_PATTERN`] matches, up to Go's limit of `i64::MAX`
/// nanoseconds. Fractions finer than a nanosecond are truncated.
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    if input.is_empty() {
        return Err(DurationError::Empty);
    }
    if input.starts_with('-') {
        return Err(DurationError::Negative(input.to_string()));
    }
    let err_number = |at: usize| DurationError::ExpectedNumber(input.to_string(), at);
    let bytes = input.as_bytes();
    let mut pos = 0;
    let mut total: u128 = 0;
    while pos < bytes.len() {
        // Integer part.
        let int_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        if pos == int_start {
            return Err(err_number(pos));
        }
        let int_digits = &input[int_start..pos];
        // Optional fraction: a dot followed by at least one digit.
        let mut frac_digits = "";
        if pos < bytes.len() && bytes[pos] == b'.' {
            pos += 1;
            let frac_start = pos;
            while pos < bytes.len() && bytes[pos].is_ascii_digit() {
                pos += 1;
            }
            if pos == frac_start {
                return Err(err_number(pos));
            }
            frac_digits = &input[frac_start..pos];
        }
        // Unit: everything up to the next digit.
        let unit_start = pos;
        while pos < bytes.len() && !bytes[pos].is_ascii_digit() && bytes[pos] != b'.' {
            pos += 1;
        }
        let unit = &input[unit_start..pos];
        if unit.is_empty() {
            return Err(DurationError::MissingUnit(input.to_string()));
        }
        let scale = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit(input.to_string(), unit.to_string()))?;

        let overflow = || DurationError::Overflow(input.to_string());
        let int_value = parse_digits(int_digits).ok_or_else(overflow)?;
        let mut component = int_value.checked_mul(scale).ok_or_else(overflow)?;
        if !frac_digits.is_empty() {
            // Digits beyond the 25th are worth less than 1e-12 ns even for hours, so they are
            // ignored; that keeps `numerator * scale` inside u128.
            let kept = &frac_digits[..frac_digits.len().min(25)];
            let numerator = parse_digits(kept).ok_or_else(overflow)?;
            let denominator = 10u128.pow(kept.len() as u32);
            let fraction = numerator.checked_mul(scale).ok_or_else(overflow)? / denominator;
            component = component.checked_add(fraction).ok_or_else(overflow)?;
        }
        total = total.checked_add(component).ok_or_else(overflow)?;
        if total > MAX_NANOS {
            return Err(overflow());
        }
    }
    let secs = (total / NANOS_PER_SEC) as u64;
    let nanos = (total % NANOS_PER_SEC) as u32;
    Ok(Duration::new(secs, nanos))
}

/// Decimal digits to a number; `None` when it does not fit (the caller reports overflow).
fn parse_digits(digits: &str) -> Option<u128> {
    let trimmed = digits.trim_start_matches('0');
    if trimmed.len() > 38 {
        return None;
    }
    if trimmed.is_empty() {
        return Some(0);
    }
    trimmed.parse::<u128>().ok()
}

/// Formats a duration compactly in the same syntax: Go's `Duration.String()` without zero
/// components (`1h30m`, `1h`, `2m30s`, `1.5s`, `300ms`, `1.5µs`, `0s`). The result always
/// parses back to the same value with [`parse_go_duration`].
pub fn format_go_duration(d: Duration) -> String {
    let total = d.as_nanos();
    if total == 0 {
        return "0s".to_string();
    }
    if total < NANOS_PER_SEC {
        // Below one second, Go picks the largest unit and prints a fraction of it.
        let (unit, scale) = if total < 1_000 {
            ("ns", 1)
        } else if total < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", decimal(total, scale));
    }
    let hours = total / (3_600 * NANOS_PER_SEC);
    let minutes = (total / (60 * NANOS_PER_SEC)) % 60;
    let sub_minute = total % (60 * NANOS_PER_SEC);
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if sub_minute > 0 {
        out.push_str(&format!("{}s", decimal(sub_minute, NANOS_PER_SEC)));
    }
    out
}

/// `value / scale` as a decimal without trailing zeros (`1500, 1000` → `1.5`).
fn decimal(value: u128, scale: u128) -> String {
    let int = value / scale;
    let frac = value % scale;
    if frac == 0 {
        return int.to_string();
    }
    let width = scale.to_string().len() - 1;
    let frac = format!("{frac:0width$}");
    format!("{int}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        parse_go_duration(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    #[test]
    fn parses_single_units() {
        assert_eq!(ok("1ns"), Duration::from_nanos(1));
        assert_eq!(ok("7us"), Duration::from_micros(7));
        assert_eq!(ok("7µs"), Duration::from_micros(7));
        assert_eq!(ok("7μs"), Duration::from_micros(7));
        assert_eq!(ok("300ms"), Duration::from_millis(300));
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("15m"), Duration::from_secs(900));
        assert_eq!(ok("720h"), Duration::from_secs(720 * 3600));
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("000010s"), Duration::from_secs(10));
    }

    #[test]
    fn parses_compound_and_fractions() {
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("1h30m15s"), Duration::from_secs(5415));
        assert_eq!(ok("2m3s4ms"), Duration::from_millis(123_004));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("0.5ms"), Duration::from_micros(500));
        assert_eq!(ok("1.000000001s"), Duration::new(1, 1));
        // Sub-nanosecond precision is truncated, like Go.
        assert_eq!(ok("1.9ns"), Duration::from_nanos(1));
        assert_eq!(ok("0.333333333333333333333333333333333333333s"), Duration::from_nanos(333_333_333));
        // Units may repeat and come in any order, like Go.
        assert_eq!(ok("1s1s"), Duration::from_secs(2));
        assert_eq!(ok("1s1h"), Duration::from_secs(3601));
    }

    #[test]
    fn go_maximum_is_accepted_and_beyond_is_overflow() {
        assert_eq!(ok("2562047h47m16.854775807s"), Duration::from_nanos(i64::MAX as u64));
        assert_eq!(ok("9223372036854775807ns"), Duration::from_nanos(i64::MAX as u64));
        for s in [
            "9223372036854775808ns",
            "2562048h",
            "2562047h47m16.854775808s",
            "99999999999999999999999999999999999999999h",
        ] {
            assert_eq!(parse_go_duration(s), Err(DurationError::Overflow(s.to_string())), "{s}");
        }
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(parse_go_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_go_duration("-5s"), Err(DurationError::Negative("-5s".into())));
        assert!(matches!(parse_go_duration("+5s"), Err(DurationError::ExpectedNumber(_, 0))));
        assert!(matches!(parse_go_duration("0"), Err(DurationError::MissingUnit(_))));
        assert!(matches!(parse_go_duration("10"), Err(DurationError::MissingUnit(_))));
        assert!(matches!(parse_go_duration("1h30"), Err(DurationError::MissingUnit(_))));
        assert!(matches!(parse_go_duration("10x"), Err(DurationError::UnknownUnit(_, u)) if u == "x"));
        assert!(matches!(parse_go_duration("10sec"), Err(DurationError::UnknownUnit(_, u)) if u == "sec"));
        assert!(matches!(parse_go_duration("1d"), Err(DurationError::UnknownUnit(_, u)) if u == "d"));
        assert!(matches!(parse_go_duration("10S"), Err(DurationError::UnknownUnit(_, _))));
        assert!(matches!(parse_go_duration("10 s"), Err(DurationError::UnknownUnit(_, _))));
        assert!(matches!(parse_go_duration(" 10s"), Err(DurationError::ExpectedNumber(_, 0))));
        assert!(matches!(parse_go_duration("10s "), Err(DurationError::UnknownUnit(_, _))));
        assert!(matches!(parse_go_duration("s"), Err(DurationError::ExpectedNumber(_, 0))));
        assert!(matches!(parse_go_duration(".5s"), Err(DurationError::ExpectedNumber(_, 0))));
        assert!(matches!(parse_go_duration("5.s"), Err(DurationError::ExpectedNumber(_, 2))));
        assert!(matches!(parse_go_duration("1..5s"), Err(DurationError::ExpectedNumber(_, 2))));
        assert!(matches!(parse_go_duration("1.5.5s"), Err(DurationError::MissingUnit(_))));
        assert!(matches!(parse_go_duration("1h-5m"), Err(DurationError::UnknownUnit(_, u)) if u == "h-"));
        assert!(matches!(parse_go_duration("P1D"), Err(DurationError::ExpectedNumber(_, 0))));
    }

    #[test]
    fn error_messages_name_the_input() {
        let e = parse_go_duration("10x").unwrap_err();
        assert!(e.to_string().contains("\"10x\""), "{e}");
        assert_eq!(e.label(), "unknown_unit");
    }

    #[test]
    fn formats_compactly() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ns"),
            (Duration::from_nanos(1500), "1.5µs"),
            (Duration::from_micros(300), "300µs"),
            (Duration::from_millis(300), "300ms"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::new(1, 1), "1.000000001s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_secs(150), "2m30s"),
            (Duration::from_millis(60_500), "1m0.5s"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::from_secs(3601), "1h1s"),
            (Duration::from_secs(720 * 3600), "720h"),
        ];
        for (d, want) in cases {
            assert_eq!(format_go_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn format_round_trips() {
        for nanos in [
            1u64,
            999,
            1_000,
            1_001,
            999_999_999,
            1_000_000_000,
            59_999_999_999,
            3_600_000_000_001,
            86_400_000_000_000,
            i64::MAX as u64,
        ] {
            let d = Duration::from_nanos(nanos);
            assert_eq!(ok(&format_go_duration(d)), d, "{nanos}");
        }
    }

    /// The schema admits exactly what the parser accepts, except for values beyond Go's range,
    /// which the schema's CEL `duration()` rejects (the rule every duration field carries).
    #[test]
    fn pattern_and_parser_agree() {
        let pattern = regex::Regex::new(GO_DURATION_PATTERN).unwrap();
        let numbers = ["", "0", "1", "01", "10", "1.5", ".5", "5.", "1..5", "-1", "+1", "1e3", "9223372036854775808"];
        let units = ["", "ns", "us", "µs", "μs", "ms", "s", "m", "h", "d", "S", "sec", " s", "s "];
        let mut inputs = Vec::new();
        for n in numbers {
            for u in units {
                inputs.push(format!("{n}{u}"));
                for n2 in ["", "30", "0.5"] {
                    for u2 in ["m", "s", ""] {
                        inputs.push(format!("{n}{u}{n2}{u2}"));
                    }
                }
            }
        }
        inputs.extend(["1h30m".into(), "2562047h47m16.854775807s".into(), "2562048h".into(), " 1s".into()]);
        for input in &inputs {
            let parsed = parse_go_duration(input);
            let admitted = pattern.is_match(input);
            match parsed {
                Ok(_) => assert!(admitted, "{input:?} parses but the schema rejects it"),
                // Beyond Go's range: the pattern may admit it, CEL's `duration()` rejects it.
                Err(DurationError::Overflow(_)) => {}
                Err(e) => assert!(!admitted, "{input:?} is admitted but does not parse: {e}"),
            }
        }
        // The one gap the pattern leaves, closed by CEL (see tests/fixtures/invalid).
        assert!(pattern.is_match("2562048h"));
        assert!(matches!(parse_go_duration("2562048h"), Err(DurationError::Overflow(_))));
    }

    /// The pattern is checked by the API server; this keeps it in step with the parser on the
    /// syntax level (the examples here cover each branch of the expression).
    #[test]
    fn pattern_mentions_every_unit() {
        for unit in ["ns", "us", "µs", "μs", "ms", "s", "m", "h"] {
            assert!(GO_DURATION_PATTERN.contains(unit), "{unit}");
            assert!(unit_nanos(unit).is_some(), "{unit}");
        }
        assert!(GO_DURATION_PATTERN.starts_with('^') && GO_DURATION_PATTERN.ends_with('$'));
    }
}
