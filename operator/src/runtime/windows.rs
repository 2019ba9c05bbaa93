//! The one view of MaintenanceWindows: a cache fed by the MaintenanceWindow controller's own
//! watch, and that watch's events, fanned out to the controllers whose objects a window
//! changes (servers keep their fallback on, bees stop, rotations wait). No controller lists or
//! gets windows from the API server; each asks [`WindowView`], and the rule it applies is
//! [`windows_demanding`], next to the type.
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::watcher;
use tokio::sync::broadcast;

use super::error::Result;
use crate::api::{MaintenanceWindow, WindowDemand, windows_demanding};

/// One event of the MaintenanceWindow watch.
pub type WindowEvent = watcher::Event<MaintenanceWindow>;

/// Events buffered for each subscriber; one that falls further behind is told so (a gap)
/// and treats every window as changed.
const BUFFER: usize = 1024;

/// What every controller reads about MaintenanceWindows (cheap to clone).
#[derive(Clone)]
pub struct WindowView {
    store: Store<MaintenanceWindow>,
    events: broadcast::Sender<Arc<WindowEvent>>,
}

/// The writing end of the view, for the MaintenanceWindow controller's watch.
pub struct WindowFeed {
    writer: Writer<MaintenanceWindow>,
    events: broadcast::Sender<Arc<WindowEvent>>,
}

/// An empty view and the feed that fills it.
pub fn view() -> (WindowView, WindowFeed) {
    let writer = Writer::default();
    let (events, _) = broadcast::channel(BUFFER);
    (WindowView { store: writer.as_reader(), events: events.clone() }, WindowFeed { writer, events })
}

impl WindowView {
    /// Waits until the cache holds the initial list: before that, "no window" is unknown and
    /// nothing may be decided from it (a fallback turned off at start-up in the middle of a
    /// maintenance window). Gives up after [`READY_WAIT`](super::watch::READY_WAIT) with an error, so that a watch that
    /// cannot list windows (RBAC, a missing CRD) shows as failing reconciles, not as silence.
    pub async fn ready(&self) -> Result<()> {
        super::watch::store_ready(&self.store, "MaintenanceWindows").await
    }

    /// Names (sorted) of the windows in `namespace` that target `server` and demand `demand`.
    pub fn demanding(&self, namespace: &str, server: &str, demand: WindowDemand<'_>) -> Vec<String> {
        let all = self.store.state();
        let here = all.iter().map(Arc::as_ref).filter(|w| w.namespace().as_deref() == Some(namespace));
        windows_demanding(here, server, demand)
    }

    /// The window `namespace/name`, if it exists.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<MaintenanceWindow>> {
        self.store.get(&ObjectRef::new(name).within(namespace))
    }

    /// Every window in the cache.
    pub fn all(&self) -> Vec<Arc<MaintenanceWindow>> {
        self.store.state()
    }

    /// The watch's events from this call on (subscribe when the controller is built, before
    /// the watch starts); `None` marks a gap, after which everything may have changed.
    pub fn events(&self) -> impl Stream<Item = Option<Arc<WindowEvent>>> + Send + 'static {
        futures::stream::unfold(self.events.subscribe(), |mut rx| async move {
            match rx.recv().await {
                Ok(event) => Some((Some(event), rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => Some((None, rx)),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
    }

    /// [`WindowView::events`] as object references of kind `K`: `refs` names the objects an
    /// event's window concerns; after a gap, those of every cached window.
    pub fn triggers<K, F>(&self, refs: F) -> impl Stream<Item = ObjectRef<K>> + Send + 'static
    where
        K: kube::Resource<DynamicType = ()> + 'static,
        F: Fn(&MaintenanceWindow) -> Vec<ObjectRef<K>> + Send + 'static,
    {
        let view = self.clone();
        self.events().flat_map(move |event| {
            let out = match event.as_deref() {
                Some(watcher::Event::Apply(w) | watcher::Event::InitApply(w) | watcher::Event::Delete(w)) => refs(w),
                Some(watcher::Event::Init | watcher::Event::InitDone) => Vec::new(),
                None => view.all().iter().flat_map(|w| refs(w)).collect(),
            };
            futures::stream::iter(out)
        })
    }
}

impl WindowFeed {
    /// Splits the feed: the cache's writer, and what hands each applied event to the view's
    /// subscribers.
    pub fn into_parts(self) -> (Writer<MaintenanceWindow>, impl Fn(&WindowEvent) + Send + 'static) {
        let events = self.events;
        (self.writer, move |event: &WindowEvent| {
            // No subscriber is no error: nothing needs telling.
            let _ = events.send(Arc::new(event.clone()));
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{MaintenanceWindowStatus, WindowPhase};

    fn window(ns: &str, name: &str, server: &str, phase: WindowPhase) -> MaintenanceWindow {
        let spec = serde_yaml::from_str(&format!(
            "schedule: {{cron: '0 2 * * 0', duration: 1h}}\ncolonyServerRef: {{name: {server}}}\n"
        ))
        .unwrap();
        let mut mw = MaintenanceWindow::new(name, spec);
        mw.metadata.namespace = Some(ns.into());
        mw.status = Some(MaintenanceWindowStatus { phase: Some(phase), ..Default::default() });
        mw
    }

    #[tokio::test]
    async fn the_view_answers_from_what_the_watch_fed_and_tells_subscribers() {
        let (view, feed) = view();
        let mut events = Box::pin(view.events());
        let (mut writer, tap) = feed.into_parts();
        let open = window("a", "nightly", "prod", WindowPhase::Active);
        for event in [
            WindowEvent::Init,
            WindowEvent::InitApply(open.clone()),
            WindowEvent::InitApply(window("b", "nightly", "prod", WindowPhase::Active)),
            WindowEvent::InitApply(window("a", "later", "prod", WindowPhase::Scheduled)),
            WindowEvent::InitDone,
        ] {
            writer.apply_watcher_event(&event);
            tap(&event);
        }
        view.ready().await.unwrap();
        assert_eq!(view.demanding("a", "prod", WindowDemand::Fallback), ["nightly"], "namespace b is not a's");
        assert!(view.demanding("a", "staging", WindowDemand::Fallback).is_empty());
        assert!(view.get("a", "later").is_some() && view.get("a", "gone").is_none());
        let gone = WindowEvent::Delete(open);
        writer.apply_watcher_event(&gone);
        tap(&gone);
        assert!(view.demanding("a", "prod", WindowDemand::Fallback).is_empty(), "a deleted window demands nothing");
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(events.next().await.flatten().map(|e| match &*e {
                WindowEvent::Init => "init".to_string(),
                WindowEvent::InitApply(w) => format!("init-apply {}", w.name_any()),
                WindowEvent::InitDone => "init-done".to_string(),
                WindowEvent::Apply(w) => format!("apply {}", w.name_any()),
                WindowEvent::Delete(w) => format!("delete {}", w.name_any()),
            }));
        }
        let seen: Vec<_> = seen.into_iter().flatten().collect();
        assert_eq!(
            seen,
            ["init", "init-apply nightly", "init-apply nightly", "init-apply later", "init-done", "delete nightly"]
        );
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_of_the_gap() {
        let (view, feed) = view();
        let mut events = Box::pin(view.events());
        let (_, tap) = feed.into_parts();
        for _ in 0..=BUFFER {
            tap(&WindowEvent::InitDone);
        }
        assert!(events.next().await.expect("open").is_none(), "a gap, not a silent loss");
        assert!(events.next().await.expect("open").is_some(), "then the newer events");
    }
}
