//! The reconcile's IO against a mocked API server: the status write when a window opens or
//! closes, the Event after it, and nothing written when nothing changed.
use std::sync::Arc;

use chrono::{DateTime, Duration as TimeDelta, DurationRound, Utc};
use http::Method;
use kube::runtime::controller::Action;

use super::reconcile;
use crate::api::{
    ColonyServer, ColonyServerSpec, LocalObjectReference, MaintenanceWindow, MaintenanceWindowSpec,
    MaintenanceWindowStatus, WindowBounds, WindowPhase, WindowSchedule,
};
use crate::runtime::Error;
use crate::runtime::testing::{self, ApiServer, Reply, Seen};

const WINDOW: &str = "/apis/colony.zyeute.io/v1alpha1/namespaces/colony/maintenancewindows/nightly";
const STATUS: &str = "/apis/colony.zyeute.io/v1alpha1/namespaces/colony/maintenancewindows/nightly/status";
const SERVER: &str = "/apis/colony.zyeute.io/v1alpha1/namespaces/colony/colonyservers/prod";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/colony/events";

fn now() -> DateTime<Utc> {
    Utc::now().duration_trunc(TimeDelta::seconds(1)).unwrap()
}

/// A one-off window from `start` to `end`.
fn window(start: DateTime<Utc>, end: DateTime<Utc>, status: Option<MaintenanceWindowStatus>) -> MaintenanceWindow {
    let spec = MaintenanceWindowSpec {
        schedule: WindowSchedule { start: Some(start), end: Some(end), ..Default::default() },
        colony_server_ref: LocalObjectReference::new("prod"),
        finance_bees: None,
        actions: Default::default(),
        verify: Default::default(),
        suspend: false,
    };
    let mut mw = MaintenanceWindow::new("nightly", spec);
    mw.metadata.namespace = Some("colony".into());
    mw.metadata.uid = Some("mw-uid".into());
    mw.status = status;
    mw
}

/// A ColonyServer with no status yet (its health unknown).
fn server() -> ColonyServer {
    let mut cs = ColonyServer::new("prod", ColonyServerSpec::default());
    cs.metadata.namespace = Some("colony".into());
    cs
}

fn written(mw: &MaintenanceWindow, patch: &Seen) -> MaintenanceWindow {
    let mut out = mw.clone();
    out.status = Some(serde_json::from_value(patch.body["status"].clone()).expect("a MaintenanceWindowStatus"));
    out
}

fn status_of(patch: &Seen) -> MaintenanceWindowStatus {
    serde_json::from_value(patch.body["status"].clone()).expect("a MaintenanceWindowStatus")
}

fn is_true(status: &MaintenanceWindowStatus, type_: &str) -> bool {
    crate::runtime::conditions::is_true(&status.conditions, type_)
}

/// Reads the window and its server, then takes the status patch and accepts it.
async fn reads_then_status(api: &mut ApiServer, mw: &MaintenanceWindow) -> Seen {
    api.expect(Method::GET, WINDOW, Reply::ok(mw)).await;
    api.expect(Method::GET, SERVER, Reply::ok(&server())).await;
    let (patch, pending) = api.receive(Method::PATCH, STATUS).await;
    pending.reply(Reply::ok(&written(mw, &patch)));
    patch
}

/// A window whose time has come: status says Active with its bounds (server-side apply,
/// the controller's field manager, forced), then one Event announces the opening.
#[tokio::test]
async fn an_opening_window_writes_active_status_then_announces_it() {
    let (ctx, mut api) = testing::context();
    let (start, end) = (now() - TimeDelta::minutes(10), now() + TimeDelta::minutes(50));
    let mw = window(start, end, None);
    let run = tokio::spawn(reconcile(Arc::new(mw.clone()), ctx));
    let patch = reads_then_status(&mut api, &mw).await;
    let event = api.expect(Method::POST, EVENTS, Reply::Echo).await;
    let action = api.finish(run).await.expect("the reconcile succeeds");
    api.done().await;

    assert_eq!(patch.param("fieldManager").as_deref(), Some("colony-operator/maintenancewindow"));
    assert_eq!(patch.param("force").as_deref(), Some("true"));
    assert_eq!(
        (&patch.body["kind"], &patch.body["apiVersion"]),
        (&"MaintenanceWindow".into(), &"colony.zyeute.io/v1alpha1".into())
    );
    let status = status_of(&patch);
    assert_eq!(status.phase, Some(WindowPhase::Active));
    assert_eq!(status.current_window, Some(WindowBounds { start, end }));
    assert!(is_true(&status, "Active") && is_true(&status, "Ready"));
    assert_eq!((&event.body["type"], &event.body["reason"]), (&"Normal".into(), &"WindowOpened".into()));
    // Back at the window's end (about 50 minutes), not after the hourly look.
    assert_ne!(action, Action::await_change());
    assert_ne!(action, Action::requeue(std::time::Duration::from_secs(3600)));
}

