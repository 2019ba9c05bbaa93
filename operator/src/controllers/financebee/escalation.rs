//! "If down > 15 minutes, page on-call engineer": when the bee stays unavailable for
//! `escalation.after`, trigger one incident (Escalated condition, Event, metric, the generic
//! webhook and/or a PagerDuty Events API v2 trigger deduplicated by the resource's UID); on
//! recovery, send exactly one resolve.
//!
//! Status is the record. `status.escalation` {state, since} says which incident is open, and
//! the reason of the Escalated condition says whether its notification is pending, sent or
//! failed. The reconciler writes "pending" before it sends, and "sent" or "failed" after, so
//! an operator restart never resends what was recorded as sent; a crash in between resends
//! (at least once: PagerDuty deduplicates by the dedup key).
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde_json::{Value, json};

use crate::api::{
    DeliveryResult, ESCALATED, EscalationDelivery, EscalationState, EscalationStatus, FinanceBeeStatus,
    PagerDutySeverity,
};
use crate::runtime::conditions::Desired;

/// Condition reasons of `Escalated`: the delivery record.
pub mod reason {
    pub const NOT_ESCALATED: &str = "NotEscalated";
    pub const TRIGGER_PENDING: &str = "TriggerPending";
    pub const TRIGGER_SENT: &str = "TriggerSent";
    pub const TRIGGER_FAILED: &str = "TriggerFailed";
    pub const RESOLVE_PENDING: &str = "ResolvePending";
    pub const RESOLVE_SENT: &str = "ResolveSent";
    pub const RESOLVE_FAILED: &str = "ResolveFailed";
}

/// A failed delivery (after its own retries) is attempted again after this long while the
/// state it announces still holds: a page must not go silently missing.
pub const RETRY_FAILED_AFTER: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transition {
    Trigger,
    Resolve,
}

