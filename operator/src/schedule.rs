//! Cron schedules in a time zone, and the windows they open. Pure: `now` is always passed in.
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid cron expression {expr:?}: {reason}")]
    Cron { expr: String, reason: String },
    #[error("unknown time zone {0:?} (expected an IANA name such as UTC or Europe/Paris)")]
    TimeZone(String),
}

/// A five-field cron expression evaluated in an IANA time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    tz: Tz,
}

impl CronSchedule {
    pub fn parse(expr: &str, time_zone: &str) -> Result<Self, ScheduleError> {
        if expr.split_whitespace().count() != 5 {
            return Err(ScheduleError::Cron {
                expr: expr.into(),
                reason: "expected 5 fields: minute hour day month weekday".into(),
            });
        }
        let parser = CronParser::builder().seconds(Seconds::Disallowed).year(Year::Disallowed).build();
        let cron = parser.parse(expr).map_err(|e| ScheduleError::Cron { expr: expr.into(), reason: e.to_string() })?;
        let tz = Tz::from_str(time_zone).map_err(|_| ScheduleError::TimeZone(time_zone.into()))?;
        Ok(Self { cron, tz })
    }

    /// The first occurrence strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&t.with_timezone(&self.tz), false).ok().map(|d| d.with_timezone(&Utc))
    }

    /// The last occurrence at or before `t`.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_previous_occurrence(&t.with_timezone(&self.tz), true).ok().map(|d| d.with_timezone(&Utc))
    }

    /// The first two successive occurrences at most `limit` apart, the first of them within
    /// [`GAP_HORIZON`] after `from` and among the first [`MAX_STARTS_WALKED`]; `None` when
    /// every such pair is further apart. A window of `limit` opened at each occurrence
    /// overlaps (or touches) the next one exactly when this finds a pair. A year covers every
    /// month, weekday and daylight-saving change; the cap bounds the cost for crons that fire
    /// every few minutes (whose gaps a few weeks already show).
    pub fn starts_within(
        &self,
        limit: chrono::Duration,
        from: DateTime<Utc>,
    ) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let horizon = from + GAP_HORIZON;
        let mut a = self.next_after(from)?;
        for _ in 0..MAX_STARTS_WALKED {
            if a > horizon {
                break;
            }
            let b = self.next_after(a)?;
            if b - a <= limit {
                return Some((a, b));
            }
            a = b;
        }
        None
    }
}

/// How far ahead [`CronSchedule::starts_within`] looks: a year and a day.
pub const GAP_HORIZON: chrono::Duration = chrono::Duration::days(366);
/// Most occurrences [`CronSchedule::starts_within`] walks: a year of hourly starts (8,784)
/// fits twice; a cron every two minutes is walked for four weeks.
pub const MAX_STARTS_WALKED: usize = 20_000;

/// A half-open interval `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Window {
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }
}

/// Where `now` stands relative to a schedule of windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowState {
    /// The window `now` is in, if any.
    pub current: Option<Window>,
    /// The most recent window that has ended (for verification after maintenance).
    pub previous: Option<Window>,
    /// The start of the next window after `now`.
    pub next_start: Option<DateTime<Utc>>,
}

/// Windows opened at each cron occurrence for `duration`.
pub fn recurring(schedule: &CronSchedule, duration: chrono::Duration, now: DateTime<Utc>) -> WindowState {
    let last = schedule.last_at_or_before(now).map(|start| Window { start, end: start + duration });
    let next_start = schedule.next_after(now);
    match last {
        Some(w) if w.contains(now) => {
            let previous = schedule
                .last_at_or_before(w.start - chrono::Duration::seconds(1))
                .map(|start| Window { start, end: start + duration });
            WindowState { current: Some(w), previous, next_start }
        }
        other => WindowState { current: None, previous: other, next_start },
    }
}

