//! The flip notifications' outbox. A flip's notification is recorded in status
//! (`status.fallback.pendingNotifications`) by the same write that records the flip, sent
//! once that write has succeeded, and taken out of status once its delivery is done (sent,
//! or given up after its retries). So a notification survives what can happen between the
//! flip and its delivery:
//!
//! - the status write is refused: nothing is recorded, the retry decides the flip again and
//!   records it then (one notification);
//! - the status write commits but its reply is lost (an API server restart): the retry reads
//!   the flip and its notification from status, and sends it, since this process has not;
//! - the operator stops or another replica takes over before the delivery is done: the next
//!   leader finds it in status and sends it.
//!
//! Delivery is therefore at least once: a crash after the webhook answered and before status
//! lost the entry sends it again.
//!
//! A flip's announcement in the cluster (its Event, log line and `fallback_flips_total`) is
//! made once status records the flip, by this process: the reconcile that flipped, after its
//! status write, or, when that write's reply was lost, the next reconcile, which finds the
//! flip in status ([`Outbox::flip_owed`]). A flip recorded by another process (a previous
//! leader that stopped between its status write and its Event) is taken as announced: Events
//! stay best effort, as every Event is; the notification above is not.
//!
//! [`pending`] is the pure rule for what status keeps; [`Outbox`] is this process's memory
//! of what it queued, what it finished and which flip it announced.
use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::api::PendingNotification;

/// Notifications a server keeps in status at most: the oldest go first (a receiver that
/// has been unreachable for this many flips learns the latest states). One that goes before
/// this process queued it is never sent: it is counted and reported as a failed delivery.
pub const MAX_PENDING: usize = 16;

/// What status keeps of the flip notifications, and what no longer fits in it.
#[derive(Debug, Default, PartialEq)]
pub struct Pending {
    /// Oldest first, at most [`MAX_PENDING`].
    pub kept: Vec<PendingNotification>,
    /// The oldest undelivered ones pushed out by newer flips.
    pub dropped: Vec<PendingNotification>,
}

/// The notifications status keeps: those recorded before, less those this process has
/// finished delivering (`done`: the time of the last flip finished), plus the one of a flip
/// decided now. Nothing when no notification is configured (nothing to deliver).
pub fn pending(
    previous: &[PendingNotification],
    flip: Option<PendingNotification>,
    notify_configured: bool,
    done: Option<DateTime<Utc>>,
) -> Pending {
    if !notify_configured {
        return Pending::default();
    }
    let mut kept: Vec<PendingNotification> =
        previous.iter().filter(|p| done.is_none_or(|d| p.at > d)).cloned().chain(flip).collect();
    let dropped = kept.drain(..kept.len().saturating_sub(MAX_PENDING)).collect();
    Pending { kept, dropped }
}

/// The notification of a flip to `active` at `at`.
pub fn of_flip(active: bool, reason: &str, at: DateTime<Utc>) -> PendingNotification {
    PendingNotification { at, state: if active { "on" } else { "off" }.into(), reason: reason.into() }
}

/// Per server (key `namespace/name`): the last flip whose notification this process queued,
/// the last whose delivery finished, and the last flip announced.
#[derive(Default)]
pub struct Outbox {
    marks: Mutex<HashMap<String, Marks>>,
}

#[derive(Default, Clone, Copy)]
struct Marks {
    queued: Option<DateTime<Utc>>,
    done: Option<DateTime<Utc>>,
    /// The flip (`status.fallback.since`) last announced, or found in status when this
    /// process first saw the server; None before that.
    announced: Option<Option<DateTime<Utc>>>,
}

impl Outbox {
    /// The time of the last flip whose delivery finished in this process.
    pub fn done(&self, key: &str) -> Option<DateTime<Utc>> {
        self.marks.lock().expect("outbox poisoned").get(key).and_then(|m| m.done)
    }

    /// The recorded notifications this process has not queued yet, in order. Call it with
    /// what status holds after a successful write; [`Outbox::queued`] marks each one sent.
    pub fn unqueued(&self, key: &str, recorded: &[PendingNotification]) -> Vec<PendingNotification> {
        let marks = self.marks.lock().expect("outbox poisoned");
        let queued = marks.get(key).and_then(|m| m.queued);
        recorded.iter().filter(|p| queued.is_none_or(|q| p.at > q)).cloned().collect()
    }

    /// Records that the notification of the flip at `at` is queued for delivery.
    pub fn queued(&self, key: &str, at: DateTime<Utc>) {
        let mut marks = self.marks.lock().expect("outbox poisoned");
        let m = marks.entry(key.to_string()).or_default();
        m.queued = Some(m.queued.map_or(at, |q| q.max(at)));
    }

