//! The reconcile's IO against a mocked API server, for what only its order can show: a flip
//! is announced (Event, metric) only once status records it, and exactly once, and its
//! notification is sent exactly once, whether the status write is refused or its reply is
//! lost on the way (the flip committed).
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::{self, ObjectRef};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::health::Prober;
use super::monitor::Monitor;
use super::outbox::Outbox;
use super::reconcile::{Owned, ServerContext, reconcile};
use crate::api::ColonyServer;
use crate::runtime::notify;
use crate::runtime::testing::{self, ApiServer, Reply, Seen};

const SERVER: &str = "/apis/colony.zyeute.io/v1alpha1/namespaces/colony/colonyservers/srv";
const STATUS: &str = "/apis/colony.zyeute.io/v1alpha1/namespaces/colony/colonyservers/srv/status";
const HOOK_SECRET: &str = "/api/v1/namespaces/colony/secrets/hook";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/colony/events";

/// A webhook receiver: answers 200 and keeps each JSON body.
async fn webhook() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let body = loop {
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= len {
                        break Some(body.to_string());
                    }
                }
            };
            if let Some(body) = body {
                kept.lock().unwrap().push(serde_json::from_str(&body).unwrap_or(Value::Null));
            }
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
        }
    });
    (url, bodies)
}

/// An unmanaged server whose fallback is forced on by the override annotation, notifying on
/// each flip; its health is probed once an hour (no verdict turns during a test).
fn server() -> ColonyServer {
    let mut cs: ColonyServer = serde_yaml::from_str(
        "apiVersion: colony.zyeute.io/v1alpha1\nkind: ColonyServer\nmetadata:\n  name: srv\n  namespace: colony\n  uid: cs-uid\n  resourceVersion: \"1\"\n  generation: 1\n  annotations: {colony.zyeute.io/fallback: \"on\"}\nspec:\n  managed: false\n  endpoint: http://127.0.0.1:9\n  health: {interval: 1h}\n  fallback: {notify: {urlSecretRef: {name: hook, key: url}, retries: 0, backoff: 1s}}\n",
    )
    .unwrap();
    cs.status = None;
    cs
}

/// How the fake API server treats a status write.
#[derive(Clone, Copy, PartialEq)]
enum StatusWrite {
    Accept,
    /// Answered 500 and not stored.
    Refuse,
    /// Stored, but answered 500 (the reply lost in an API server restart).
    LoseReply,
}

/// The cluster as the fake API server holds it, and what was sent to it.
struct Cluster {
    server: ColonyServer,
    hook_url: String,
    status_writes: StatusWrite,
    /// Reasons of the Events posted.
    events: Vec<String>,
    /// Their notes, in the same order.
    notes: Vec<String>,
    /// Status writes received (accepted or not).
    status_patches: usize,
    /// Reads of the server object.
    server_reads: usize,
}

impl Cluster {
    /// The server of [`server`] not reconciled yet, its hook Secret holding `hook_url`.
    fn new(hook_url: String, status_writes: StatusWrite) -> Self {
        Self {
            server: server(),
            hook_url,
            status_writes,
            events: vec![],
            notes: vec![],
            status_patches: 0,
            server_reads: 0,
        }
    }