impl Transition {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trigger => "trigger",
            Self::Resolve => "resolve",
        }
    }

    fn of(state: EscalationState) -> Self {
        match state {
            EscalationState::Triggered => Self::Trigger,
            EscalationState::Resolved => Self::Resolve,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EscalationDecision {
    pub status: Option<EscalationStatus>,
    /// Set when the state changes now: one trigger, or one resolve.
    pub transition: Option<Transition>,
    /// When `after` will have elapsed for an ongoing unavailability.
    pub requeue_after: Option<Duration>,
}

/// The state machine: None/Resolved → Triggered once unavailable for `after`; Triggered →
/// Resolved as soon as the bee is no longer unavailable (available, or deliberately stopped).
pub fn decide(
    after: TimeDelta,
    unavailable_since: Option<DateTime<Utc>>,
    previous: Option<&EscalationStatus>,
    now: DateTime<Utc>,
) -> EscalationDecision {
    let keep = EscalationDecision { status: previous.cloned(), transition: None, requeue_after: None };
    let triggered = previous.is_some_and(|p| p.state == EscalationState::Triggered);
    match (triggered, unavailable_since) {
        (true, Some(_)) => keep,
        (true, None) => EscalationDecision {
            status: Some(EscalationStatus::new(EscalationState::Resolved, now)),
            transition: Some(Transition::Resolve),
            requeue_after: None,
        },
        (false, None) => keep,
        (false, Some(since)) if now >= since + after => EscalationDecision {
            status: Some(EscalationStatus::new(EscalationState::Triggered, now)),
            transition: Some(Transition::Trigger),
            requeue_after: None,
        },
        (false, Some(since)) => EscalationDecision {
            requeue_after: Some((since + after - now).to_std().unwrap_or_default().max(Duration::from_secs(1))),
            ..keep
        },
    }
}

/// Where the notification of the current state stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Not sent yet (or sent but not recorded before a restart).
    Pending,
    /// Sent to every target; the text names them.
    Sent(String),
    /// At least one target failed after its retries; the text says which and why.
    Failed(String),
}

impl Delivery {
    /// The record of this delivery in status.
    pub fn record(&self) -> EscalationDelivery {
        let (result, detail) = match self {
            Self::Pending => (DeliveryResult::Pending, String::new()),
            Self::Sent(d) => (DeliveryResult::Sent, d.clone()),
            Self::Failed(d) => (DeliveryResult::Failed, d.clone()),
        };
        EscalationDelivery { result, detail }
    }

    /// The delivery a status record holds.
    pub fn from_record(r: &EscalationDelivery) -> Self {
        match r.result {
            DeliveryResult::Pending => Self::Pending,
            DeliveryResult::Sent => Self::Sent(r.detail.clone()),
            DeliveryResult::Failed => Self::Failed(r.detail.clone()),
        }
    }
}

/// `status` with its delivery recorded.
pub fn with_delivery(status: Option<EscalationStatus>, delivery: &Delivery) -> Option<EscalationStatus> {
    status.map(|s| EscalationStatus { delivery: Some(delivery.record()), ..s })
}

/// What status records about the notification of `status` (None: nothing recorded for this
/// state, i.e. it has to be sent). Status written before `escalation.delivery` existed kept
/// it in the Escalated `condition` only: that is read instead, so an upgrade resends nothing.
pub fn recorded_delivery(condition: Option<&Condition>, status: Option<&EscalationStatus>) -> Option<Delivery> {
    let s = status?;
    if let Some(record) = &s.delivery {
        return Some(Delivery::from_record(record));
    }
    legacy_delivery(condition?, s)
}

/// The delivery recorded in the Escalated condition by versions before `escalation.delivery`.
fn legacy_delivery(c: &Condition, s: &EscalationStatus) -> Option<Delivery> {
    use reason::*;
    let matches_state = match s.state {
        EscalationState::Triggered => [TRIGGER_PENDING, TRIGGER_SENT, TRIGGER_FAILED].contains(&c.reason.as_str()),
        EscalationState::Resolved => [RESOLVE_PENDING, RESOLVE_SENT, RESOLVE_FAILED].contains(&c.reason.as_str()),
    };
    if !matches_state {
        return None;
    }
    // The message is "<head>; <detail>" and the head never contains "; ".
    let detail = c.message.split_once("; ").map(|(_, d)| d.to_string()).unwrap_or_default();
    Some(match c.reason.as_str() {
        TRIGGER_SENT | RESOLVE_SENT => Delivery::Sent(detail),
        TRIGGER_FAILED | RESOLVE_FAILED => Delivery::Failed(detail),
        _ => Delivery::Pending,
    })
}

/// The Escalated condition for the escalation state and its delivery.
pub fn condition(status: Option<&EscalationStatus>, delivery: &Delivery, after: &str) -> Desired {
    use reason::*;
    let Some(s) = status else {
        return Desired::new(
            ESCALATED,
            false,
            NOT_ESCALATED,
            format!("not escalated (escalates after {after} unavailable)"),
        );
    };
    let since = s.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (is_true, head) = match s.state {
        EscalationState::Triggered => (true, format!("escalated at {since} after {after} unavailable")),
        EscalationState::Resolved => (false, format!("recovered, resolved at {since}")),
    };
    let (reason, detail) = match (s.state, delivery) {
        (EscalationState::Triggered, Delivery::Pending) => (TRIGGER_PENDING, "notifying".into()),
        (EscalationState::Triggered, Delivery::Sent(d)) => (TRIGGER_SENT, d.clone()),
        (EscalationState::Triggered, Delivery::Failed(d)) => (TRIGGER_FAILED, d.clone()),
        (EscalationState::Resolved, Delivery::Pending) => (RESOLVE_PENDING, "notifying".into()),
        (EscalationState::Resolved, Delivery::Sent(d)) => (RESOLVE_SENT, d.clone()),
        (EscalationState::Resolved, Delivery::Failed(d)) => (RESOLVE_FAILED, d.clone()),
    };
    Desired::new(ESCALATED, is_true, reason, format!("{head}; {detail}"))
}

/// Whether the receivers may hold an open page for this bee: an escalation is triggered, or
/// its resolve is not recorded as delivered. Without targets (Event and metric only) there
/// is nothing outside to resolve. While this holds the bee carries a finalizer, so that
/// deleting it resolves the page first.
pub fn page_open(status: Option<&FinanceBeeStatus>, has_targets: bool) -> bool {
    let Some(status) = status else { return false };
    let Some(esc) = status.escalation.as_ref() else { return false };
    if !has_targets {
        return false;
    }
    match esc.state {
        EscalationState::Triggered => true,
        EscalationState::Resolved => {
            let condition = crate::runtime::conditions::find(&status.conditions, ESCALATED);
            !matches!(recorded_delivery(condition, Some(esc)), Some(Delivery::Sent(_)))
        }
    }
}

/// What deleting a bee with an open page does, given how its resolve went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnDelete {
    /// Nothing (more) to resolve: let the object go.
    Release,
    /// A notification is in flight: wait for it, then resolve.
    Wait,
    /// Send the resolve now.
    Resolve,
    /// The resolve failed: try again later.
    Retry,
    /// The resolve kept failing for `give_up_after`: let the object go anyway and say so.
    GiveUp,
}

