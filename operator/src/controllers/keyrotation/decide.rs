//! The KeyRotation controller's decisions, pure: when a rotation is due, whether the key
//! Secret still holds what status recorded (or is ahead of it after a crash, or was changed
//! behind the operator's back), and what to do next. No key material goes in or out: only
//! key IDs.
use chrono::{DateTime, Utc};

use crate::api::{KeyRotationSpec, KeyRotationStatus, RotationCadence, fires_at_most_hourly};
use crate::schedule::CronSchedule;

/// When the next rotation is due. `last` is the last rotation (or, before the first one,
/// the time the KeyRotation was created). Invalid cadence: an error naming the field.
pub fn next_rotation(spec: &KeyRotationSpec, last: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    match spec.cadence() {
        RotationCadence::Cron { schedule, .. } if !fires_at_most_hourly(schedule) => Err(format!(
            "spec.schedule: {schedule:?} fires more than once an hour; keys rotate at most hourly (a single minute, \
             e.g. \"0 3 1 * *\")"
        )),
        RotationCadence::Cron { schedule, time_zone } => CronSchedule::parse(schedule, time_zone)
            .map_err(|e| format!("spec.schedule: {e}"))?
            .next_after(last)
            .ok_or_else(|| "spec.schedule never fires".to_string()),
        RotationCadence::Interval(i) => {
            let d = i.check("spec.interval")?;
            Ok(last + chrono::Duration::from_std(d).map_err(|_| "spec.interval is too long".to_string())?)
        }
    }
}

/// Why a rotation should happen now, if it should.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// The Secret has no key yet.
    Initial,
    /// The `rotate-now` annotation has a value not handled yet.
    Requested(String),
    Scheduled,
    NotYet(DateTime<Utc>),
}

pub fn due(
    spec: &KeyRotationSpec,
    status: Option<&KeyRotationStatus>,
    secret_has_key: bool,
    rotate_now: Option<&str>,
    anchor: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Due, String> {
    let next = next_rotation(spec, status.and_then(|s| s.last_rotation_time).unwrap_or(anchor))?;
    if !secret_has_key {
        return Ok(Due::Initial);
    }
    if let Some(v) = rotate_now
        && status.and_then(|s| s.handled_rotate_now.as_deref()) != Some(v)
    {
        return Ok(Due::Requested(v.to_string()));
    }
    if now >= next { Ok(Due::Scheduled) } else { Ok(Due::NotYet(next)) }
}

/// What the operator records on the Secret with every write that completes a rotation: what
/// status is about to say, so that a crash (or a failed status write) between the two
/// writes is recovered from the Secret without rotating again.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecretRecord {
    pub revision: i64,
    pub handled_rotate_now: Option<String>,
    pub rotated_at: Option<DateTime<Utc>>,
}

impl SecretRecord {
    /// The record matching `status`.
    pub fn of(status: &KeyRotationStatus) -> Self {
        Self {
            revision: status.revision,
            handled_rotate_now: status.handled_rotate_now.clone(),
            rotated_at: status.last_rotation_time,
        }
    }
}

/// The key Secret as the decisions see it: IDs (derived from the key material) and the
/// record, never a key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecretView {
    /// ID of the current key; None when the Secret or its key field is absent.
    pub key_id: Option<String>,
    /// ID of the key kept as `previous.*`.
    pub previous_key_id: Option<String>,
    /// ID of a key staged by a rotation not finished yet (`pending.*`).
    pub pending_id: Option<String>,
    /// The record annotations (revision 0 when absent).
    pub record: SecretRecord,
}

/// The key Secret does not hold what status recorded, and the operator did not do it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tamper {
    /// The key status names is gone (the Secret or its key field was deleted).
    Missing { lost: String },
    /// Another key than the one status names (and than a staged one) is in the Secret.
    Replaced { expected: String, found: String },
}