    fn answer(&mut self, seen: &Seen) -> Reply {
        match (&seen.method, seen.path.as_str()) {
            (&Method::GET, SERVER) => {
                self.server_reads += 1;
                Reply::ok(&self.server)
            }
            (&Method::PATCH, STATUS) => {
                self.status_patches += 1;
                let mut written = self.server.clone();
                written.status = Some(serde_json::from_value(seen.body["status"].clone()).expect("a status"));
                let rv: u64 = written.metadata.resource_version.as_deref().unwrap_or("1").parse().unwrap();
                written.metadata.resource_version = Some((rv + 1).to_string());
                match self.status_writes {
                    StatusWrite::Accept => {
                        self.server = written;
                        Reply::ok(&self.server)
                    }
                    StatusWrite::Refuse => Reply::Error(500, "InternalError"),
                    StatusWrite::LoseReply => {
                        self.server = written;
                        Reply::Error(500, "InternalError")
                    }
                }
            }
            (&Method::GET, HOOK_SECRET) => Reply::ok(&Secret {
                metadata: ObjectMeta {
                    name: Some("hook".into()),
                    namespace: Some("colony".into()),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([("url".to_string(), ByteString(self.hook_url.clone().into_bytes()))])),
                ..Default::default()
            }),
            (&Method::POST, EVENTS) => {
                self.events.push(seen.body["reason"].as_str().unwrap_or("?").to_string());
                self.notes.push(seen.body["note"].as_str().unwrap_or("?").to_string());
                Reply::Echo
            }
            // The fallback ConfigMap: none cached, none there; its write is accepted.
            (&Method::GET, p) if p.starts_with("/api/v1/namespaces/colony/configmaps/") => Reply::not_found(),
            (_, p) if p.starts_with("/api/v1/namespaces/colony/configmaps") => Reply::Echo,
            (m, p) => panic!("unexpected request: {m} {p}"),
        }
    }

    fn pending(&self) -> Vec<String> {
        let f = self.server.status.as_ref().and_then(|s| s.fallback.as_ref());
        f.map(|f| f.pending_notifications.iter().map(|n| n.state.clone()).collect()).unwrap_or_default()
    }
}

struct Harness {
    sctx: Arc<ServerContext>,
    api: ApiServer,
    woken: mpsc::UnboundedReceiver<ObjectRef<ColonyServer>>,
}

fn harness() -> Harness {
    let (base, api) = testing::context();
    let (wake, woken) = mpsc::unbounded_channel();
    let (servers, _) = reflector::store::<ColonyServer>();
    let sctx = Arc::new(ServerContext {
        monitor: Monitor::new(Prober::new().unwrap(), base.metrics.clone(), wake.clone(), servers),
        http: crate::runtime::http::default_client(crate::runtime::http::Purpose::Webhook),
        notifications: notify::Ordered::default(),
        outbox: Outbox::default(),
        wake,
        owned: Owned {
            deployments: reflector::store().0,
            services: reflector::store().0,
            config_maps: reflector::store().0,
        },
        base,
    });
    Harness { sctx, api, woken }
}

impl Harness {
    /// One reconcile of what the cluster holds, every request answered by `cluster`, then the
    /// announcements it queued (Events, notifications) until they are done.
    async fn reconcile(&mut self, cluster: &mut Cluster) -> crate::runtime::Result<()> {
        let cached = cluster.server.clone();
        self.reconcile_from(cluster, cached).await
    }

    /// [`Harness::reconcile`] of `cached`, the server as the watch cache shows it.
    async fn reconcile_from(&mut self, cluster: &mut Cluster, cached: ColonyServer) -> crate::runtime::Result<()> {
        let run = tokio::spawn(reconcile(Arc::new(cached), self.sctx.clone()));
        tokio::pin!(run);
        let result = loop {
            tokio::select! {
                joined = &mut run => break joined.expect("the reconcile panicked"),
                next = self.api.any(Duration::from_secs(5)) => {
                    let (seen, pending) = next.expect("the reconcile neither finished nor made a request");
                    pending.reply(cluster.answer(&seen));
                }
            }
        };
        let drained = self.sctx.notifications.drain(Duration::from_secs(10));
        tokio::pin!(drained);
        loop {
            tokio::select! {
                done = &mut drained => {
                    assert!(done, "the announcements did not finish");
                    break;
                }
                Some((seen, pending)) = self.api.any(Duration::from_secs(10)) => pending.reply(cluster.answer(&seen)),
            }
        }
        result.map(|_| ())
    }

    /// Whether a delivery finishing woke the server's reconcile.
    fn woken(&mut self) -> bool {
        let mut any = false;
        while let Ok(r) = self.woken.try_recv() {
            any |= r.name == "srv";
        }
        any
    }
}

fn states(hooks: &Arc<Mutex<Vec<Value>>>) -> Vec<String> {
    hooks.lock().unwrap().iter().map(|h| h["state"].as_str().unwrap_or("?").to_string()).collect()
}