    /// Records that the delivery of the notification of the flip at `at` is done (sent or
    /// given up). Nothing is kept for a server forgotten meanwhile.
    pub fn finished(&self, key: &str, at: DateTime<Utc>) {
        if let Some(m) = self.marks.lock().expect("outbox poisoned").get_mut(key) {
            m.done = Some(m.done.map_or(at, |d| d.max(at)));
        }
    }

    /// Whether status records a flip (`since`: `status.fallback.since`, which changes with
    /// every flip and only then) that this process still owes its announcement: one its own
    /// status write recorded since the last call, whether or not that write's reply came
    /// back. Marks it announced. The first call for a server only takes note of `since`: a
    /// flip recorded before this process saw the server was announced by whoever recorded it.
    /// Compared for equality only: clocks of other processes may differ.
    pub fn flip_owed(&self, key: &str, since: Option<DateTime<Utc>>) -> bool {
        let mut marks = self.marks.lock().expect("outbox poisoned");
        let m = marks.entry(key.to_string()).or_default();
        let owed = m.announced.is_some_and(|a| a != since);
        m.announced = Some(since);
        owed
    }

    /// Forgets a deleted server.
    pub fn forget(&self, key: &str) {
        self.marks.lock().expect("outbox poisoned").remove(key);
    }