impl Tamper {
    /// Condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Tamper::Missing { .. } => "KeyMissing",
            Tamper::Replaced { .. } => "KeyReplaced",
        }
    }

    /// What happened and what to do, for the Stalled and Ready conditions (IDs only).
    pub fn message(&self, rotation: &str, secret: &str, token: &str) -> String {
        let what = match self {
            Tamper::Missing { lost } => format!("the key Secret {secret:?} no longer holds key {lost}"),
            Tamper::Replaced { expected, found } => format!(
                "the key in Secret {secret:?} was replaced behind the operator's back: it holds key {found}, \
                 the operator wrote key {expected}"
            ),
        };
        let accept = match self {
            Tamper::Missing { .. } => "to generate a new key instead (one the ColonyOS server does not know)",
            Tamper::Replaced { .. } => "to adopt the key now in the Secret as current",
        };
        format!(
            "{what}; nothing is rotated until this is resolved. Restore the Secret from a backup, or {accept} run \
             `kubectl annotate keyrotation {rotation} {}={token} --overwrite`",
            crate::api::ACCEPT_KEY_CHANGE_ANNOTATION
        )
    }
}

/// The value of the accept-key-change annotation that acknowledges a change of the key
/// `status` records: its ID, so an old acknowledgement never accepts a later change.
pub fn accept_token(status: &KeyRotationStatus) -> String {
    status.current_key_id.clone().unwrap_or_else(|| format!("revision-{}", status.revision))
}

/// Compares the Secret with status. Returns the status to go on from (adopted from the
/// Secret's record when the Secret is ahead, or from the Secret's key when a change was
/// accepted), or the tampering found.
pub fn check_secret(
    status: &KeyRotationStatus,
    secret: &SecretView,
    accept: Option<&str>,
    now: DateTime<Utc>,
) -> Result<KeyRotationStatus, Tamper> {
    let mut status = status.clone();
    // The Secret was written and status was not: the Secret is the truth.
    if secret.record.revision > status.revision {
        status.revision = secret.record.revision;
        status.current_key_id = secret.key_id.clone();
        status.previous_key_id = secret.previous_key_id.clone();
        if secret.record.handled_rotate_now.is_some() {
            status.handled_rotate_now = secret.record.handled_rotate_now.clone();
        }
        status.last_rotation_time = Some(secret.record.rotated_at.unwrap_or(now));
        return Ok(status);
    }
    // Nothing rotated yet: whatever is in the Secret (or nothing) is where we start.
    if status.revision == 0 {
        return Ok(status);
    }
    let accepted = accept == Some(accept_token(&status).as_str());
    match (&secret.key_id, &status.current_key_id) {
        (None, _) if accepted => {
            // A fresh key will be generated; what was lost is not "previous" any more.
            status.previous_key_id = status.current_key_id.take();
            Ok(status)
        }
        (None, lost) => Err(Tamper::Missing { lost: lost.clone().unwrap_or_else(|| accept_token(&status)) }),
        (Some(found), Some(expected)) if found != expected && secret.pending_id.as_ref() != Some(found) => {
            if accepted {
                status.previous_key_id = status.current_key_id.replace(found.clone());
                Ok(status)
            } else {
                Err(Tamper::Replaced { expected: expected.clone(), found: found.clone() })
            }
        }
        _ => Ok(status),
    }
}

/// Why a due rotation does not happen now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    Suspended,
    WaitingForWindow,
}

/// What the reconcile does with the (checked) state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing due before this time.
    Wait(DateTime<Utc>),
    /// A rotation is due but held.
    Held(Hold),
    /// Rotate now. `finish_staged`: a staged key is finished rather than a new one
    /// generated. `handles`: the `rotate-now` value this rotation answers, if any.
    Rotate { due: Due, finish_staged: bool, handles: Option<String> },
}