#[tokio::test]
async fn a_refused_status_write_announces_nothing_and_the_retry_announces_once() {
    let (url, hooks) = webhook().await;
    let mut h = harness();
    let mut cluster = Cluster::new(url, StatusWrite::Refuse);

    assert!(h.reconcile(&mut cluster).await.is_err(), "the refused status write fails the reconcile");
    assert_eq!(cluster.status_patches, 1, "the flip was decided and written");
    assert_eq!((cluster.events.len(), states(&hooks).len()), (0, 0), "nothing announced for an unrecorded flip");

    cluster.status_writes = StatusWrite::Accept;
    h.reconcile(&mut cluster).await.unwrap();
    assert_eq!(cluster.events, ["FallbackEnabled"]);
    assert_eq!(states(&hooks), ["on"]);
    let body = hooks.lock().unwrap()[0].clone();
    assert_eq!((body["server"].as_str(), body["reason"].as_str()), (Some("srv"), Some("Override")));
    let recorded = cluster.server.status.as_ref().unwrap().fallback.as_ref().unwrap().pending_notifications[0].clone();
    assert_eq!(body["time"].as_str(), Some(recorded.at.to_rfc3339().as_str()), "the flip's time");
    assert_eq!(body["id"].as_str(), Some(format!("cs-uid/{}", recorded.at.to_rfc3339()).as_str()));
    assert_eq!(cluster.pending(), ["on"], "recorded with the flip, until its delivery is seen done");
    assert!(h.woken(), "the finished delivery wakes the server");

    // The wake-up: status drops the delivered notification; nothing is sent again.
    h.reconcile(&mut cluster).await.unwrap();
    assert_eq!(cluster.pending(), Vec::<String>::new());
    assert_eq!(cluster.status_patches, 3);
    // Steady state: a reconcile ran to its end and wrote nothing.
    h.reconcile(&mut cluster).await.unwrap();
    assert_eq!(cluster.status_patches, 3, "no status write when nothing changed");
    assert_eq!((cluster.events.len(), states(&hooks)), (1, vec!["on".to_string()]));
    h.api.done().await;
}

#[tokio::test]
async fn a_status_reply_lost_on_the_way_still_sends_the_notification_once() {
    let (url, hooks) = webhook().await;
    let mut h = harness();
    let mut cluster = Cluster::new(url, StatusWrite::LoseReply);

    assert!(h.reconcile(&mut cluster).await.is_err(), "the lost reply fails the reconcile");
    assert_eq!(cluster.pending(), ["on"], "the flip and its notification were committed");
    assert_eq!(states(&hooks).len(), 0);

    // The retry reads the flip as recorded (no new flip, no status change) and sends what
    // status holds and this process has not sent.
    cluster.status_writes = StatusWrite::Accept;
    h.reconcile(&mut cluster).await.unwrap();
    assert_eq!(cluster.status_patches, 1, "the recorded flip is not decided again");
    assert_eq!(states(&hooks), ["on"]);
    assert!(h.woken());

    h.reconcile(&mut cluster).await.unwrap();
    assert_eq!(cluster.pending(), Vec::<String>::new());
    h.reconcile(&mut cluster).await.unwrap();
    assert_eq!(states(&hooks), ["on"], "exactly one notification");
    assert_eq!(cluster.status_patches, 2);
    h.api.done().await;
}

/// How many flips to `state` the server's `fallback_flips_total` counts.
fn flips_counted(h: &Harness, state: &str) -> u64 {
    let labels =
        crate::runtime::metrics::FlipLabels { namespace: "colony".into(), name: "srv".into(), state: state.into() };
    h.sctx.base.metrics.fallback_flips.get_or_create(&labels).get()
}