/// A window that has ended: status goes to Verifying (Reconciling while the server's health
/// is unknown), then one Event announces the close.
#[tokio::test]
async fn a_closed_window_goes_to_verifying_and_announces_the_close() {
    let (ctx, mut api) = testing::context();
    let (start, end) = (now() - TimeDelta::hours(2), now() - TimeDelta::minutes(1));
    let open = MaintenanceWindowStatus {
        phase: Some(WindowPhase::Active),
        current_window: Some(WindowBounds { start, end }),
        ..Default::default()
    };
    let mw = window(start, end, Some(open));
    let run = tokio::spawn(reconcile(Arc::new(mw.clone()), ctx));
    let patch = reads_then_status(&mut api, &mw).await;
    let event = api.expect(Method::POST, EVENTS, Reply::Echo).await;
    api.finish(run).await.expect("the reconcile succeeds");
    api.done().await;

    let status = status_of(&patch);
    assert_eq!(status.phase, Some(WindowPhase::Verifying));
    assert_eq!(status.current_window, Some(WindowBounds { start, end }), "the window being verified");
    assert!(!is_true(&status, "Active") && is_true(&status, "Reconciling"));
    assert_eq!(event.body["reason"], "WindowClosed");
    assert!(event.body["note"].as_str().unwrap().contains("Active) -> Verifying"), "{}", event.body["note"]);
}

/// The status write fails: the reconcile fails and the opening is not announced (the next
/// attempt announces it once the write succeeds).
#[tokio::test]
async fn a_failed_status_write_fails_the_reconcile_and_announces_nothing() {
    let (ctx, mut api) = testing::context();
    let mw = window(now() - TimeDelta::minutes(10), now() + TimeDelta::minutes(50), None);
    let run = tokio::spawn(reconcile(Arc::new(mw.clone()), ctx));
    api.expect(Method::GET, WINDOW, Reply::ok(&mw)).await;
    api.expect(Method::GET, SERVER, Reply::ok(&server())).await;
    api.expect(Method::PATCH, STATUS, Reply::Error(500, "InternalError")).await;
    let result = api.finish(run).await;
    api.done().await;
    assert!(matches!(result, Err(Error::Kube(kube::Error::Api(ref s))) if s.code == 500), "{result:?}");
}

/// The next reconcile of an open window whose status is written reads and writes nothing.
#[tokio::test]
async fn an_open_window_with_its_status_written_writes_nothing() {
    let (ctx, mut api) = testing::context();
    let mw = window(now() - TimeDelta::minutes(10), now() + TimeDelta::minutes(50), None);
    let run = tokio::spawn(reconcile(Arc::new(mw.clone()), ctx));
    let patch = reads_then_status(&mut api, &mw).await;
    api.expect(Method::POST, EVENTS, Reply::Echo).await;
    api.finish(run).await.expect("the reconcile succeeds");
    api.done().await;

    let (ctx, mut api) = testing::context();
    let mw = written(&mw, &patch);
    let run = tokio::spawn(reconcile(Arc::new(mw.clone()), ctx));
    api.expect(Method::GET, WINDOW, Reply::ok(&mw)).await;
    api.expect(Method::GET, SERVER, Reply::ok(&server())).await;
    api.finish(run).await.expect("the reconcile succeeds");
    api.done().await;
}