/// The next step. A staged key is always finished, whatever happened since it was staged
/// (window closed, suspended, request withdrawn, schedule not due): leaving it would leave
/// the ColonyOS server and the Secret disagreeing.
pub fn next_step(
    spec: &KeyRotationSpec,
    status: &KeyRotationStatus,
    secret: &SecretView,
    rotate_now: Option<&str>,
    window_open: bool,
    anchor: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Step, String> {
    let due = due(spec, Some(status), secret.key_id.is_some(), rotate_now, anchor, now)?;
    let handles = rotate_now.filter(|v| status.handled_rotate_now.as_deref() != Some(*v)).map(str::to_string);
    if secret.pending_id.is_some() && secret.key_id.is_some() {
        return Ok(Step::Rotate { due, finish_staged: true, handles });
    }
    match due {
        Due::NotYet(next) => Ok(Step::Wait(next)),
        _ if spec.suspend => Ok(Step::Held(Hold::Suspended)),
        Due::Initial => Ok(Step::Rotate { due: Due::Initial, finish_staged: false, handles }),
        _ if !window_open => Ok(Step::Held(Hold::WaitingForWindow)),
        due => Ok(Step::Rotate { due, finish_staged: false, handles }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, d, h, 0, 0).unwrap()
    }

    fn monthly() -> KeyRotationSpec {
        KeyRotationSpec { schedule: Some("0 3 1 * *".into()), secret_name: "k".into(), ..Default::default() }
    }

    #[test]
    fn initial_key_is_generated_at_once() {
        assert_eq!(due(&monthly(), None, false, None, at(27, 0), at(27, 0)), Ok(Due::Initial));
    }

    #[test]
    fn monthly_rotation_waits_for_the_first_of_the_month() {
        let spec = monthly();
        let next = Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 0).unwrap();
        assert_eq!(due(&spec, None, true, None, at(27, 0), at(27, 0)), Ok(Due::NotYet(next)));
        assert_eq!(due(&spec, None, true, None, at(27, 0), next), Ok(Due::Scheduled));
        let status = KeyRotationStatus { last_rotation_time: Some(next), ..Default::default() };
        let after = Utc.with_ymd_and_hms(2027, 1, 1, 3, 0, 0).unwrap();
        assert_eq!(due(&spec, Some(&status), true, None, at(27, 0), next), Ok(Due::NotYet(after)));
    }

    /// An interval admitted before the schema's minimum existed stalls instead of rotating in
    /// a loop (`interval: 0s` once rotated a key 388 times in 12 seconds).
    #[test]
    fn an_interval_below_the_minimum_is_invalid_not_due() {
        let spec = KeyRotationSpec {
            schedule: None,
            interval: Some("0s".into()),
            secret_name: "k".into(),
            ..Default::default()
        };
        let status = KeyRotationStatus { last_rotation_time: Some(at(1, 0)), ..Default::default() };
        let err = due(&spec, Some(&status), true, None, at(1, 0), at(1, 0)).unwrap_err();
        assert_eq!(err, "spec.interval: \"0s\" is shorter than the minimum of 1h");
        let err = due(&spec, None, false, None, at(1, 0), at(1, 0)).unwrap_err();
        assert!(err.contains("minimum of 1h"), "not even the first key: {err}");
        let hourly = KeyRotationSpec { interval: Some("1h".into()), ..spec };
        assert_eq!(due(&hourly, Some(&status), true, None, at(1, 0), at(1, 0)), Ok(Due::NotYet(at(1, 1))));
    }

    /// A schedule admitted before the schema's hourly rule existed stalls instead of rotating
    /// every few minutes; an hourly one is the shortest that runs.
    #[test]
    fn a_schedule_firing_more_than_hourly_is_invalid_not_due() {
        let status = KeyRotationStatus { last_rotation_time: Some(at(1, 0)), ..Default::default() };
        for storm in ["* * * * *", "*/5 * * * *", "0,30 * * * *", "0-1 3 * * *", "*/59 * 1 * *"] {
            let spec = KeyRotationSpec { schedule: Some(storm.into()), ..monthly() };
            let err = due(&spec, Some(&status), true, None, at(1, 0), at(1, 0)).unwrap_err();
            assert_eq!(
                err,
                format!(
                    "spec.schedule: {storm:?} fires more than once an hour; keys rotate at most hourly (a single \
                     minute, e.g. \"0 3 1 * *\")"
                )
            );
            let err = due(&spec, None, false, None, at(1, 0), at(1, 0)).unwrap_err();
            assert!(err.contains("more than once an hour"), "not even the first key: {err}");
        }
        let hourly = KeyRotationSpec { schedule: Some("0 * * * *".into()), ..monthly() };
        assert_eq!(due(&hourly, Some(&status), true, None, at(1, 0), at(1, 0)), Ok(Due::NotYet(at(1, 1))));
    }

    #[test]
    fn interval_counts_from_the_last_rotation() {
        let spec = KeyRotationSpec {
            schedule: None,
            interval: Some("720h".into()),
            secret_name: "k".into(),
            ..Default::default()
        };
        let status = KeyRotationStatus { last_rotation_time: Some(at(1, 0)), ..Default::default() };
        assert_eq!(
            due(&spec, Some(&status), true, None, at(1, 0), at(30, 23)),
            Ok(Due::NotYet(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()))
        );
        assert_eq!(
            due(&spec, Some(&status), true, None, at(1, 0), Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()),
            Ok(Due::Scheduled)
        );
    }

    #[test]
    fn rotate_now_annotation_is_handled_once() {
        let spec = monthly();
        assert_eq!(due(&spec, None, true, Some("a"), at(27, 0), at(27, 0)), Ok(Due::Requested("a".into())));
        let status = KeyRotationStatus { handled_rotate_now: Some("a".into()), ..Default::default() };
        assert!(matches!(due(&spec, Some(&status), true, Some("a"), at(27, 0), at(27, 0)), Ok(Due::NotYet(_))));
        assert_eq!(due(&spec, Some(&status), true, Some("b"), at(27, 0), at(27, 0)), Ok(Due::Requested("b".into())));
    }

    #[test]
    fn bad_cadence_names_the_field() {
        let spec =
            KeyRotationSpec { schedule: Some("0 99 * * *".into()), secret_name: "k".into(), ..Default::default() };
        assert!(due(&spec, None, true, None, at(1, 0), at(1, 0)).unwrap_err().contains("spec.schedule"));
    }

    fn rotated(revision: i64, id: &str) -> KeyRotationStatus {
        KeyRotationStatus {
            revision,
            current_key_id: Some(id.into()),
            previous_key_id: Some("older".into()),
            handled_rotate_now: Some("r1".into()),
            last_rotation_time: Some(at(1, 3)),
            ..Default::default()
        }
    }

    fn holding(id: &str, revision: i64) -> SecretView {
        SecretView {
            key_id: Some(id.into()),
            record: SecretRecord { revision, ..Default::default() },
            ..Default::default()
        }
    }

    #[test]
    fn a_secret_matching_status_goes_on_unchanged() {
        let status = rotated(3, "a");
        assert_eq!(check_secret(&status, &holding("a", 3), None, at(2, 0)), Ok(status.clone()));
        // An older record on the right key (someone re-applied annotations) is not tampering.
        assert_eq!(check_secret(&status, &holding("a", 1), None, at(2, 0)), Ok(status));
    }

    #[test]
    fn before_the_first_rotation_anything_goes() {
        let status = KeyRotationStatus::default();
        assert_eq!(check_secret(&status, &SecretView::default(), None, at(2, 0)), Ok(status.clone()));
        assert_eq!(check_secret(&status, &holding("user-provided", 0), None, at(2, 0)), Ok(status));
    }

    #[test]
    fn a_secret_ahead_of_status_is_adopted_with_its_record() {
        let status = rotated(3, "a");
        let secret = SecretView {
            key_id: Some("b".into()),
            previous_key_id: Some("a".into()),
            pending_id: None,
            record: SecretRecord { revision: 4, handled_rotate_now: Some("r2".into()), rotated_at: Some(at(5, 0)) },
        };
        let adopted = check_secret(&status, &secret, None, at(6, 0)).unwrap();
        assert_eq!(adopted.revision, 4);
        assert_eq!(adopted.current_key_id.as_deref(), Some("b"));
        assert_eq!(adopted.previous_key_id.as_deref(), Some("a"));
        assert_eq!(adopted.handled_rotate_now.as_deref(), Some("r2"), "the request is not rotated for twice");
        assert_eq!(adopted.last_rotation_time, Some(at(5, 0)), "the rotation's own time, not the recovery's");
        // A record written by an older operator (revision only): nothing forgotten, time is now.
        let old = SecretView { record: SecretRecord { revision: 4, ..Default::default() }, ..secret };
        let adopted = check_secret(&status, &old, None, at(6, 0)).unwrap();
        assert_eq!(adopted.handled_rotate_now.as_deref(), Some("r1"));
        assert_eq!(adopted.last_rotation_time, Some(at(6, 0)));
        // A re-created KeyRotation adopts the Secret it finds.
        let fresh = check_secret(&KeyRotationStatus::default(), &holding("b", 4), None, at(6, 0)).unwrap();
        assert_eq!((fresh.revision, fresh.current_key_id.as_deref()), (4, Some("b")));
    }

    #[test]
    fn a_missing_key_stalls_until_accepted() {
        let status = rotated(3, "a");
        let gone = SecretView::default();
        assert_eq!(check_secret(&status, &gone, None, at(2, 0)), Err(Tamper::Missing { lost: "a".into() }));
        let no_key_field = SecretView { record: SecretRecord { revision: 3, ..Default::default() }, ..gone.clone() };
        assert_eq!(check_secret(&status, &no_key_field, None, at(2, 0)), Err(Tamper::Missing { lost: "a".into() }));
        assert!(check_secret(&status, &gone, Some("b"), at(2, 0)).is_err(), "only the lost key's ID accepts");
        let accepted = check_secret(&status, &gone, Some("a"), at(2, 0)).unwrap();
        assert_eq!(accepted.current_key_id, None);
        assert_eq!(accepted.previous_key_id.as_deref(), Some("a"));
        assert_eq!(accepted.revision, 3);
        // Status without an ID (written by an old version): the token is the revision.
        let anonymous = KeyRotationStatus { current_key_id: None, ..status };
        assert_eq!(check_secret(&anonymous, &gone, None, at(2, 0)), Err(Tamper::Missing { lost: "revision-3".into() }));
        assert!(check_secret(&anonymous, &gone, Some("revision-3"), at(2, 0)).is_ok());
    }

    #[test]
    fn a_replaced_key_stalls_until_accepted() {
        let status = rotated(3, "a");
        let stale = SecretView {
            key_id: Some("older".into()),
            record: SecretRecord { revision: 2, ..Default::default() },
            ..Default::default()
        };
        let tamper = Tamper::Replaced { expected: "a".into(), found: "older".into() };
        assert_eq!(check_secret(&status, &stale, None, at(2, 0)), Err(tamper.clone()));
        assert_eq!(check_secret(&status, &stale, Some("older"), at(2, 0)), Err(tamper), "the token is the old ID");
        let accepted = check_secret(&status, &stale, Some("a"), at(2, 0)).unwrap();
        assert_eq!(accepted.current_key_id.as_deref(), Some("older"));
        assert_eq!(accepted.previous_key_id.as_deref(), Some("a"));
        // Once accepted, the lingering annotation names an ID that is no longer current.
        assert_eq!(check_secret(&accepted, &stale, Some("a"), at(2, 0)), Ok(accepted.clone()));
        assert!(check_secret(&accepted, &holding("third", 3), Some("a"), at(2, 0)).is_err());
    }

    #[test]
    fn a_staged_key_found_current_is_not_tampering() {
        let status = rotated(3, "a");
        let secret = SecretView { pending_id: Some("b".into()), ..holding("b", 3) };
        assert_eq!(check_secret(&status, &secret, None, at(2, 0)), Ok(status));
    }

    #[test]
    fn tamper_messages_say_what_to_do_and_carry_ids_only() {
        let m = Tamper::Missing { lost: "a1".into() }.message("bee-key", "bee-secret", "a1");
        assert!(m.contains("\"bee-secret\"") && m.contains("a1") && m.contains("backup"), "{m}");
        assert!(m.contains("kubectl annotate keyrotation bee-key colony.zyeute.io/accept-key-change=a1"), "{m}");
        let r = Tamper::Replaced { expected: "a1".into(), found: "b2".into() };
        assert_eq!(r.reason(), "KeyReplaced");
        assert!(r.message("kr", "s", "a1").contains("b2"));
        assert_eq!(Tamper::Missing { lost: "x".into() }.reason(), "KeyMissing");
    }

    fn step(
        spec: &KeyRotationSpec,
        status: &KeyRotationStatus,
        secret: &SecretView,
        rotate_now: Option<&str>,
        window_open: bool,
    ) -> Step {
        next_step(spec, status, secret, rotate_now, window_open, at(1, 0), at(20, 0)).unwrap()
    }

    #[test]
    fn a_staged_key_is_always_finished() {
        let status = rotated(3, "a");
        let staged = SecretView { pending_id: Some("b".into()), ..holding("a", 3) };
        let next = Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 0).unwrap();
        assert_eq!(step(&monthly(), &status, &holding("a", 3), None, true), Step::Wait(next), "not due");
        for (spec, rotate_now, window_open) in [
            (monthly(), None, true),       // schedule not due, request withdrawn
            (monthly(), Some("r1"), true), // request already handled
            (KeyRotationSpec { suspend: true, ..monthly() }, None, true), // suspended since
            (monthly(), None, false),      // the window closed
            (KeyRotationSpec { suspend: true, ..monthly() }, Some("r9"), false), // all at once
        ] {
            match step(&spec, &status, &staged, rotate_now, window_open) {
                Step::Rotate { finish_staged: true, .. } => {}
                other => panic!("{other:?} for suspend={} rotate_now={rotate_now:?}", spec.suspend),
            }
        }
        // The request pending when the key was staged is answered by finishing it.
        assert_eq!(
            step(&monthly(), &status, &staged, Some("r2"), false),
            Step::Rotate { due: Due::Requested("r2".into()), finish_staged: true, handles: Some("r2".into()) }
        );
    }

    #[test]
    fn due_rotations_respect_suspend_and_the_window() {
        let status = rotated(3, "a");
        let secret = holding("a", 3);
        let suspended = KeyRotationSpec { suspend: true, ..monthly() };
        assert_eq!(step(&suspended, &status, &secret, Some("r2"), true), Step::Held(Hold::Suspended));
        assert_eq!(step(&monthly(), &status, &secret, Some("r2"), false), Step::Held(Hold::WaitingForWindow));
        assert_eq!(
            step(&monthly(), &status, &secret, Some("r2"), true),
            Step::Rotate { due: Due::Requested("r2".into()), finish_staged: false, handles: Some("r2".into()) }
        );
        let overdue = KeyRotationStatus { last_rotation_time: Some(at(1, 0) - chrono::Duration::days(60)), ..status };
        assert_eq!(
            step(&monthly(), &overdue, &secret, None, true),
            Step::Rotate { due: Due::Scheduled, finish_staged: false, handles: None }
        );
    }

    #[test]
    fn the_first_key_ignores_the_window_but_not_suspend() {
        let none = SecretView::default();
        let first = KeyRotationStatus::default();
        assert_eq!(
            step(&monthly(), &first, &none, None, false),
            Step::Rotate { due: Due::Initial, finish_staged: false, handles: None }
        );
        let suspended = KeyRotationSpec { suspend: true, ..monthly() };
        assert_eq!(step(&suspended, &first, &none, None, true), Step::Held(Hold::Suspended));
        // A staged key without a current one cannot be finished: it is a first key.
        let odd = SecretView { pending_id: Some("b".into()), ..none };
        assert!(matches!(step(&monthly(), &first, &odd, None, true), Step::Rotate { finish_staged: false, .. }));
    }

    #[test]
    fn an_invalid_cadence_is_an_error() {
        let spec =
            KeyRotationSpec { schedule: Some("0 99 * * *".into()), secret_name: "k".into(), ..Default::default() };
        let r = next_step(&spec, &rotated(1, "a"), &holding("a", 1), None, true, at(1, 0), at(2, 0));
        assert!(r.unwrap_err().contains("spec.schedule"));
    }
}
