//! The pure decisions behind the write commands and `explain`: annotation values, the
//! one-off MaintenanceWindow, which kind a name means, and the order conditions are shown in.
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use colony_operator::api::{
    LocalObjectReference, MaintenanceActions, MaintenanceWindow, MaintenanceWindowSpec, READY, RECONCILING, STALLED,
    WindowSchedule,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// Label on what the plugin creates, so it can be told apart from hand-written objects.
pub const CREATED_BY_LABEL: &str = "app.kubernetes.io/created-by";
pub const CREATED_BY: &str = "kubectl-colony";

/// A value for `rotate-now` / `end-now` that the operator has not handled yet: the current
/// time to the nanosecond, made different from `previous` (the value in place) if it
/// happens to be equal.
pub fn fresh_token(now: DateTime<Utc>, previous: Option<&str>) -> String {
    let token = now.to_rfc3339_opts(SecondsFormat::Nanos, true);
    if previous == Some(token.as_str()) { format!("{token}-1") } else { token }
}

/// The kinds `explain` accepts, by kind, plural, singular or short name (any case).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    ColonyServer,
    FinanceBee,
    KeyRotation,
    MaintenanceWindow,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ColonyServer => "ColonyServer",
            Self::FinanceBee => "FinanceBee",
            Self::KeyRotation => "KeyRotation",
            Self::MaintenanceWindow => "MaintenanceWindow",
        }
    }
}

/// Splits `KIND/NAME`; the kind may also be written `colonyservers`, `cs`,
/// `colonyservers.colony.zyeute.io`, ...
pub fn parse_kind_name(s: &str) -> Result<(Kind, String), String> {
    let Some((kind, name)) = s.split_once('/') else {
        return Err(format!("expected KIND/NAME (e.g. colonyserver/prod), got {s:?}"));
    };
    if name.is_empty() || name.contains('/') {
        return Err(format!("expected KIND/NAME (e.g. colonyserver/prod), got {s:?}"));
    }
    let kind = kind.to_ascii_lowercase();
    let kind = kind.strip_suffix(".colony.zyeute.io").unwrap_or(&kind);
    let kind = match kind {
        "colonyserver" | "colonyservers" | "cs" => Kind::ColonyServer,
        "financebee" | "financebees" | "fb" => Kind::FinanceBee,
        "keyrotation" | "keyrotations" | "kr" => Kind::KeyRotation,
        "maintenancewindow" | "maintenancewindows" | "mw" => Kind::MaintenanceWindow,
        other => {
            return Err(format!(
                "unknown kind {other:?}: use colonyserver (cs), financebee (fb), keyrotation (kr) or \
                 maintenancewindow (mw)"
            ));
        }
    };
    Ok((kind, name.to_string()))
}

/// How much a condition explains why an object is not Ready: Stalled (true) first, then
/// Ready=False, then Reconciling (true); `None` for the rest.
fn importance(c: &Condition) -> Option<u8> {
    match (c.type_.as_str(), c.status.as_str()) {
        (STALLED, "True") => Some(0),
        (READY, "False") | (READY, "Unknown") => Some(1),
        (RECONCILING, "True") => Some(2),
        _ => None,
    }
}

/// The conditions that explain a non-Ready object, most important first, then every other
/// condition in the order the operator wrote them.
pub fn conditions_by_importance(conditions: &[Condition]) -> (Vec<&Condition>, Vec<&Condition>) {
    let mut important: Vec<&Condition> = conditions.iter().filter(|c| importance(c).is_some()).collect();
    important.sort_by_key(|c| importance(c));
    let rest = conditions.iter().filter(|c| importance(c).is_none()).collect();
    (important, rest)
}

/// Name of a window started now: `<server>-maint-<yyyymmdd-hhmmss>`.
pub fn window_name(server: &str, now: DateTime<Utc>) -> String {
    format!("{server}-maint-{}", now.format("%Y%m%d-%H%M%S"))
}