/// The deletion of a bee as a pure decision: `page_open` before anything was sent,
/// `in_flight` for a notification being sent, `sent` for the resolve just attempted (None:
/// not attempted yet), `failed` resolves so far (this one included), `deleting_for` since
/// the deletion was asked. Bounded both ways: [`MAX_RESOLVES_ON_DELETE`] failures or
/// `give_up_after`, whichever comes first.
pub fn on_delete(
    page_open: bool,
    in_flight: bool,
    sent: Option<bool>,
    failed: u32,
    deleting_for: Duration,
    give_up_after: Duration,
) -> OnDelete {
    let late = deleting_for >= give_up_after || failed >= MAX_RESOLVES_ON_DELETE;
    match (page_open, sent) {
        (false, _) | (true, Some(true)) => OnDelete::Release,
        (true, Some(false)) if late => OnDelete::GiveUp,
        (true, Some(false)) => OnDelete::Retry,
        (true, None) if in_flight && !late => OnDelete::Wait,
        (true, None) => OnDelete::Resolve,
    }
}

/// Identifies one notification: the transition and the state's `since`. Outcomes of an
/// older notification never count for a newer one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Job {
    pub transition: Transition,
    pub since: DateTime<Utc>,
}

impl Job {
    pub fn for_status(s: &EscalationStatus) -> Self {
        Self { transition: Transition::of(s.state), since: s.since }
    }
}

/// Who is told about the incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Webhook,
    PagerDuty,
}

impl Target {
    pub fn label(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::PagerDuty => "pagerduty",
        }
    }
    pub fn display(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::PagerDuty => "PagerDuty",
        }
    }
}

/// Result of one notification, per target (`Err` holds a message without URL or key).
pub type Outcome = Vec<(Target, Result<(), String>)>;

/// Summarises an outcome as the delivery it records.
pub fn delivery_of(outcome: &Outcome) -> Delivery {
    if outcome.is_empty() {
        return Delivery::Sent("no webhook or PagerDuty configured (Event and metric only)".into());
    }
    let failed: Vec<String> =
        outcome.iter().filter_map(|(t, r)| r.as_ref().err().map(|e| format!("{}: {e}", t.display()))).collect();
    if failed.is_empty() {
        let names: Vec<_> = outcome.iter().map(|(t, _)| t.display()).collect();
        Delivery::Sent(format!("notified {}", names.join(" and ")))
    } else {
        Delivery::Failed(format!("delivery failed: {}", failed.join(", ")))
    }
}

/// What the notification says, independent of the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incident {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub transition: Transition,
    pub since: DateTime<Utc>,
    pub unavailable_since: Option<DateTime<Utc>>,
    pub after: String,
    pub detail: String,
}

impl Incident {
    pub fn summary(&self) -> String {
        match self.transition {
            Transition::Trigger => format!(
                "FinanceBee {}/{} unavailable for more than {}: {}",
                self.namespace, self.name, self.after, self.detail
            ),
            Transition::Resolve => {
                format!("FinanceBee {}/{} recovered", self.namespace, self.name)
            }
        }
    }

    /// The generic webhook's JSON document.
    pub fn webhook_body(&self) -> Value {
        json!({
            "kind": "FinanceBee",
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
            "event": self.transition.as_str(),
            "state": match self.transition {
                Transition::Trigger => "Triggered",
                Transition::Resolve => "Resolved",
            },
            "since": self.since.to_rfc3339(),
            "unavailableSince": self.unavailable_since.map(|t| t.to_rfc3339()),
            "summary": self.summary(),
        })
    }

