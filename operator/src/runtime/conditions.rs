//! kstatus-style conditions: `Ready` always present, `Reconciling` and `Stalled` only while
//! true, `lastTransitionTime` moved only when the status flips, so that recomputing the same
//! conditions never produces a write.
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// One desired condition, before timestamps are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Desired {
    pub fn new(type_: &'static str, status: bool, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self { type_, status, reason: reason.into(), message: message.into() }
    }
}

/// Condition types that must be absent rather than False (kstatus abnormal-true conditions).
const ONLY_WHEN_TRUE: [&str; 2] = [RECONCILING, STALLED];
const RECONCILING: &str = "Reconciling";
const STALLED: &str = "Stalled";

fn status_str(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// Merges `desired` into `existing`: keeps the transition time of conditions whose status did
/// not change, drops `Reconciling`/`Stalled` when false, and keeps conditions of types not
/// mentioned in `desired` untouched. The result is sorted by type for stable output.
///
/// `Reconciling` and `Stalled` are never both present: kstatus would say InProgress where
/// Argo CD says Degraded. Stalled wins (the operator has stopped trying; a human must act),
/// so a True `Stalled` drops `Reconciling`, desired or kept.
pub fn merge(
    existing: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Vec<Condition> {
    let stalled = match desired.iter().find(|d| d.type_ == STALLED) {
        Some(d) => d.status,
        None => is_true(existing, STALLED),
    };
    let mut out: Vec<Condition> = existing
        .iter()
        .filter(|c| !desired.iter().any(|d| d.type_ == c.type_))
        .filter(|c| !(stalled && c.type_ == RECONCILING))
        .cloned()
        .collect();
    for d in desired {
        if !d.status && ONLY_WHEN_TRUE.contains(&d.type_) {
            continue;
        }
        if stalled && d.type_ == RECONCILING {
            continue;
        }
        let previous = existing.iter().find(|c| c.type_ == d.type_);
        let status = status_str(d.status);
        let last_transition_time = match previous {
            Some(p) if p.status == status => p.last_transition_time.clone(),
            _ => to_time(now),
        };
        out.push(Condition {
            type_: d.type_.to_string(),
            status: status.to_string(),
            reason: d.reason.clone(),
            message: d.message.clone(),
            observed_generation: generation,
            last_transition_time,
        });
    }
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// chrono → the API's timestamp type.
pub fn to_time(t: DateTime<Utc>) -> Time {
    Time(
        k8s_openapi::jiff::Timestamp::new(t.timestamp(), t.timestamp_subsec_nanos() as i32).expect("a valid timestamp"),
    )
}

/// The API's timestamp type → chrono.
pub fn from_time(t: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32).unwrap_or_default()
}

/// Whether the condition of `type_` is present and True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn new_condition_gets_now() {
        let out = merge(&[], &[Desired::new("Ready", true, "Ok", "fine")], Some(3), t(0));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].status, "True");
        assert_eq!(out[0].observed_generation, Some(3));
        assert_eq!(from_time(&out[0].last_transition_time), t(0));
    }

    #[test]
    fn unchanged_status_keeps_transition_time_and_is_equal() {
        let first = merge(&[], &[Desired::new("Ready", true, "Ok", "fine")], Some(1), t(0));
        let second = merge(&first, &[Desired::new("Ready", true, "Ok", "fine")], Some(1), t(100));
        assert_eq!(first, second);
    }

    #[test]
    fn flipped_status_moves_transition_time() {
        let first = merge(&[], &[Desired::new("Ready", true, "Ok", "fine")], Some(1), t(0));
        let second = merge(&first, &[Desired::new("Ready", false, "Down", "broken")], Some(1), t(100));
        assert_eq!(from_time(&second[0].last_transition_time), t(100));
        assert_eq!(second[0].reason, "Down");
    }

    #[test]
    fn reconciling_and_stalled_only_when_true() {
        let d = [
            Desired::new("Ready", false, "Stuck", "x"),
            Desired::new("Stalled", true, "Stuck", "x"),
            Desired::new("Reconciling", false, "Done", "x"),
        ];
        let out = merge(&[], &d, None, t(0));
        let types: Vec<_> = out.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "Stalled"]);
        let cleared = merge(&out, &[Desired::new("Stalled", false, "Ok", "")], None, t(5));
        assert!(find(&cleared, "Stalled").is_none());
        assert!(find(&cleared, "Ready").is_some(), "untouched types are kept");
        assert!(!is_true(&cleared, "Ready"));
    }

    /// Every combination of desired Reconciling/Stalled (true, false, absent) over every
    /// combination already present: never both in the result, Stalled wins.
    #[test]
    fn reconciling_and_stalled_never_both() {
        let existing_sets: Vec<Vec<Condition>> = [(false, false), (true, false), (false, true), (true, true)]
            .iter()
            .map(|&(r, st)| {
                let mut c = vec![Desired::new("Ready", false, "x", "x")];
                if r {
                    c.push(Desired::new(RECONCILING, true, "r", "r"));
                }
                if st {
                    c.push(Desired::new(STALLED, true, "s", "s"));
                }
                // Built field by field: `merge` itself would already refuse both.
                c.iter()
                    .map(|d| Condition {
                        type_: d.type_.into(),
                        status: status_str(d.status).into(),
                        reason: d.reason.clone(),
                        message: d.message.clone(),
                        observed_generation: None,
                        last_transition_time: to_time(t(0)),
                    })
                    .collect()
            })
            .collect();
        let options = [None, Some(false), Some(true)];
        for existing in &existing_sets {
            for r in options {
                for st in options {
                    let mut desired = vec![Desired::new("Ready", false, "x", "x")];
                    desired.extend(r.map(|v| Desired::new(RECONCILING, v, "r", "r")));
                    desired.extend(st.map(|v| Desired::new(STALLED, v, "s", "s")));
                    let out = merge(existing, &desired, None, t(1));
                    let both = is_true(&out, RECONCILING) && is_true(&out, STALLED);
                    assert!(!both, "existing {existing:?}, desired {desired:?} -> {out:?}");
                    if st == Some(true) {
                        assert!(is_true(&out, STALLED), "Stalled wins");
                    }
                    if r == Some(true) && st != Some(true) && !(st.is_none() && is_true(existing, STALLED)) {
                        assert!(is_true(&out, RECONCILING), "Reconciling shows when not stalled");
                    }
                }
            }
        }
    }
}
