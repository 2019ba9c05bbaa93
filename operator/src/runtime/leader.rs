//! Leader election on a coordination.k8s.io Lease, so that exactly one replica acts.
//!
//! The leader renews the Lease every [`renew_period`]. It may act only until a **monotonic
//! deadline** on its own clock: the instant *before* it sent its last successful renewal,
//! plus the lease duration, minus a safety margin (`--lease-renew-grace`). A standby takes
//! over only after it has seen the same Lease record, unchanged, for a whole lease duration
//! on *its* clock, counted from when it first read it (after the renewal landed). So the old
//! leader stops acting at least `margin` before anyone else can start, with no clock
//! synchronisation between the two: only their rates matter.
//!
//! Everything that has an effect outside the process asks the [`Gate`]: the Kubernetes
//! client refuses writes (see [`GuardLayer`]), outbound HTTP refuses to send
//! (`runtime::http`), and controllers run reconciles only while leading and cancel them the
//! moment the deadline passes. A process that lost the lease exits (its in-memory state —
//! probe streaks, flip history — must not act next to a new leader); a restarted process
//! starts as a standby with fresh state.
//!
//! Remaining window: a request that passed the gate an instant before the process was
//! frozen (SIGSTOP, a VM pause) is sent when it thaws. The gate is checked immediately
//! before each request is handed to the connection, so the window is the time between that
//! check and the write to the socket.
use std::sync::OnceLock;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub const LEASE_NAME: &str = "colony-operator";

#[derive(Clone, Debug)]
pub struct LeaderSettings {
    pub namespace: String,
    pub identity: String,
    /// How long a Lease stays valid without renewal (a standby waits this long).
    pub lease_duration_secs: u64,
    /// Safety margin: the leader stops acting this long before its Lease could expire.
    pub renew_grace_secs: u64,
}

impl LeaderSettings {
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.lease_duration_secs.max(1))
    }

    /// How long after the start of a successful renewal the leader may act.
    pub fn validity(&self) -> Duration {
        validity(self.duration(), Duration::from_secs(self.renew_grace_secs))
    }
}

/// Lease duration minus the margin, never less than half the duration (a margin at or above
/// the duration would leave a leader that can never act).
pub fn validity(duration: Duration, margin: Duration) -> Duration {
    duration.saturating_sub(margin).max(duration / 2)
}

/// How often the leader renews and a standby looks at the Lease: a quarter of the validity,
/// between 0.5 s and 2 s, so that several renewals can fail before the leader stops.
pub fn renew_period(validity: Duration) -> Duration {
    (validity / 4).clamp(Duration::from_millis(500), Duration::from_secs(2))
}

/// Whether this process may act now. Cheap to clone; every clone sees the same state.
#[derive(Clone, Debug)]
pub struct Gate(Option<watch::Receiver<Option<Instant>>>);

impl Gate {
    /// No leader election: always acting.
    pub fn always() -> Self {
        Gate(None)
    }

    /// A gate driven by `rx` (None: not leading; Some(deadline): leading until then).
    pub fn from_deadline(rx: watch::Receiver<Option<Instant>>) -> Self {
        Gate(Some(rx))
    }

    pub fn may_act(&self) -> bool {
        match &self.0 {
            None => true,
            Some(rx) => rx.borrow().is_some_and(|d| Instant::now() < d),
        }
    }