#[tokio::test]
async fn a_flip_whose_status_reply_was_lost_is_announced_once_by_the_retry() {
    let (url, _) = webhook().await;
    let mut h = harness();
    let mut cluster = Cluster::new(url, StatusWrite::LoseReply);
    cluster.server.spec.fallback.notify = None;

    assert!(h.reconcile(&mut cluster).await.is_err(), "the lost reply fails the reconcile");
    assert_eq!(cluster.status_patches, 1, "the flip was decided and written");
    assert!(cluster.server.status.as_ref().unwrap().fallback.as_ref().unwrap().active, "and committed");
    assert_eq!((cluster.events.len(), flips_counted(&h, "on")), (0, 0), "not announced without a reply");

    // The retry finds the flip in status, decides no new one, and announces the recorded one.
    cluster.status_writes = StatusWrite::Accept;
    h.reconcile(&mut cluster).await.unwrap();
    assert_eq!(cluster.status_patches, 1, "the recorded flip is not decided again");
    assert_eq!(cluster.events, ["FallbackEnabled"]);
    let since = cluster.server.status.as_ref().unwrap().fallback.as_ref().unwrap().since.unwrap();
    let note = &cluster.notes[0];
    assert!(note.starts_with("USE_COLONY_OS=false (Override: flipped at "), "{note}");
    assert!(note.contains(&since.to_rfc3339()), "the flip's own time: {note}");
    assert!(note.contains("announced late"), "{note}");
    assert_eq!(flips_counted(&h, "on"), 1);

    // Later reconciles (one more turn of the same status) announce nothing more.
    h.reconcile(&mut cluster).await.unwrap();
    assert_eq!((cluster.events.len(), flips_counted(&h, "on")), (1, 1));
    h.api.done().await;
}

#[tokio::test]
async fn a_flip_a_previous_process_recorded_is_not_announced_again() {
    let (url, _) = webhook().await;
    let mut cluster = Cluster::new(url, StatusWrite::Accept);
    cluster.server.spec.fallback.notify = None;
    let mut old = harness();
    old.reconcile(&mut cluster).await.unwrap();
    assert_eq!((cluster.events.clone(), flips_counted(&old, "on")), (vec!["FallbackEnabled".to_string()], 1));

    // A restarted operator (no memory) reconciles the same status: it ran (it read the server)
    // and announced nothing.
    let mut new = harness();
    new.reconcile(&mut cluster).await.unwrap();
    assert_eq!(cluster.server_reads, 2, "the new process reconciled");
    assert_eq!((cluster.events.len(), flips_counted(&new, "on")), (1, 0));
    // Its own next flip (the override turned off) is announced as usual.
    cluster.server.metadata.annotations.as_mut().unwrap().insert("colony.zyeute.io/fallback".into(), "off".into());
    new.reconcile(&mut cluster).await.unwrap();
    assert_eq!(cluster.events, ["FallbackEnabled", "FallbackDisabled"]);
    assert_eq!(flips_counted(&new, "off"), 1);
    new.api.done().await;
}

#[tokio::test]
async fn a_new_leader_sends_what_the_last_one_left_undelivered() {
    let (url, hooks) = webhook().await;
    let mut cluster = Cluster::new(url, StatusWrite::Accept);
    // The previous leader recorded the flip and stopped before its delivery: a process with
    // no memory of it (a new harness) finds it in status.
    let mut old = harness();
    old.sctx.outbox.queued("colony/srv", chrono::Utc::now() + chrono::TimeDelta::hours(1));
    old.reconcile(&mut cluster).await.unwrap();
    assert_eq!((cluster.pending(), states(&hooks).len()), (vec!["on".to_string()], 0));

    let mut new = harness();
    new.reconcile(&mut cluster).await.unwrap();
    assert_eq!(states(&hooks), ["on"]);
    new.reconcile(&mut cluster).await.unwrap();
    assert_eq!(cluster.pending(), Vec::<String>::new());
    new.api.done().await;
}