    /// Servers with marks (bounded by the servers that exist).
    pub fn len(&self) -> usize {
        self.marks.lock().expect("outbox poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    /// What the reconcile does with the status it wrote: queue what is not queued yet.
    fn take(outbox: &Outbox, key: &str, recorded: &[PendingNotification]) -> Vec<PendingNotification> {
        let new = outbox.unqueued(key, recorded);
        for p in &new {
            outbox.queued(key, p.at);
        }
        new
    }

    fn n(s: i64, active: bool) -> PendingNotification {
        of_flip(active, if active { "HealthCheckFailed" } else { "Recovered" }, t(s))
    }

    #[test]
    fn a_flip_is_recorded_with_its_notification_when_notify_is_configured() {
        assert_eq!(pending(&[], Some(n(1, true)), true, None).kept, vec![n(1, true)]);
        assert_eq!(pending(&[], Some(n(1, true)), false, None), Pending::default());
        assert_eq!(pending(&[], None, true, None), Pending::default());
        assert_eq!(n(1, true).state, "on");
        assert_eq!(n(1, false).state, "off");
    }

    #[test]
    fn recorded_notifications_stay_until_done_and_new_ones_go_last() {
        let prev = [n(1, true), n(2, false)];
        assert_eq!(pending(&prev, None, true, None).kept, prev.to_vec());
        assert_eq!(pending(&prev, Some(n(3, true)), true, None).kept, vec![n(1, true), n(2, false), n(3, true)]);
        // Done up to the first: it goes, the others stay.
        assert_eq!(pending(&prev, None, true, Some(t(1))).kept, vec![n(2, false)]);
        // Done for an older flip than any recorded: all stay.
        assert_eq!(pending(&prev, None, true, Some(t(0))).kept, prev.to_vec());
        assert_eq!(pending(&prev, None, true, Some(t(2))).kept, vec![]);
        // Delivered ones leave status without counting as dropped.
        assert_eq!(pending(&prev, None, true, Some(t(2))).dropped, vec![]);
        // Notify removed from the spec: nothing left to deliver.
        assert_eq!(pending(&prev, None, false, None), Pending::default());
    }

    #[test]
    fn at_most_max_pending_are_kept_newest_last() {
        let prev: Vec<_> = (0..MAX_PENDING as i64).map(|i| n(i, i % 2 == 0)).collect();
        let Pending { kept, dropped } = pending(&prev, Some(n(100, true)), true, None);
        assert_eq!(kept.len(), MAX_PENDING);
        assert_eq!(kept.first(), Some(&prev[1]));
        assert_eq!(kept.last(), Some(&n(100, true)));
        assert_eq!(dropped, vec![prev[0].clone()], "the oldest is pushed out, and said so");
        // Full but not over: nothing dropped.
        assert_eq!(pending(&prev, None, true, None), Pending { kept: prev.clone(), dropped: vec![] });
        // A delivery finished at the same time as the new flip makes room.
        assert_eq!(pending(&prev, Some(n(100, true)), true, Some(t(0))).dropped, vec![]);
    }

    #[test]
    fn a_dropped_notification_this_process_queued_is_not_lost() {
        // Queued before it was pushed out of status: its delivery runs on; only the ones
        // never queued here are lost, and those are what the reconcile reports.
        let outbox = Outbox::default();
        let prev: Vec<_> = (0..MAX_PENDING as i64).map(|i| n(i, i % 2 == 0)).collect();
        take(&outbox, "ns/a", &prev[..1]);
        let Pending { dropped, .. } = pending(&prev, Some(n(100, true)), true, None);
        assert_eq!(outbox.unqueued("ns/a", &dropped), vec![]);
        let other = Outbox::default();
        assert_eq!(other.unqueued("ns/a", &dropped), vec![prev[0].clone()]);
    }

    #[test]
    fn each_recorded_notification_is_queued_once_per_process() {
        let outbox = Outbox::default();
        let recorded = [n(1, true)];
        assert_eq!(take(&outbox, "ns/a", &recorded), vec![n(1, true)]);
        // The same status seen again (a retry, a wake-up): nothing more to send.
        assert_eq!(take(&outbox, "ns/a", &recorded), vec![]);
        // A newer flip recorded while the first is still pending: only the newer one.
        let recorded = [n(1, true), n(2, false)];
        assert_eq!(take(&outbox, "ns/a", &recorded), vec![n(2, false)]);
        // Another server has its own marks.
        assert_eq!(take(&outbox, "ns/b", &recorded), recorded.to_vec());
    }

    #[test]
    fn a_notification_not_queued_stays_unqueued() {
        // The reconcile could not queue it (the URL's Secret could not be read): the retry
        // finds it again.
        let outbox = Outbox::default();
        assert_eq!(outbox.unqueued("ns/a", &[n(1, true)]), vec![n(1, true)]);
        assert_eq!(outbox.unqueued("ns/a", &[n(1, true)]), vec![n(1, true)]);
    }

    #[test]
    fn a_new_process_sends_what_status_recorded() {
        // What a restarted operator (empty memory) finds in status is sent, oldest first.
        let outbox = Outbox::default();
        let recorded = [n(1, true), n(2, false)];
        assert_eq!(take(&outbox, "ns/a", &recorded), recorded.to_vec());
        assert_eq!(outbox.done("ns/a"), None);
    }

    #[test]
    fn finished_deliveries_leave_status_in_order() {
        let outbox = Outbox::default();
        let recorded = vec![n(1, true), n(2, false)];
        take(&outbox, "ns/a", &recorded);
        outbox.finished("ns/a", t(1));
        assert_eq!(pending(&recorded, None, true, outbox.done("ns/a")).kept, vec![n(2, false)]);
        outbox.finished("ns/a", t(2));
        // A late finish of an older one never moves the mark back.
        outbox.finished("ns/a", t(1));
        assert_eq!(outbox.done("ns/a"), Some(t(2)));
        assert_eq!(pending(&recorded, None, true, outbox.done("ns/a")).kept, vec![]);
    }

    #[test]
    fn a_forgotten_server_keeps_nothing_even_when_a_delivery_finishes_late() {
        let outbox = Outbox::default();
        take(&outbox, "ns/a", &[n(1, true)]);
        outbox.forget("ns/a");
        outbox.finished("ns/a", t(1));
        assert!(outbox.is_empty());
        assert_eq!(outbox.done("ns/a"), None);
    }

    #[test]
    fn a_flip_is_owed_once_and_only_when_this_process_saw_the_state_before_it() {
        let outbox = Outbox::default();
        // First sight (a restart, a new leader): what status records was announced already.
        assert!(!outbox.flip_owed("ns/a", Some(t(1))));
        assert!(!outbox.flip_owed("ns/a", Some(t(1))), "the same flip seen again");
        // A flip this process wrote (or whose write's reply it lost): owed once.
        assert!(outbox.flip_owed("ns/a", Some(t(5))));
        assert!(!outbox.flip_owed("ns/a", Some(t(5))));
        // A server first seen with no flip at all, then flipped.
        assert!(!outbox.flip_owed("ns/b", None));
        assert!(outbox.flip_owed("ns/b", Some(t(2))));
        // Equality, not order: a flip stamped earlier than the last one (another clock) is
        // still a flip.
        assert!(outbox.flip_owed("ns/b", Some(t(0))));
        // Forgotten (deleted): a server of the same name starts from a first sight again.
        outbox.forget("ns/b");
        assert!(!outbox.flip_owed("ns/b", Some(t(9))));
    }

    #[test]
    fn a_refused_write_then_a_new_decision_sends_one_notification() {
        // The flip at t(1) was never recorded (its write refused); the retry decides it again
        // at t(1) + 1 s and records that one: exactly one notification is queued.
        let outbox = Outbox::default();
        let again = of_flip(true, "HealthCheckFailed", t(1) + TimeDelta::seconds(1));
        let recorded = pending(&[], Some(again.clone()), true, outbox.done("ns/a")).kept;
        assert_eq!(take(&outbox, "ns/a", &recorded), vec![again]);
    }
}