    /// Resolves once this process may act.
    pub async fn leading(&self) {
        let Some(rx) = &self.0 else { return };
        let mut rx = rx.clone();
        loop {
            if rx.borrow_and_update().is_some_and(|d| Instant::now() < d) {
                return;
            }
            if rx.changed().await.is_err() {
                // The election ended (shutdown): never leading again.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Resolves as soon as this process may not act: at once if it may not act now, at the
    /// deadline if no renewal moves it, or when the election gives the lease up.
    pub async fn lost(&self) {
        let Some(rx) = &self.0 else { return std::future::pending().await };
        let mut rx = rx.clone();
        loop {
            let deadline = *rx.borrow_and_update();
            let Some(deadline) = deadline.filter(|d| Instant::now() < *d) else { return };
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                changed = rx.changed() => if changed.is_err() { return },
            }
        }
    }
}

static PROCESS_GATE: OnceLock<Gate> = OnceLock::new();

/// Installs the process-wide gate (once, at start-up) that outbound calls consult.
pub fn install(gate: Gate) {
    let _ = PROCESS_GATE.set(gate);
}

/// The process-wide gate; without one installed (unit tests, no election) always acting.
pub fn gate() -> Gate {
    PROCESS_GATE.get().cloned().unwrap_or_else(Gate::always)
}

/// Refused because this process is not (or no longer) the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not the leader: side effects are suspended")]
pub struct NotLeader;

// --- the Kubernetes client guard -------------------------------------------------------

/// A tower layer for the Kubernetes client that refuses every request that is not a read
/// (GET, HEAD, OPTIONS) while the gate is closed: the one place API writes go through.
#[derive(Clone)]
pub struct GuardLayer(pub Gate);

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guarded<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Guarded { inner, gate: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    gate: Gate,
}

pub fn is_write(method: &http::Method) -> bool {
    !matches!(*method, http::Method::GET | http::Method::HEAD | http::Method::OPTIONS)
}

impl<S, B> tower::Service<http::Request<B>> for Guarded<S>
where
    S: tower::Service<http::Request<B>>,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, tower::BoxError>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if is_write(req.method()) && !self.gate.may_act() {
            tracing::warn!(method = %req.method(), path = req.uri().path(), "refused an API write: not the leader");
            return Box::pin(async { Err(Box::new(NotLeader) as tower::BoxError) });
        }
        let fut = self.inner.call(req);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

// --- the election ----------------------------------------------------------------------

/// What the candidate does after reading the Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// No Lease: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free, released, or not renewed for a whole duration: take it (optimistically).
    TakeOver,
    /// Someone else holds it: look again later.
    Wait,
}

/// The Lease record as last observed, and when (on our clock) it was first seen unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub record: String,
    pub since: Instant,
}

/// The identity of a Lease record: a renewal changes it, a stale Lease keeps it.
pub fn record_of(lease: &Lease) -> String {
    let spec = lease.spec.clone().unwrap_or_default();
    format!(
        "{}|{:?}|{}",
        spec.holder_identity.unwrap_or_default(),
        spec.renew_time.map(|t| t.0),
        lease.metadata.resource_version.clone().unwrap_or_default()
    )
}

/// Pure: what to do with the Lease as read now. `observed` is updated to track how long the
/// current record has stayed unchanged on our clock.
pub fn decide(
    lease: Option<&Lease>,
    me: &str,
    held: bool,
    default_duration: Duration,
    observed: &mut Option<Observed>,
    now: Instant,
) -> Step {
    let Some(lease) = lease else {
        *observed = None;
        return Step::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    if holder == me && held {
        *observed = None;
        return Step::Renew;
    }
    // Ours on record but not held by this run (a restart with the same identity): like any
    // other holder's, the record must stay unchanged for a whole duration first.
    if holder.is_empty() {
        *observed = None;
        return Step::TakeOver;
    }
    let record = record_of(lease);
    let since = match observed {
        Some(o) if o.record == record => o.since,
        _ => {
            *observed = Some(Observed { record, since: now });
            now
        }
    };
    let duration = spec
        .lease_duration_seconds
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s as u64))
        .unwrap_or(default_duration);
    if now.duration_since(since) >= duration { Step::TakeOver } else { Step::Wait }
}

fn lease_spec(s: &LeaderSettings, previous: Option<&LeaseSpec>, acquire: bool) -> LeaseSpec {
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(s.identity.clone()),
        lease_duration_seconds: Some(s.lease_duration_secs.max(1) as i32),
        acquire_time: if acquire { Some(now.clone()) } else { previous.and_then(|p| p.acquire_time.clone()) },
        renew_time: Some(now),
        lease_transitions: Some(if acquire && previous.is_some() { transitions + 1 } else { transitions }),
        ..Default::default()
    }
}

fn patch_params() -> PatchParams {
    PatchParams { field_manager: Some(super::context::field_manager("leader-election")), ..Default::default() }
}

