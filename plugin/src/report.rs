//! `kubectl colony status`: a summary of the four kinds built from their typed values (pure),
//! serialized as-is for `-o json|yaml` and rendered as tables for `-o table`.
use chrono::{DateTime, Utc};
use colony_operator::api::{
    ColonyServer, ESCALATED, EscalationState, FALLBACK_ACTIVE, FallbackOverride, FinanceBee, HEALTHY, KeyRotation,
    MaintenanceWindow, READY, ROLLED_BACK, RotationPhase, STALLED, WindowPhase,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use serde::Serialize;

/// The whole report. Field names are part of the plugin's interface: scripts read them.
#[derive(Serialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub servers: Vec<ServerSummary>,
    pub bees: Vec<BeeSummary>,
    pub keys: Vec<KeySummary>,
    pub windows: Vec<WindowSummary>,
}

/// A condition's status: `True`, `False`, `Unknown`, or absent (`None`, serialized as null).
pub type ConditionStatus = Option<String>;

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServerSummary {
    pub namespace: String,
    pub name: String,
    pub ready: ConditionStatus,
    pub healthy: ConditionStatus,
    /// Whether the direct-processing fallback is on (status.fallback, else the condition);
    /// `None` until the operator has reported it.
    pub fallback: Option<bool>,
    pub fallback_since: Option<DateTime<Utc>>,
    pub fallback_reason: Option<String>,
    /// The `colony.zyeute.io/fallback` annotation as set on the object (`auto` when absent;
    /// the raw value when it is not one the operator accepts).
    pub fallback_override: String,
    /// Flip notifications recorded and not delivered yet (`status.fallback.pendingNotifications`):
    /// the webhook has not taken them, or the operator has not sent them since it started.
    pub pending_notifications: usize,
    /// When the oldest of them flipped.
    pub pending_since: Option<DateTime<Utc>>,
    pub slo: Option<SloSummary>,
    pub image: Option<String>,
    pub rolled_back: bool,
    /// Reason of the Stalled condition while it is true.
    pub stalled: Option<String>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SloSummary {
    pub breached: bool,
    pub since: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    pub queue_depth: Option<i64>,
    pub completion_rate: Option<f64>,
    pub error_rate: Option<f64>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BeeSummary {
    pub namespace: String,
    pub name: String,
    pub ready: ConditionStatus,
    pub server: String,
    pub desired_replicas: i32,
    pub available_replicas: Option<i32>,
    /// Restarts by the operator in the current restart window.
    pub restarts: i32,
    pub restart_window_start: Option<DateTime<Utc>>,
    pub escalated: bool,
    pub escalated_since: Option<DateTime<Utc>>,
    pub suspended: bool,
    pub stalled: Option<String>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeySummary {
    pub namespace: String,
    pub name: String,
    pub ready: ConditionStatus,
    pub revision: i64,
    pub last_rotation: Option<DateTime<Utc>>,
    pub next_rotation: Option<DateTime<Utc>>,
    pub phase: Option<RotationPhase>,
    /// The ColonyOS identity the key is registered as (`executor`, `user`, ...); `None` when
    /// the key is only replaced in its Secret.
    pub registration: Option<String>,
    pub current_key_id: Option<String>,
    pub pending_targets: Vec<String>,
    pub stalled: Option<String>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WindowSummary {
    pub namespace: String,
    pub name: String,
    pub ready: ConditionStatus,
    pub server: String,
    pub phase: Option<WindowPhase>,
    pub next_start: Option<DateTime<Utc>>,
    pub current_end: Option<DateTime<Utc>>,
    pub stalled: Option<String>,
}

pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

fn status_of(conditions: &[Condition], type_: &str) -> ConditionStatus {
    condition(conditions, type_).map(|c| c.status.clone())
}

fn is_true(conditions: &[Condition], type_: &str) -> bool {
    condition(conditions, type_).is_some_and(|c| c.status == "True")
}

fn stalled(conditions: &[Condition]) -> Option<String> {
    condition(conditions, STALLED).filter(|c| c.status == "True").map(|c| c.reason.clone())
}

pub fn server_summary(cs: &ColonyServer) -> ServerSummary {
    let status = cs.status.clone().unwrap_or_default();
    let conditions = &status.conditions;
    let fallback_override = match FallbackOverride::from_annotations(Some(cs.annotations())) {
        Ok(o) => o.as_str().to_string(),
        Err(e) => e.0,
    };
    ServerSummary {
        namespace: cs.namespace().unwrap_or_default(),
        name: cs.name_any(),
        ready: status_of(conditions, READY),
        healthy: status_of(conditions, HEALTHY),
        fallback: status
            .fallback
            .as_ref()
            .map(|f| f.active)
            .or_else(|| condition(conditions, FALLBACK_ACTIVE).map(|c| c.status == "True")),
        fallback_since: status.fallback.as_ref().and_then(|f| f.since),
        fallback_reason: status.fallback.as_ref().and_then(|f| f.reason.clone()),
        fallback_override,
        pending_notifications: status.fallback.as_ref().map_or(0, |f| f.pending_notifications.len()),
        pending_since: status.fallback.as_ref().and_then(|f| f.pending_notifications.first()).map(|n| n.at),
        slo: status.slo.map(|s| SloSummary {
            breached: s.breached,
            since: s.since,
            reason: s.reason,
            queue_depth: s.queue_depth,
            completion_rate: s.completion_rate,
            error_rate: s.error_rate,
        }),
        image: status.rollout.current_image.clone().or_else(|| cs.spec.image.clone()),
        rolled_back: is_true(conditions, ROLLED_BACK),
        stalled: stalled(conditions),
    }
}

pub fn bee_summary(fb: &FinanceBee) -> BeeSummary {
    let status = fb.status.clone().unwrap_or_default();
    let conditions = &status.conditions;
    let escalation = status.escalation.filter(|e| e.state == EscalationState::Triggered);
    BeeSummary {
        namespace: fb.namespace().unwrap_or_default(),
        name: fb.name_any(),
        ready: status_of(conditions, READY),
        server: fb.spec.colony_server_ref.name.clone(),
        desired_replicas: fb.spec.replicas,
        available_replicas: status.ready_replicas,
        restarts: status.restarts.as_ref().map_or(0, |r| r.count),
        restart_window_start: status.restarts.as_ref().and_then(|r| r.window_start),
        escalated: escalation.is_some() || is_true(conditions, ESCALATED),
        escalated_since: escalation.map(|e| e.since),
        suspended: fb.spec.suspend,
        stalled: stalled(conditions),
    }
}

pub fn key_summary(kr: &KeyRotation) -> KeySummary {
    let status = kr.status.clone().unwrap_or_default();
    let registration = kr
        .spec
        .colony_os
        .as_ref()
        .and_then(|r| serde_json::to_value(r.identity).ok())
        .and_then(|v| v.as_str().map(str::to_string));
    KeySummary {
        namespace: kr.namespace().unwrap_or_default(),
        name: kr.name_any(),
        ready: status_of(&status.conditions, READY),
        revision: status.revision,
        last_rotation: status.last_rotation_time,
        next_rotation: status.next_rotation_time,
        phase: status.phase,
        registration,
        current_key_id: status.current_key_id,
        pending_targets: status.targets.map(|t| t.pending).unwrap_or_default(),
        stalled: stalled(&status.conditions),
    }
}

pub fn window_summary(mw: &MaintenanceWindow) -> WindowSummary {
    let status = mw.status.clone().unwrap_or_default();
    WindowSummary {
        namespace: mw.namespace().unwrap_or_default(),
        name: mw.name_any(),
        ready: status_of(&status.conditions, READY),
        server: mw.spec.colony_server_ref.name.clone(),
        phase: status.phase,
        next_start: status.next_start,
        current_end: status.current_window.map(|w| w.end),
        stalled: stalled(&status.conditions),
    }
}

pub fn build_report(
    servers: &[ColonyServer],
    bees: &[FinanceBee],
    keys: &[KeyRotation],
    windows: &[MaintenanceWindow],
) -> StatusReport {
    let mut report = StatusReport {
        servers: servers.iter().map(server_summary).collect(),
        bees: bees.iter().map(bee_summary).collect(),
        keys: keys.iter().map(key_summary).collect(),
        windows: windows.iter().map(window_summary).collect(),
    };
    report.servers.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    report.bees.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    report.keys.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    report.windows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    report
}

// ---- table rendering ----

/// A short age like kubectl's: `45s`, `12m`, `3h`, `2d`; a future time gets `in ` in front.
pub fn age(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    let (future, secs) = if secs < 0 { (true, -secs) } else { (false, secs) };
    let short = match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    };
    if future { format!("in {short}") } else { short }
}

fn cond(s: &ConditionStatus) -> String {
    s.clone().unwrap_or_else(|| "-".into())
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".into(), ToString::to_string)
}

fn when(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    t.map_or_else(|| "-".into(), |t| age(t, now))
}

fn debug_opt<T: std::fmt::Debug>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".into(), |v| format!("{v:?}"))
}

/// Aligned columns, two spaces apart, like `kubectl get`.
pub fn render_columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len() - 1;
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            if i == last {
                out.push_str(&cell);
            } else {
                let pad = widths[i] - cell.chars().count() + 2;
                out.push_str(&cell);
                out.push_str(&" ".repeat(pad));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

fn section(out: &mut String, title: &str, header: &[&str], rows: Vec<Vec<String>>) {
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(&format!("{title}\n"));
    if rows.is_empty() {
        out.push_str("  (none)\n");
    } else {
        out.push_str(&render_columns(header, &rows));
    }
}

fn slo_cell(slo: &Option<SloSummary>) -> String {
    let Some(s) = slo else { return "-".into() };
    let mut parts = vec![if s.breached { "BREACHED".to_string() } else { "ok".to_string() }];
    if let Some(q) = s.queue_depth {
        parts.push(format!("queue={q}"));
    }
    if let Some(c) = s.completion_rate {
        parts.push(format!("done={:.1}%", c * 100.0));
    }
    if let Some(e) = s.error_rate {
        parts.push(format!("err={:.1}%", e * 100.0));
    }
    parts.join(" ")
}

/// The one-screen view. `all_namespaces` adds a NAMESPACE column.
pub fn render_table(report: &StatusReport, now: DateTime<Utc>, all_namespaces: bool) -> String {
    let with_ns = |ns: &str, mut row: Vec<String>| {
        if all_namespaces {
            row.insert(0, ns.to_string());
        }
        row
    };
    let header = |h: &[&'static str]| -> Vec<&'static str> {
        let mut h = h.to_vec();
        if all_namespaces {
            h.insert(0, "NAMESPACE");
        }
        h
    };
    let mut out = String::new();
    let rows = report
        .servers
        .iter()
        .map(|s| {
            let fallback = match (s.fallback, s.fallback_since) {
                (Some(true), Some(t)) => format!("on ({})", age(t, now)),
                (Some(true), None) => "on".into(),
                (Some(false), Some(t)) => format!("off ({})", age(t, now)),
                (Some(false), None) => "off".into(),
                (None, _) => "-".into(),
            };
            let fallback = match (s.fallback_override.as_str(), &s.fallback_reason) {
                ("auto", Some(r)) => format!("{fallback} {r}"),
                ("auto", None) => fallback,
                (o, _) => format!("{fallback} override={o}"),
            };
            let fallback = match (s.pending_notifications, s.pending_since) {
                (0, _) => fallback,
                (n, Some(t)) => format!("{fallback}, {n} notification(s) unsent for {}", age(t, now)),
                (n, None) => format!("{fallback}, {n} notification(s) unsent"),
            };
            with_ns(
                &s.namespace,
                vec![
                    s.name.clone(),
                    cond(&s.ready),
                    cond(&s.healthy),
                    fallback,
                    slo_cell(&s.slo),
                    opt(&s.image),
                    if s.rolled_back { "yes".into() } else { "no".into() },
                    opt(&s.stalled),
                ],
            )
        })
        .collect();
    section(
        &mut out,
        "COLONY SERVERS",
        &header(&["NAME", "READY", "HEALTHY", "FALLBACK", "SLO", "IMAGE", "ROLLED-BACK", "STALLED"]),
        rows,
    );
    let rows = report
        .bees
        .iter()
        .map(|b| {
            let escalated = match (b.escalated, b.escalated_since) {
                (true, Some(t)) => format!("yes ({})", age(t, now)),
                (true, None) => "yes".into(),
                (false, _) => "no".into(),
            };
            with_ns(
                &b.namespace,
                vec![
                    b.name.clone(),
                    cond(&b.ready),
                    b.server.clone(),
                    format!("{}/{}", b.available_replicas.unwrap_or(0), b.desired_replicas),
                    b.restarts.to_string(),
                    escalated,
                    if b.suspended { "yes".into() } else { "no".into() },
                    opt(&b.stalled),
                ],
            )
        })
        .collect();
    section(
        &mut out,
        "FINANCE BEES",
        &header(&["NAME", "READY", "SERVER", "AVAILABLE", "RESTARTS", "ESCALATED", "SUSPENDED", "STALLED"]),
        rows,
    );
    let rows = report
        .keys
        .iter()
        .map(|k| {
            with_ns(
                &k.namespace,
                vec![
                    k.name.clone(),
                    cond(&k.ready),
                    k.revision.to_string(),
                    when(k.last_rotation, now),
                    when(k.next_rotation, now),
                    debug_opt(&k.phase),
                    opt(&k.registration),
                    opt(&k.stalled),
                ],
            )
        })
        .collect();
    section(
        &mut out,
        "KEY ROTATIONS",
        &header(&["NAME", "READY", "REVISION", "LAST", "NEXT", "PHASE", "REGISTERED-AS", "STALLED"]),
        rows,
    );
    let rows = report
        .windows
        .iter()
        .map(|w| {
            with_ns(
                &w.namespace,
                vec![
                    w.name.clone(),
                    cond(&w.ready),
                    w.server.clone(),
                    debug_opt(&w.phase),
                    when(w.next_start, now),
                    when(w.current_end, now),
                    opt(&w.stalled),
                ],
            )
        })
        .collect();
    section(
        &mut out,
        "MAINTENANCE WINDOWS",
        &header(&["NAME", "READY", "SERVER", "PHASE", "NEXT-START", "ENDS", "STALLED"]),
        rows,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use colony_operator::api::{
        ColonyServerSpec, ColonyServerStatus, FALLBACK_ANNOTATION, FallbackStatus, KeyRotationStatus,
        PendingNotification, RolloutStatus, SloStatus,
    };

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn condition(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
            observed_generation: None,
        }
    }

    fn server() -> ColonyServer {
        let mut cs = ColonyServer::new(
            "prod",
            ColonyServerSpec { image: Some("colonyos/colonies:v1.9.12".into()), ..Default::default() },
        );
        cs.metadata.namespace = Some("colony".into());
        cs.status = Some(ColonyServerStatus {
            conditions: vec![
                condition(READY, "False", "Unhealthy"),
                condition(HEALTHY, "False", "ProbeFailed"),
                condition(FALLBACK_ACTIVE, "True", "HealthCheckFailed"),
            ],
            rollout: RolloutStatus { current_image: Some("colonyos/colonies:v1.9.11".into()), ..Default::default() },
            fallback: Some(FallbackStatus {
                active: true,
                since: Some(t("2026-11-29T13:40:00Z")),
                reason: Some("HealthCheckFailed".into()),
                ..Default::default()
            }),
            slo: Some(SloStatus {
                breached: true,
                queue_depth: Some(14),
                completion_rate: Some(0.95),
                ..Default::default()
            }),
            ..Default::default()
        });
        cs
    }

    #[test]
    fn server_summary_reads_status_and_annotation() {
        let mut cs = server();
        let s = server_summary(&cs);
        assert_eq!(s.ready.as_deref(), Some("False"));
        assert_eq!(s.fallback, Some(true));
        assert_eq!(s.fallback_since, Some(t("2026-11-29T13:40:00Z")));
        assert_eq!(s.fallback_override, "auto");
        assert_eq!(s.image.as_deref(), Some("colonyos/colonies:v1.9.11"), "the deployed image, not spec");
        assert_eq!(s.slo.as_ref().unwrap().queue_depth, Some(14));
        let unreported = ColonyServer::new("new", cs.spec.clone());
        assert_eq!(server_summary(&unreported).fallback, None, "not reported yet is not off");
        cs.annotations_mut().insert(FALLBACK_ANNOTATION.into(), "ON".into());
        assert_eq!(server_summary(&cs).fallback_override, "on");
        cs.annotations_mut().insert(FALLBACK_ANNOTATION.into(), "maybe".into());
        assert_eq!(server_summary(&cs).fallback_override, "maybe", "shown as set, not guessed");
    }

    #[test]
    fn json_field_names_are_stable() {
        let report = build_report(&[server()], &[], &[], &[]);
        let v = serde_json::to_value(&report).unwrap();
        let s = &v["servers"][0];
        assert_eq!(s["name"], "prod");
        assert_eq!(s["namespace"], "colony");
        assert_eq!(s["fallback"], true);
        assert_eq!(s["fallbackSince"], "2026-11-29T13:40:00Z");
        assert_eq!(s["fallbackOverride"], "auto");
        assert_eq!(s["slo"]["queueDepth"], 14);
        assert_eq!(s["rolledBack"], false);
        assert_eq!(s["pendingNotifications"], 0);
        assert_eq!(v["bees"], serde_json::json!([]));
    }

    #[test]
    fn bee_key_and_window_summaries() {
        use colony_operator::api::{
            EscalationStatus, FinanceBeeStatus, MaintenanceWindowStatus, RestartStatus, WindowBounds,
        };
        let mut fb: FinanceBee = serde_json::from_value(serde_json::json!({
            "apiVersion": "colony.zyeute.io/v1alpha1", "kind": "FinanceBee",
            "metadata": { "name": "bee", "namespace": "colony" },
            "spec": { "image": "bee:1", "replicas": 2, "colonyServerRef": { "name": "prod" }, "colonyName": "z",
                      "executorKeySecretRef": { "name": "k", "key": "prvkey" } }
        }))
        .unwrap();
        let b = bee_summary(&fb);
        assert_eq!((b.available_replicas, b.desired_replicas, b.restarts, b.escalated), (None, 2, 0, false));
        fb.status = Some(FinanceBeeStatus {
            ready_replicas: Some(1),
            restarts: Some(RestartStatus { count: 3, window_start: Some(t("2026-11-29T13:30:00Z")), last: None }),
            escalation: Some(EscalationStatus::new(EscalationState::Triggered, t("2026-11-29T13:45:00Z"))),
            ..Default::default()
        });
        let b = bee_summary(&fb);
        assert_eq!((b.available_replicas, b.restarts, b.escalated), (Some(1), 3, true));
        assert_eq!(b.escalated_since, Some(t("2026-11-29T13:45:00Z")));
        assert_eq!(b.server, "prod");
        fb.status.as_mut().unwrap().escalation.as_mut().unwrap().state = EscalationState::Resolved;
        assert!(!bee_summary(&fb).escalated, "a resolved escalation is not escalated");

        let kr: KeyRotation = serde_json::from_value(serde_json::json!({
            "apiVersion": "colony.zyeute.io/v1alpha1", "kind": "KeyRotation",
            "metadata": { "name": "bee-key", "namespace": "colony" },
            "spec": { "interval": "720h", "secretName": "bee-key",
                      "colonyOS": { "colonyServerRef": { "name": "prod" }, "identity": "executor", "colonyName": "z" } },
            "status": { "revision": 2, "phase": "Registering",
                        "conditions": [{ "type": "Stalled", "status": "True", "reason": "RegistrationFailed",
                                         "message": "m", "lastTransitionTime": "2026-11-29T13:00:00Z" }] }
        }))
        .unwrap();
        let k = key_summary(&kr);
        assert_eq!(
            (k.revision, k.phase, k.registration.as_deref()),
            (2, Some(RotationPhase::Registering), Some("executor"))
        );
        assert_eq!(k.stalled.as_deref(), Some("RegistrationFailed"));

        let mut mw = MaintenanceWindow::new(
            "now",
            crate::decide::one_off_window(
                "now",
                "prod",
                t("2026-11-29T14:00:00Z"),
                std::time::Duration::from_secs(3600),
                false,
            )
            .unwrap()
            .spec,
        );
        mw.status = Some(MaintenanceWindowStatus {
            phase: Some(WindowPhase::Active),
            current_window: Some(WindowBounds { start: t("2026-11-29T14:00:00Z"), end: t("2026-11-29T15:00:00Z") }),
            ..Default::default()
        });
        let w = window_summary(&mw);
        assert_eq!(
            (w.phase, w.current_end, w.server.as_str()),
            (Some(WindowPhase::Active), Some(t("2026-11-29T15:00:00Z")), "prod")
        );
        let table = render_table(&build_report(&[], &[fb], &[kr], &[mw]), t("2026-11-29T14:10:00Z"), false);
        assert!(table.lines().any(|l| l.starts_with("bee ") && l.contains("1/2") && l.contains(" 3 ")), "{table}");
        assert!(
            table.lines().any(|l| l.starts_with("now ") && l.contains("Active") && l.contains("in 50m")),
            "{table}"
        );
    }

    #[test]
    fn ages_read_like_kubectl() {
        let now = t("2026-11-29T14:00:00Z");
        assert_eq!(age(t("2026-11-29T13:59:15Z"), now), "45s");
        assert_eq!(age(t("2026-11-29T13:40:00Z"), now), "20m");
        assert_eq!(age(t("2026-11-29T09:00:00Z"), now), "5h");
        assert_eq!(age(t("2026-11-25T14:00:00Z"), now), "4d");
        assert_eq!(age(t("2026-11-29T15:00:00Z"), now), "in 60m");
    }

    #[test]
    fn columns_are_aligned() {
        let out = render_columns(&["NAME", "READY"], &[vec!["a-long-name".into(), "True".into()]]);
        assert_eq!(out, "NAME         READY\na-long-name  True\n");
    }

    #[test]
    fn table_shows_each_section() {
        let now = t("2026-11-29T14:00:00Z");
        let mut kr = KeyRotation::new("bee-key", serde_yaml::from_str("interval: 720h\nsecretName: bee-key").unwrap());
        kr.metadata.namespace = Some("colony".into());
        kr.status = Some(KeyRotationStatus {
            revision: 3,
            next_rotation_time: Some(t("2026-12-01T14:00:00Z")),
            ..Default::default()
        });
        let report = build_report(&[server()], &[], &[kr], &[]);
        let out = render_table(&report, now, false);
        let server_line = out.lines().find(|l| l.starts_with("prod")).unwrap();
        assert!(server_line.contains("on (20m) HealthCheckFailed "), "{out}");
        assert!(!server_line.contains("unsent"), "nothing pending, nothing said: {out}");
        assert!(server_line.contains("BREACHED queue=14 done=95.0%"), "{out}");
        assert!(server_line.contains("colonyos/colonies:v1.9.11"), "{out}");
        let key_line = out.lines().find(|l| l.starts_with("bee-key")).unwrap();
        assert!(key_line.contains(" 3 ") && key_line.contains("in 2d"), "{out}");
        assert!(out.contains("FINANCE BEES\n  (none)\n"), "{out}");
        let mut unsent = server();
        let fallback = unsent.status.as_mut().unwrap().fallback.as_mut().unwrap();
        fallback.pending_notifications = vec![PendingNotification {
            at: t("2026-11-29T13:40:00Z"),
            state: "on".into(),
            reason: "HealthCheckFailed".into(),
        }];
        let out = render_table(&build_report(&[unsent], &[], &[], &[]), now, false);
        assert!(out.contains("on (20m) HealthCheckFailed, 1 notification(s) unsent for 20m"), "{out}");
        let all = render_table(&report, now, true);
        assert!(all.lines().any(|l| l.starts_with("colony") && l.contains("prod")), "{all}");
    }
}