/// A one-off MaintenanceWindow of `server` open from `now` (to the second) for `length`:
/// the fallback goes on; the server's FinanceBees are stopped only with `stop_bees`.
pub fn one_off_window(
    name: &str,
    server: &str,
    now: DateTime<Utc>,
    length: Duration,
    stop_bees: bool,
) -> Result<MaintenanceWindow, String> {
    let start = DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
    let length = chrono::Duration::from_std(length).map_err(|_| "--for is too long".to_string())?;
    if length < chrono::Duration::seconds(1) {
        return Err("--for must be at least 1s".into());
    }
    let end = start.checked_add_signed(length).ok_or("--for is too long")?;
    let spec = MaintenanceWindowSpec {
        schedule: WindowSchedule { start: Some(start), end: Some(end), ..Default::default() },
        colony_server_ref: LocalObjectReference::new(server),
        finance_bees: None,
        actions: MaintenanceActions { enable_fallback: true, stop_finance_bees: stop_bees },
        verify: Default::default(),
        suspend: false,
    };
    let mut mw = MaintenanceWindow::new(name, spec);
    mw.metadata.labels = Some([(CREATED_BY_LABEL.to_string(), CREATED_BY.to_string())].into());
    Ok(mw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn c(type_: &str, status: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: format!("{type_}Reason"),
            message: String::new(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
            observed_generation: None,
        }
    }

    #[test]
    fn tokens_are_fresh() {
        let now = t("2026-11-29T14:00:00.123456789Z");
        assert_eq!(fresh_token(now, None), "2026-11-29T14:00:00.123456789Z");
        assert_eq!(fresh_token(now, Some("old")), "2026-11-29T14:00:00.123456789Z");
        assert_eq!(fresh_token(now, Some("2026-11-29T14:00:00.123456789Z")), "2026-11-29T14:00:00.123456789Z-1");
    }

    #[test]
    fn kinds_parse_by_any_name() {
        assert_eq!(parse_kind_name("cs/prod"), Ok((Kind::ColonyServer, "prod".into())));
        assert_eq!(parse_kind_name("FinanceBee/bee"), Ok((Kind::FinanceBee, "bee".into())));
        assert_eq!(parse_kind_name("keyrotations.colony.zyeute.io/k"), Ok((Kind::KeyRotation, "k".into())));
        assert_eq!(parse_kind_name("mw/w"), Ok((Kind::MaintenanceWindow, "w".into())));
        assert!(parse_kind_name("prod").unwrap_err().contains("KIND/NAME"));
        assert!(parse_kind_name("cs/").is_err());
        assert!(parse_kind_name("pod/x").unwrap_err().contains("unknown kind \"pod\""));
    }

    #[test]
    fn stalled_comes_before_ready_false_before_reconciling() {
        let conditions = vec![
            c("Healthy", "False"),
            c(RECONCILING, "True"),
            c(READY, "False"),
            c(STALLED, "True"),
            c("FallbackActive", "True"),
        ];
        let (important, rest) = conditions_by_importance(&conditions);
        let types: Vec<_> = important.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [STALLED, READY, RECONCILING]);
        let rest: Vec<_> = rest.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(rest, ["Healthy", "FallbackActive"]);
        let ready = vec![c(READY, "True"), c(STALLED, "False")];
        assert!(conditions_by_importance(&ready).0.is_empty(), "nothing explains a Ready object");
    }

    #[test]
    fn one_off_window_starts_now() {
        let now = t("2026-11-29T14:00:05.9Z");
        let mw = one_off_window("prod-maint-x", "prod", now, Duration::from_secs(3600), false).unwrap();
        assert_eq!(mw.spec.schedule.start, Some(t("2026-11-29T14:00:05Z")));
        assert_eq!(mw.spec.schedule.end, Some(t("2026-11-29T15:00:05Z")));
        assert!(mw.spec.schedule.cron.is_none() && mw.spec.schedule.duration.is_none());
        assert_eq!(mw.spec.colony_server_ref.name, "prod");
        assert!(mw.spec.actions.enable_fallback);
        assert!(!mw.spec.actions.stop_finance_bees);
        assert!(
            one_off_window("w", "prod", now, Duration::from_secs(60), true).unwrap().spec.actions.stop_finance_bees
        );
        assert!(one_off_window("w", "prod", now, Duration::from_millis(10), true).is_err());
        assert_eq!(mw.spec.check(now), Ok(()));
        assert_eq!(window_name("prod", now), "prod-maint-20261129-140005");
    }
}