#[tokio::test]
async fn a_notification_pushed_out_of_a_full_outbox_is_reported_not_sent() {
    use crate::api::{ColonyServerStatus, FallbackStatus};
    use crate::controllers::colonyserver::outbox::{MAX_PENDING, of_flip};
    let (url, hooks) = webhook().await;
    let mut cluster = Cluster::new(url, StatusWrite::Accept);
    // A previous leader left a full outbox (the receiver was down for as many flips); the
    // override now flips the fallback on once more.
    let start = chrono::Utc::now() - chrono::TimeDelta::hours(2);
    let left: Vec<_> = (0..MAX_PENDING as i64)
        .map(|i| of_flip(i % 2 == 0, "Override", start + chrono::TimeDelta::seconds(i)))
        .collect();
    cluster.server.status = Some(ColonyServerStatus {
        fallback: Some(FallbackStatus { active: false, pending_notifications: left.clone(), ..Default::default() }),
        ..Default::default()
    });
    let mut h = harness();
    h.reconcile(&mut cluster).await.unwrap();

    let sent: Vec<String> =
        hooks.lock().unwrap().iter().map(|b| b["time"].as_str().unwrap_or("?").to_string()).collect();
    let mut expected: Vec<String> = left[1..].iter().map(|n| n.at.to_rfc3339()).collect();
    let recorded = cluster.server.status.as_ref().unwrap().fallback.as_ref().unwrap().pending_notifications.clone();
    expected.push(recorded.last().unwrap().at.to_rfc3339());
    assert_eq!(sent, expected, "every notification status still holds is sent in order; the oldest is not");
    assert_eq!(recorded.len(), MAX_PENDING);
    assert_eq!(states(&hooks).last().map(String::as_str), Some("on"), "the new flip's own");
    let labels = crate::runtime::metrics::ObjectLabels { namespace: "colony".into(), name: "srv".into() };
    assert_eq!(
        h.sctx.base.metrics.notifications_failed.get_or_create(&labels).get(),
        1,
        "the dropped one counts as failed"
    );
    let mut events = cluster.events.clone();
    events.sort();
    assert_eq!(events, ["FallbackEnabled", "NotificationFailed"], "the flip's Event, and the drop's");

    // Deliveries done, status lets them go; the drop is not reported again.
    h.reconcile(&mut cluster).await.unwrap();
    assert_eq!(cluster.pending(), Vec::<String>::new());
    h.reconcile(&mut cluster).await.unwrap();
    assert_eq!(h.sctx.base.metrics.notifications_failed.get_or_create(&labels).get(), 1);
    assert_eq!(cluster.events.len(), 2);
    assert_eq!(hooks.lock().unwrap().len(), MAX_PENDING);
    h.api.done().await;
}

#[tokio::test]
async fn a_reconcile_before_the_watch_brings_its_own_status_write_starts_from_the_written_object() {
    let (url, _) = webhook().await;
    let mut h = harness();
    let mut cluster = Cluster::new(url, StatusWrite::Accept);
    cluster.server.spec.fallback.notify = None;
    // What the cache shows until the watch delivers the flip's status write.
    let before = cluster.server.clone();
    h.reconcile(&mut cluster).await.unwrap();
    assert_eq!((cluster.server_reads, cluster.status_patches), (1, 1), "a first reconcile reads; the flip is written");
    assert_eq!(cluster.events, ["FallbackEnabled"]);

    // Woken (by its ConfigMap's event, say) while the cache still shows the version before
    // the write: no read, and no second flip decided from a copy that lacks the first.
    h.reconcile_from(&mut cluster, before.clone()).await.unwrap();
    assert_eq!((cluster.server_reads, cluster.status_patches), (1, 1));
    assert_eq!(cluster.events, ["FallbackEnabled"], "the flip is announced once");

    // The written object stands in once: the next reconcile, with the cache still that far
    // behind, reads (the version it left is not the cached one).
    h.reconcile_from(&mut cluster, before).await.unwrap();
    assert_eq!((cluster.server_reads, cluster.status_patches), (2, 1));
    // With the cache at the version the last reconcile left: neither read nor write.
    h.reconcile(&mut cluster).await.unwrap();
    assert_eq!((cluster.server_reads, cluster.status_patches), (2, 1));
    assert_eq!(cluster.events, ["FallbackEnabled"]);
    h.api.done().await;
}