/// A single window from `start` to `end`.
pub fn one_off(start: DateTime<Utc>, end: DateTime<Utc>, now: DateTime<Utc>) -> WindowState {
    let w = Window { start, end };
    if w.contains(now) {
        WindowState { current: Some(w), previous: None, next_start: None }
    } else if now < start {
        WindowState { current: None, previous: None, next_start: Some(start) }
    } else {
        WindowState { current: None, previous: Some(w), next_start: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn rejects_bad_expressions_and_zones() {
        assert!(matches!(CronSchedule::parse("* * *", "UTC"), Err(ScheduleError::Cron { .. })));
        assert!(matches!(CronSchedule::parse("0 0 * * * *", "UTC"), Err(ScheduleError::Cron { .. })));
        assert!(matches!(CronSchedule::parse("61 * * * *", "UTC"), Err(ScheduleError::Cron { .. })));
        assert!(matches!(CronSchedule::parse("0 3 1 * *", "Mars/Olympus"), Err(ScheduleError::TimeZone(_))));
        assert!(CronSchedule::parse("0 3 1 * *", "Europe/Paris").is_ok());
    }

    #[test]
    fn monthly_next_and_last() {
        let s = CronSchedule::parse("0 3 1 * *", "UTC").unwrap();
        assert_eq!(s.next_after(utc(2026, 11, 27, 12, 0)), Some(utc(2026, 12, 1, 3, 0)));
        assert_eq!(s.next_after(utc(2026, 12, 1, 3, 0)), Some(utc(2027, 1, 1, 3, 0)), "strictly after");
        assert_eq!(s.last_at_or_before(utc(2026, 12, 1, 3, 0)), Some(utc(2026, 12, 1, 3, 0)), "inclusive");
        assert_eq!(s.last_at_or_before(utc(2026, 11, 27, 12, 0)), Some(utc(2026, 11, 1, 3, 0)));
    }

    #[test]
    fn time_zone_shifts_occurrences() {
        // 02:00 in Paris is 01:00 UTC in winter.
        let s = CronSchedule::parse("0 2 * * *", "Europe/Paris").unwrap();
        assert_eq!(s.next_after(utc(2026, 11, 27, 12, 0)), Some(utc(2026, 11, 28, 1, 0)));
    }

    #[test]
    fn recurring_window_inside_and_outside() {
        let s = CronSchedule::parse("0 2 * * 0", "UTC").unwrap(); // Sundays 02:00
        let two_hours = chrono::Duration::hours(2);
        // 2026-11-29 is a Sunday.
        let inside = recurring(&s, two_hours, utc(2026, 11, 29, 3, 0));
        assert_eq!(inside.current, Some(Window { start: utc(2026, 11, 29, 2, 0), end: utc(2026, 11, 29, 4, 0) }));
        assert_eq!(inside.next_start, Some(utc(2026, 12, 6, 2, 0)));
        assert_eq!(inside.previous.map(|w| w.start), Some(utc(2026, 11, 22, 2, 0)));
        let at_end = recurring(&s, two_hours, utc(2026, 11, 29, 4, 0));
        assert_eq!(at_end.current, None, "the end is exclusive");
        assert_eq!(at_end.previous.map(|w| w.end), Some(utc(2026, 11, 29, 4, 0)));
        let before = recurring(&s, two_hours, utc(2026, 11, 27, 12, 0));
        assert_eq!(before.current, None);
        assert_eq!(before.next_start, Some(utc(2026, 11, 29, 2, 0)));
    }

    fn hours(h: i64) -> chrono::Duration {
        chrono::Duration::hours(h)
    }

    #[test]
    fn starts_within_finds_the_shortest_gaps() {
        let from = utc(2026, 11, 29, 12, 0);
        let weekly = CronSchedule::parse("0 2 * * 0", "UTC").unwrap();
        assert_eq!(weekly.starts_within(hours(2), from), None);
        assert_eq!(weekly.starts_within(hours(167), from), None);
        assert_eq!(
            weekly.starts_within(hours(168), from),
            Some((utc(2026, 12, 6, 2, 0), utc(2026, 12, 13, 2, 0))),
            "a week-long window touches the next one"
        );
        let hourly = CronSchedule::parse("0 * * * *", "UTC").unwrap();
        assert_eq!(hourly.starts_within(chrono::Duration::minutes(59), from), None);
        assert!(hourly.starts_within(hours(1), from).is_some());
        // Monthly: February is the shortest month (28 days = 672h).
        let monthly = CronSchedule::parse("0 3 1 * *", "UTC").unwrap();
        assert_eq!(monthly.starts_within(hours(671), from), None);
        assert_eq!(monthly.starts_within(hours(672), from), Some((utc(2027, 2, 1, 3, 0), utc(2027, 3, 1, 3, 0))));
        // Yearly: the pair straddles the horizon's end, and is still found.
        let yearly = CronSchedule::parse("0 0 1 1 *", "UTC").unwrap();
        assert_eq!(yearly.starts_within(hours(364 * 24), from), None);
        assert!(yearly.starts_within(hours(365 * 24), from).is_some());
        // Irregular: 02:00 and 03:00 on Mondays and Fridays; the shortest gap is one hour.
        let irregular = CronSchedule::parse("0 2,3 * * 1,5", "UTC").unwrap();
        assert_eq!(irregular.starts_within(chrono::Duration::minutes(59), from), None);
        assert!(irregular.starts_within(hours(1), from).is_some());
    }

    #[test]
    fn starts_within_sees_daylight_saving_changes() {
        let from = utc(2026, 11, 29, 12, 0);
        // Daily at 02:00 is 24h apart in UTC, but 23h apart across the spring change in Paris.
        let utc_daily = CronSchedule::parse("0 2 * * *", "UTC").unwrap();
        assert_eq!(utc_daily.starts_within(chrono::Duration::minutes(23 * 60 + 30), from), None);
        let paris_daily = CronSchedule::parse("30 3 * * *", "Europe/Paris").unwrap();
        let (a, b) =
            paris_daily.starts_within(chrono::Duration::minutes(23 * 60 + 30), from).expect("the spring change");
        assert_eq!(b - a, hours(23));
        assert_eq!(a, utc(2027, 3, 27, 2, 30), "03:30 CET on the Saturday before the change");
    }

    #[test]
    fn starts_within_walks_at_most_max_starts() {
        // The worst case: a cron firing every two minutes and a window that always fits; a
        // year would be 263,520 starts.
        let s = CronSchedule::parse("*/2 * * * *", "Europe/Paris").unwrap();
        let started = std::time::Instant::now();
        assert_eq!(s.starts_within(chrono::Duration::seconds(90), utc(2026, 11, 29, 12, 0)), None);
        println!("{MAX_STARTS_WALKED} starts every 2 minutes walked in {:?}", started.elapsed());
        // Hourly: a whole year is walked, and its gaps found where they are.
        let hourly = CronSchedule::parse("0 * * * *", "Europe/Paris").unwrap();
        let started = std::time::Instant::now();
        assert_eq!(hourly.starts_within(chrono::Duration::minutes(59), utc(2026, 11, 29, 12, 0)), None);
        println!("a year of hourly starts walked in {:?}", started.elapsed());
        // Rare starts are walked a year ahead: the first is 2027-11-28, its gap still found.
        let late = CronSchedule::parse("0,1 0 28 11 *", "UTC").unwrap();
        assert_eq!(
            late.starts_within(chrono::Duration::minutes(1), utc(2026, 11, 29, 12, 0)),
            Some((utc(2027, 11, 28, 0, 0), utc(2027, 11, 28, 0, 1)))
        );
    }

    #[test]
    fn one_off_window() {
        let (a, b) = (utc(2026, 12, 1, 0, 0), utc(2026, 12, 1, 1, 0));
        assert_eq!(one_off(a, b, utc(2026, 11, 30, 0, 0)).next_start, Some(a));
        assert!(one_off(a, b, a).current.is_some());
        let after = one_off(a, b, b);
        assert!(after.current.is_none() && after.next_start.is_none());
        assert_eq!(after.previous, Some(Window { start: a, end: b }));
    }
}