    /// A PagerDuty Events API v2 event: trigger or resolve, dedup key = the resource's UID.
    pub fn pagerduty_body(&self, routing_key: &str, severity: PagerDutySeverity) -> Value {
        match self.transition {
            Transition::Trigger => json!({
                "routing_key": routing_key,
                "event_action": "trigger",
                "dedup_key": self.uid,
                "payload": {
                    "summary": self.summary(),
                    "source": format!("{}/{}", self.namespace, self.name),
                    "severity": severity_str(severity),
                    "component": "finance-bee",
                    "group": self.namespace,
                    "class": "unavailable",
                    "custom_details": {
                        "unavailableSince": self.unavailable_since.map(|t| t.to_rfc3339()),
                        "escalationAfter": self.after,
                    },
                },
            }),
            Transition::Resolve => json!({
                "routing_key": routing_key,
                "event_action": "resolve",
                "dedup_key": self.uid,
            }),
        }
    }
}

fn severity_str(s: PagerDutySeverity) -> &'static str {
    match s {
        PagerDutySeverity::Critical => "critical",
        PagerDutySeverity::Error => "error",
        PagerDutySeverity::Warning => "warning",
        PagerDutySeverity::Info => "info",
    }
}

/// In-memory state of notifications per bee: at most one in flight, the last outcome.
#[derive(Default)]
pub struct Deliveries {
    entries: Mutex<HashMap<String, Entry>>,
    /// Resolves attempted for deleted bees: how many failed, and when the next may go.
    on_delete: Mutex<HashMap<String, (u32, Instant)>>,
}

/// Failed resolves of a deleted bee after which it is let go (see [`on_delete`]).
pub const MAX_RESOLVES_ON_DELETE: u32 = 5;

struct Entry {
    job: Job,
    in_flight: bool,
    outcome: Option<(Outcome, Instant)>,
}

/// What the reconciler should do about the notification of the current state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Start sending `job` (the caller spawns it after writing the pending status).
    Send,
    /// Something is in flight (maybe for an older job): wait for its wake-up.
    Wait,
    /// The outcome of this job arrived: record it.
    Record(Outcome),
    /// Nothing to do; look again after this long to retry a failure.
    Idle(Option<Duration>),
}

impl Deliveries {
    /// Decides, for the bee `key` whose current notification is `job` and whose recorded
    /// delivery is `recorded`, whether to send, wait or record. It changes nothing: the
    /// caller writes the pending status first, then calls [`Deliveries::begin`].
    pub fn next(&self, key: &str, job: &Job, recorded: Option<&Delivery>) -> Next {
        let entries = self.entries.lock().expect("deliveries poisoned");
        if let Some(e) = entries.get(key) {
            if e.in_flight {
                return Next::Wait;
            }
            if &e.job == job
                && let Some((outcome, at)) = &e.outcome
            {
                let delivery = delivery_of(outcome);
                if recorded != Some(&delivery) {
                    return Next::Record(outcome.clone());
                }
                if matches!(delivery, Delivery::Failed(_)) {
                    let due = *at + RETRY_FAILED_AFTER;
                    let now = Instant::now();
                    if now < due {
                        return Next::Idle(Some(due - now));
                    }
                    return Next::Send;
                }
                return Next::Idle(None);
            }
        }
        match recorded {
            Some(Delivery::Sent(_)) => Next::Idle(None),
            // Pending, failed with no memory of when (operator restarted), or never recorded.
            _ => Next::Send,
        }
    }

    /// Marks `job` in flight for `key`.
    pub fn begin(&self, key: &str, job: &Job) {
        let mut entries = self.entries.lock().expect("deliveries poisoned");
        entries.insert(key.to_string(), Entry { job: job.clone(), in_flight: true, outcome: None });
    }

    /// Records the outcome of `job` for `key`, unless the bee was forgotten meanwhile (it was
    /// deleted: nothing is kept for it).
    pub fn finish(&self, key: &str, job: &Job, outcome: Outcome) {
        let mut entries = self.entries.lock().expect("deliveries poisoned");
        if let Some(e) = entries.get_mut(key) {
            *e = Entry { job: job.clone(), in_flight: false, outcome: Some((outcome, Instant::now())) };
        }
    }

    /// Whether a notification for `key` is being sent now.
    pub fn in_flight(&self, key: &str) -> bool {
        self.entries.lock().expect("deliveries poisoned").get(key).is_some_and(|e| e.in_flight)
    }

    /// Forgets everything about the deleted bee `key`.
    pub fn forget(&self, key: &str) {
        self.entries.lock().expect("deliveries poisoned").remove(key);
        self.on_delete.lock().expect("deliveries poisoned").remove(key);
    }