/// One round: read the Lease, act on [`decide`]. Returns whether we hold it now.
/// `deadline` is our current one while we hold the Lease: once it has passed we never renew
/// (a standby may already count on our silence), checked again right before the write.
async fn round(
    api: &Api<Lease>,
    s: &LeaderSettings,
    observed: &mut Option<Observed>,
    deadline: Option<Instant>,
) -> kube::Result<bool> {
    let expired = || deadline.is_some_and(|d| Instant::now() >= d);
    let current = api.get_opt(LEASE_NAME).await?;
    let step = decide(current.as_ref(), &s.identity, deadline.is_some(), s.duration(), observed, Instant::now());
    let pp = PostParams { field_manager: Some(super::context::field_manager("leader-election")), ..Default::default() };
    match step {
        Step::Wait => Ok(false),
        Step::Create => {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(LEASE_NAME.into()), ..Default::default() },
                spec: Some(lease_spec(s, None, true)),
            };
            match api.create(&pp, &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Step::Renew if expired() => Ok(false),
        Step::Renew | Step::TakeOver => {
            let lease = current.expect("a Lease to renew or take over");
            let acquire = step == Step::TakeOver;
            // The resourceVersion we read is a precondition: a concurrent change makes it 409.
            let patch = serde_json::json!({
                "metadata": { "resourceVersion": lease.metadata.resource_version },
                "spec": lease_spec(s, lease.spec.as_ref(), acquire),
            });
            match api.patch(LEASE_NAME, &patch_params(), &Patch::Merge(&patch)).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// The running election: the gate it drives, and its task.
pub struct Election {
    pub gate: Gate,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Starts competing for the Lease with `client` (an unguarded client: the election writes
/// while not leading); returns at once.
pub fn compete(client: Client, s: &LeaderSettings) -> Election {
    let (tx, rx) = watch::channel(None);
    let (stop, mut stop_rx) = watch::channel(false);
    let s = s.clone();
    let api: Api<Lease> = Api::namespaced(client, &s.namespace);
    let task = tokio::spawn(async move {
        let period = renew_period(s.validity());
        let mut observed = None;
        let mut held = false;
        loop {
            let started = Instant::now();
            let result = tokio::select! {
                r = round(&api, &s, &mut observed, *tx.borrow()) => r,
                _ = stop_rx.wait_for(|s| *s) => break,
            };
            match result {
                Ok(true) => {
                    if !held {
                        tracing::info!(identity = %s.identity, "acquired the leader lease");
                    }
                    held = true;
                    // Counted from before the request left: the Lease's new renewTime is later.
                    let _ = tx.send(Some(started + s.validity()));
                }
                Ok(false) if held => {
                    // Lost for good in this process: it stops and exits, never re-acquires.
                    tracing::error!(identity = %s.identity, "the leader lease was lost (taken over or not renewed in time)");
                    let _ = tx.send(None);
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader lease renewal failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = stop_rx.wait_for(|s| *s) => break,
            }
        }
        // Stop acting first, then hand the Lease over if it is still ours.
        let still_valid = tx.borrow().is_some_and(|d| Instant::now() < d);
        let _ = tx.send(None);
        if held && still_valid {
            release(&api, &s).await;
        }
    });
    Election { gate: Gate::from_deadline(rx), stop, task }
}

/// Gives the Lease up (holder cleared) so that a standby takes over at once.
async fn release(api: &Api<Lease>, s: &LeaderSettings) {
    let Ok(Some(lease)) = api.get_opt(LEASE_NAME).await else { return };
    if lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) != Some(&s.identity) {
        return;
    }
    let patch = serde_json::json!({
        "metadata": { "resourceVersion": lease.metadata.resource_version },
        "spec": { "holderIdentity": null, "leaseDurationSeconds": 1, "renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now()) },
    });
    match api.patch(LEASE_NAME, &patch_params(), &Patch::Merge(&patch)).await {
        Ok(_) => tracing::info!(identity = %s.identity, "released the leader lease"),
        Err(e) => tracing::warn!(error = %e, "could not release the leader lease"),
    }
}

impl Election {
    /// Stops acting at once, then releases the Lease if this process still held it.
    pub async fn release(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(Duration::from_secs(5), self.task).await.is_err() {
            tracing::warn!("leader election did not stop in time");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, rv: &str, duration: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: (!holder.is_empty()).then(|| holder.to_string()),
                lease_duration_seconds: Some(duration),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn validity_and_period() {
        assert_eq!(validity(Duration::from_secs(15), Duration::from_secs(5)), Duration::from_secs(10));
        assert_eq!(validity(Duration::from_secs(4), Duration::from_secs(10)), Duration::from_secs(2));
        assert_eq!(renew_period(Duration::from_secs(10)), Duration::from_secs(2));
        assert_eq!(renew_period(Duration::from_secs(4)), Duration::from_secs(1));
        assert_eq!(renew_period(Duration::from_secs(1)), Duration::from_millis(500));
    }

    #[test]
    fn create_renew_and_take_over_a_free_lease() {
        let now = Instant::now();
        let d = Duration::from_secs(8);
        let mut seen = None;
        assert_eq!(decide(None, "a", false, d, &mut seen, now), Step::Create);
        assert_eq!(decide(Some(&lease("a", "1", 8)), "a", true, d, &mut seen, now), Step::Renew);
        assert_eq!(decide(Some(&lease("", "2", 1)), "a", false, d, &mut seen, now), Step::TakeOver);
    }

    #[test]
    fn a_standby_waits_a_whole_duration_of_an_unchanged_record_on_its_own_clock() {
        let t0 = Instant::now();
        let d = Duration::from_secs(15);
        let mut seen = None;
        let l = lease("b", "7", 8);
        assert_eq!(decide(Some(&l), "a", false, d, &mut seen, t0), Step::Wait);
        // The Lease's own duration (8 s) counts, not ours.
        assert_eq!(decide(Some(&l), "a", false, d, &mut seen, t0 + Duration::from_secs(7)), Step::Wait);
        // A renewal (new resourceVersion) restarts the clock.
        let renewed = lease("b", "8", 8);
        assert_eq!(decide(Some(&renewed), "a", false, d, &mut seen, t0 + Duration::from_secs(7)), Step::Wait);
        assert_eq!(decide(Some(&renewed), "a", false, d, &mut seen, t0 + Duration::from_secs(14)), Step::Wait);
        assert_eq!(decide(Some(&renewed), "a", false, d, &mut seen, t0 + Duration::from_secs(15)), Step::TakeOver);
    }

    #[test]
    fn our_own_record_from_an_earlier_run_must_expire_first() {
        let t0 = Instant::now();
        let d = Duration::from_secs(8);
        let mut seen = None;
        let l = lease("a", "3", 8);
        assert_eq!(decide(Some(&l), "a", false, d, &mut seen, t0), Step::Wait);
        assert_eq!(decide(Some(&l), "a", false, d, &mut seen, t0 + d), Step::TakeOver);
    }

    #[tokio::test]
    async fn the_gate_closes_at_the_deadline_without_any_message() {
        let (tx, rx) = watch::channel(None);
        let gate = Gate::from_deadline(rx);
        assert!(!gate.may_act());
        let started = Instant::now();
        tx.send(Some(started + Duration::from_millis(300))).unwrap();
        assert!(gate.may_act());
        tokio::time::timeout(Duration::from_secs(5), gate.leading()).await.expect("leading at once");
        tokio::time::timeout(Duration::from_secs(5), gate.lost()).await.expect("lost at the deadline");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(!gate.may_act());
        assert!(Gate::always().may_act());
    }

    #[tokio::test]
    async fn a_renewal_moves_the_deadline() {
        let started = Instant::now();
        let (tx, rx) = watch::channel(Some(started + Duration::from_millis(300)));
        let gate = Gate::from_deadline(rx);
        let renew = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            tx.send(Some(Instant::now() + Duration::from_millis(300))).unwrap();
            std::future::pending::<()>().await
        };
        tokio::select! { _ = gate.lost() => {}, _ = renew => {} }
        assert!(started.elapsed() >= Duration::from_millis(500), "lost only at the renewed deadline");
    }

    /// Answers every request; counts them.
    #[derive(Clone, Default)]
    struct Counting(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl tower::Service<http::Request<()>> for Counting {
        type Response = http::Response<()>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
        fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::ready(Ok(http::Response::new(())))
        }
    }

    #[tokio::test]
    async fn the_client_guard_refuses_writes_while_the_gate_is_closed() {
        use tower::{Layer, Service};
        let inner = Counting::default();
        let (tx, rx) = watch::channel(None);
        let mut svc = GuardLayer(Gate::from_deadline(rx)).layer(inner.clone());
        let req = |m: http::Method| http::Request::builder().method(m).uri("/api").body(()).unwrap();
        let err = svc.call(req(http::Method::PATCH)).await.unwrap_err();
        assert!(err.downcast_ref::<NotLeader>().is_some());
        svc.call(req(http::Method::GET)).await.expect("reads pass");
        assert_eq!(inner.0.load(std::sync::atomic::Ordering::SeqCst), 1, "the write never reached the server");
        tx.send(Some(Instant::now() + Duration::from_secs(60))).unwrap();
        svc.call(req(http::Method::POST)).await.expect("the leader writes");
        tx.send(Some(Instant::now())).unwrap();
        assert!(svc.call(req(http::Method::DELETE)).await.is_err(), "refused from the deadline on");
        assert_eq!(inner.0.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn reads_pass_the_guard_writes_do_not() {
        assert!(!is_write(&http::Method::GET));
        assert!(is_write(&http::Method::PATCH));
        assert!(is_write(&http::Method::POST));
        assert!(is_write(&http::Method::DELETE));
        assert!(is_write(&http::Method::PUT));
    }
}