    /// Failed resolves so far for the deleted bee `key`, and how long until the next may go
    /// (whatever wakes the reconciler meanwhile: a crash-looping pod wakes it every second).
    pub fn resolve_backoff(&self, key: &str) -> (u32, Option<Duration>) {
        let attempts = self.on_delete.lock().expect("deliveries poisoned");
        match attempts.get(key) {
            Some((n, next)) => (*n, next.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())),
            None => (0, None),
        }
    }

    /// Records a failed resolve for the deleted bee `key`; the next waits `backoff`.
    pub fn resolve_failed(&self, key: &str, backoff: Duration) -> u32 {
        let mut attempts = self.on_delete.lock().expect("deliveries poisoned");
        let e = attempts.entry(key.to_string()).or_insert((0, Instant::now()));
        e.0 += 1;
        e.1 = Instant::now() + backoff;
        e.0
    }

    /// How many bees have a notification on record (for tests of deletion).
    pub fn len(&self) -> usize {
        self.entries.lock().expect("deliveries poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets a bee's delivered notification once status records it.
    pub fn forget_sent(&self, key: &str, job: &Job) {
        let mut entries = self.entries.lock().expect("deliveries poisoned");
        if entries.get(key).is_some_and(|e| {
            &e.job == job
                && !e.in_flight
                && e.outcome.as_ref().is_some_and(|(o, _)| matches!(delivery_of(o), Delivery::Sent(_)))
        }) {
            entries.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::conditions::merge;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn st(state: EscalationState, since: i64) -> EscalationStatus {
        EscalationStatus::new(state, t(since))
    }

    const AFTER: i64 = 900;

    #[test]
    fn page_open_until_the_resolve_is_recorded_as_sent() {
        let with = |state, reason: &str| FinanceBeeStatus {
            escalation: Some(st(state, 10)),
            conditions: merge(&[], &[Desired::new(ESCALATED, true, reason, "head; detail")], None, t(0)),
            ..Default::default()
        };
        use EscalationState::*;
        assert!(!page_open(None, true));
        assert!(!page_open(Some(&FinanceBeeStatus::default()), true));
        for r in [reason::TRIGGER_PENDING, reason::TRIGGER_SENT, reason::TRIGGER_FAILED] {
            assert!(page_open(Some(&with(Triggered, r)), true), "{r}");
            assert!(!page_open(Some(&with(Triggered, r)), false), "no targets: nothing outside to resolve");
        }
        assert!(page_open(Some(&with(Resolved, reason::RESOLVE_PENDING)), true));
        assert!(page_open(Some(&with(Resolved, reason::RESOLVE_FAILED)), true));
        assert!(!page_open(Some(&with(Resolved, reason::RESOLVE_SENT)), true));
    }

    #[test]
    fn deletion_resolves_waits_retries_and_gives_up_in_bounded_time() {
        let limit = Duration::from_secs(120);
        let (early, late) = (Duration::from_secs(5), Duration::from_secs(121));
        assert_eq!(on_delete(false, true, None, 0, early, limit), OnDelete::Release, "nothing open");
        assert_eq!(on_delete(true, true, None, 0, early, limit), OnDelete::Wait);
        assert_eq!(on_delete(true, true, None, 0, late, limit), OnDelete::Resolve, "no waiting forever");
        assert_eq!(on_delete(true, false, None, 0, early, limit), OnDelete::Resolve);
        assert_eq!(on_delete(true, false, Some(true), 0, early, limit), OnDelete::Release);
        assert_eq!(on_delete(true, false, Some(false), 1, early, limit), OnDelete::Retry);
        assert_eq!(on_delete(true, false, Some(false), 1, late, limit), OnDelete::GiveUp, "time bound");
        let max = MAX_RESOLVES_ON_DELETE;
        assert_eq!(on_delete(true, false, Some(false), max - 1, early, limit), OnDelete::Retry);
        assert_eq!(on_delete(true, false, Some(false), max, early, limit), OnDelete::GiveUp, "attempt bound");
        // The attempts are spaced, whatever wakes the reconciler.
        let d = Deliveries::default();
        assert_eq!(d.resolve_backoff("ns/b"), (0, None));
        assert_eq!(d.resolve_failed("ns/b", Duration::from_secs(60)), 1);
        let (n, wait) = d.resolve_backoff("ns/b");
        assert_eq!(n, 1);
        assert!(wait.is_some_and(|w| w > Duration::from_secs(50)));
        d.forget("ns/b");
        assert_eq!(d.resolve_backoff("ns/b"), (0, None));
    }

    #[test]
    fn a_forgotten_bee_is_not_brought_back_by_a_late_outcome() {
        let d = Deliveries::default();
        let job = Job { transition: Transition::Trigger, since: t(0) };
        d.begin("ns/bee", &job);
        assert!(d.in_flight("ns/bee"));
        d.forget("ns/bee");
        d.finish("ns/bee", &job, vec![(Target::Webhook, Ok(()))]);
        assert!(d.is_empty());
    }

    /// (previous, unavailable since, now) → (state after, transition, requeue).
    #[test]
    fn state_machine_table() {
        use EscalationState::*;
        let after = TimeDelta::seconds(AFTER);
        type Row = (
            Option<(EscalationState, i64)>,
            Option<i64>,
            i64,
            Option<(EscalationState, i64)>,
            Option<Transition>,
            Option<u64>,
        );
        #[rustfmt::skip]
        let rows: &[Row] = &[
            // previous            unavail.   now    => status              transition                 requeue
            (None,                 None,      1000,  None,                  None,                      None),
            (None,                 Some(500), 1000,  None,                  None,                      Some(400)),
            (None,                 Some(100), 1000,  Some((Triggered, 1000)), Some(Transition::Trigger), None),
            (None,                 Some(100), 999,   None,                  None,                      Some(1)),
            (None,                 Some(999), 1000,  None,                  None,                      Some(899)),
            (Some((Triggered, 50)), Some(0),  1000,  Some((Triggered, 50)),  None,                      None),
            (Some((Triggered, 50)), None,     1000,  Some((Resolved, 1000)), Some(Transition::Resolve), None),
            (Some((Resolved, 50)),  None,     1000,  Some((Resolved, 50)),   None,                      None),
            (Some((Resolved, 50)),  Some(60), 1000,  Some((Triggered, 1000)), Some(Transition::Trigger), None),
            (Some((Resolved, 50)),  Some(600), 1000, Some((Resolved, 50)),   None,                      Some(500)),
        ];
        for (i, (prev, un, now, want, tr, rq)) in rows.iter().enumerate() {
            let prev = prev.map(|(s, at)| st(s, at));
            let d = decide(after, un.map(t), prev.as_ref(), t(*now));
            assert_eq!(d.status, want.map(|(s, at)| st(s, at)), "row {i}");
            assert_eq!(d.transition, *tr, "row {i}");
            assert_eq!(d.requeue_after, rq.map(Duration::from_secs), "row {i}");
            // Fixpoint: applying the result again at the same instant changes nothing.
            let again = decide(after, un.map(t), d.status.as_ref(), t(*now));
            assert_eq!(again.transition, None, "row {i}: one transition per change");
            assert_eq!(again.status, d.status, "row {i}");
        }
    }

    /// Over a long simulated run of outages and recoveries, triggers and resolves alternate,
    /// there is exactly one trigger per outage longer than `after` and one resolve per
    /// recovery after a trigger.
    #[test]
    fn one_trigger_per_incident_one_resolve_per_recovery() {
        let after = TimeDelta::seconds(AFTER);
        // (start, end) of outages, in seconds; a 10 s reconcile tick.
        let outages = [(0, 100), (200, 2000), (2100, 2200), (3000, 5000), (5010, 6500)];
        let mut status: Option<EscalationStatus> = None;
        let mut events = vec![];
        for now in (0..8000).step_by(10) {
            let since = outages.iter().find(|(s, e)| *s <= now && now < *e).map(|(s, _)| t(*s));
            let d = decide(after, since, status.as_ref(), t(now));
            if let Some(tr) = d.transition {
                events.push((tr, now));
            }
            status = d.status;
        }
        use Transition::*;
        assert_eq!(
            events,
            [(Trigger, 1100), (Resolve, 2000), (Trigger, 3900), (Resolve, 5000), (Trigger, 5910), (Resolve, 6500)]
        );
    }

    fn cond(reason: &str, message: &str) -> Condition {
        merge(&[], &[Desired::new(ESCALATED, true, reason, message)], None, t(0)).remove(0)
    }

    #[test]
    fn status_records_the_delivery_and_the_record_wins_over_the_condition() {
        use EscalationState::*;
        for d in [
            Delivery::Pending,
            Delivery::Sent("notified webhook and PagerDuty".into()),
            Delivery::Failed("delivery failed: PagerDuty: HTTP 500".into()),
        ] {
            let recorded = with_delivery(Some(st(Triggered, 5)), &d).unwrap();
            assert_eq!(recorded_delivery(None, Some(&recorded)), Some(d.clone()), "no condition needed");
            // A condition that says otherwise (written by hand, or stale) does not count.
            let stale = condition(Some(&st(Triggered, 5)), &Delivery::Pending, "15m");
            assert_eq!(recorded_delivery(Some(&cond(&stale.reason, &stale.message)), Some(&recorded)), Some(d.clone()));
            let json = serde_json::to_value(&recorded).unwrap();
            let back: EscalationStatus = serde_json::from_value(json).unwrap();
            assert_eq!(back, recorded, "the record survives the API server");
        }
    }

    #[test]
    fn an_upgrade_reads_the_delivery_from_the_condition_once() {
        use EscalationState::*;
        // Status as versions before `escalation.delivery` wrote it: the page was sent, and
        // only the condition says so. The upgraded operator must not page again.
        let old: EscalationStatus =
            serde_json::from_value(serde_json::json!({"state": "Triggered", "since": "2026-11-29T10:00:00Z"})).unwrap();
        assert_eq!(old.delivery, None);
        let sent = Delivery::Sent("notified PagerDuty".into());
        let c = condition(Some(&old), &sent, "15m");
        assert_eq!(recorded_delivery(Some(&cond(&c.reason, &c.message)), Some(&old)), Some(sent.clone()));
        let status = FinanceBeeStatus {
            escalation: Some(EscalationStatus::new(Resolved, t(9))),
            conditions: vec![cond(
                &condition(Some(&st(Resolved, 9)), &sent, "15m").reason,
                &condition(Some(&st(Resolved, 9)), &sent, "15m").message,
            )],
            ..Default::default()
        };
        assert!(!page_open(Some(&status), true), "a resolve recorded as sent before the upgrade leaves no page open");
    }

    #[test]
    fn the_condition_records_the_delivery_and_reads_back() {
        use EscalationState::*;
        let cases = [
            (st(Triggered, 5), Delivery::Pending),
            (st(Triggered, 5), Delivery::Sent("notified webhook and PagerDuty".into())),
            (st(Triggered, 5), Delivery::Failed("delivery failed: PagerDuty: HTTP 500".into())),
            (st(Resolved, 9), Delivery::Pending),
            (st(Resolved, 9), Delivery::Sent("notified PagerDuty".into())),
            (st(Resolved, 9), Delivery::Failed("delivery failed: webhook: x".into())),
        ];
        for (s, d) in cases {
            let desired = condition(Some(&s), &d, "15m");
            assert_eq!(desired.status, s.state == Triggered, "{s:?} {d:?}");
            let c = cond(&desired.reason, &desired.message);
            let back = recorded_delivery(Some(&c), Some(&s));
            match &d {
                Delivery::Pending => assert_eq!(back, Some(Delivery::Pending)),
                _ => assert_eq!(back.as_ref(), Some(&d), "{}", desired.message),
            }
            // A record of the other state does not count for this one.
            let other = EscalationStatus::new(if s.state == Triggered { Resolved } else { Triggered }, s.since);
            assert_eq!(recorded_delivery(Some(&c), Some(&other)), None);
        }
        let none = condition(None, &Delivery::Pending, "15m");
        assert!(!none.status);
        assert_eq!(none.reason, reason::NOT_ESCALATED);
        assert_eq!(recorded_delivery(Some(&cond(&none.reason, &none.message)), None), None);
        assert_eq!(
            recorded_delivery(Some(&cond(&none.reason, &none.message)), Some(&st(Triggered, 1))),
            None,
            "a trigger never recorded is to be sent"
        );
    }

    #[test]
    fn outcomes_summarise_per_target() {
        assert!(matches!(delivery_of(&vec![]), Delivery::Sent(m) if m.contains("no webhook")));
        assert_eq!(
            delivery_of(&vec![(Target::Webhook, Ok(())), (Target::PagerDuty, Ok(()))]),
            Delivery::Sent("notified webhook and PagerDuty".into())
        );
        assert_eq!(
            delivery_of(&vec![
                (Target::Webhook, Ok(())),
                (Target::PagerDuty, Err("webhook answered HTTP 500 after 4 attempt(s)".into()))
            ]),
            Delivery::Failed("delivery failed: PagerDuty: webhook answered HTTP 500 after 4 attempt(s)".into())
        );
    }

    fn incident(tr: Transition) -> Incident {
        Incident {
            namespace: "colony".into(),
            name: "finance-bee".into(),
            uid: "5e6f".into(),
            transition: tr,
            since: t(1000),
            unavailable_since: Some(t(100)),
            after: "15m".into(),
            detail: "0/1 replicas available".into(),
        }
    }

    #[test]
    fn pagerduty_events_v2_payloads() {
        let trig = incident(Transition::Trigger).pagerduty_body("rk", PagerDutySeverity::Critical);
        assert_eq!(trig["routing_key"], "rk");
        assert_eq!(trig["event_action"], "trigger");
        assert_eq!(trig["dedup_key"], "5e6f");
        assert_eq!(trig["payload"]["source"], "colony/finance-bee");
        assert_eq!(trig["payload"]["severity"], "critical");
        assert!(trig["payload"]["summary"].as_str().unwrap().contains("unavailable for more than 15m"));
        let res = incident(Transition::Resolve).pagerduty_body("rk", PagerDutySeverity::Warning);
        assert_eq!(res["event_action"], "resolve");
        assert_eq!(res["dedup_key"], "5e6f", "resolve uses the same dedup key");
        assert!(res.get("payload").is_none());
        let hook = incident(Transition::Trigger).webhook_body();
        assert_eq!(hook["event"], "trigger");
        assert_eq!(hook["state"], "Triggered");
        assert_eq!(hook["uid"], "5e6f");
        assert!(hook.to_string().find("rk").is_none(), "no routing key in the webhook");
    }

    #[test]
    fn deliveries_send_once_wait_record_and_retry_failures() {
        let d = Deliveries::default();
        let trig = Job { transition: Transition::Trigger, since: t(1) };
        // Never recorded → send; a second look while in flight → wait.
        assert_eq!(d.next("ns/a", &trig, None), Next::Send);
        assert_eq!(d.next("ns/a", &trig, None), Next::Send, "next() changes nothing");
        d.begin("ns/a", &trig);
        assert_eq!(d.next("ns/a", &trig, Some(&Delivery::Pending)), Next::Wait);
        // Outcome arrives → record it; once recorded → idle, and forgotten.
        let ok = vec![(Target::PagerDuty, Ok(()))];
        d.finish("ns/a", &trig, ok.clone());
        assert_eq!(d.next("ns/a", &trig, Some(&Delivery::Pending)), Next::Record(ok.clone()));
        let sent = delivery_of(&ok);
        assert_eq!(d.next("ns/a", &trig, Some(&sent)), Next::Idle(None));
        d.forget_sent("ns/a", &trig);
        // After a restart (no memory), a recorded Sent is never resent...
        assert_eq!(d.next("ns/a", &trig, Some(&sent)), Next::Idle(None));
        // ...but a recorded Pending is (the send may not have happened).
        let fresh = Deliveries::default();
        assert_eq!(fresh.next("ns/a", &trig, Some(&Delivery::Pending)), Next::Send);

        // A failure is recorded, then retried only after RETRY_FAILED_AFTER.
        let bad = vec![(Target::Webhook, Err("HTTP 503".into()))];
        fresh.begin("ns/a", &trig);
        fresh.finish("ns/a", &trig, bad.clone());
        assert_eq!(fresh.next("ns/a", &trig, Some(&Delivery::Pending)), Next::Record(bad.clone()));
        match fresh.next("ns/a", &trig, Some(&delivery_of(&bad))) {
            Next::Idle(Some(wait)) => assert!(wait <= RETRY_FAILED_AFTER),
            other => panic!("{other:?}"),
        }
        // A newer job (the resolve) while the trigger is in flight waits for it.
        let other = Deliveries::default();
        assert_eq!(other.next("ns/b", &trig, None), Next::Send);
        other.begin("ns/b", &trig);
        let res = Job { transition: Transition::Resolve, since: t(2) };
        assert_eq!(other.next("ns/b", &res, Some(&Delivery::Pending)), Next::Wait);
        other.finish("ns/b", &trig, ok);
        // The trigger's outcome does not count for the resolve: send it.
        assert_eq!(other.next("ns/b", &res, Some(&Delivery::Pending)), Next::Send);
    }
}
