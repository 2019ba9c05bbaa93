//! How long a reconcile waits for the API server: the client's requests are timed and the time
//! is added to the reconcile they belong to, so that the reconcile's own time (what the
//! operator spends computing, reading caches and queueing) can be told from the API server's.
//!
//! The kube client hands a request's response future back to the task that sent it (its
//! `Buffer` only dispatches), so the future is polled inside the reconcile, where
//! [`scope`] has set the accumulator. Requests of other tasks (watches, probe loops,
//! deliveries) find none and are not counted.
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::time::Instant;

tokio::task_local! {
    static API_WAIT: ApiWait;
}

/// Nanoseconds spent waiting for the API server by the future run in [`scope`], and the
/// histogram each of its requests is observed in, if any.
#[derive(Clone, Default, Debug)]
pub struct ApiWait {
    total: Arc<AtomicU64>,
    requests: Option<prometheus_client::metrics::histogram::Histogram>,
}

impl ApiWait {
    /// Also observes each request's time in `requests`.
    pub fn observing(requests: prometheus_client::metrics::histogram::Histogram) -> Self {
        Self { total: Default::default(), requests: Some(requests) }
    }

    pub fn get(&self) -> Duration {
        Duration::from_nanos(self.total.load(Ordering::Relaxed))
    }

    fn add(&self, took: Duration) {
        self.total.fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        if let Some(h) = &self.requests {
            h.observe(took.as_secs_f64());
        }
    }
}

/// Runs `fut`, adding the time its API requests take (from sending to the response's
/// headers) to `wait`. Requests that run side by side each count in full.
pub async fn scope<F: Future>(wait: &ApiWait, fut: F) -> F::Output {
    API_WAIT.scope(wait.clone(), fut).await
}

/// Times every request of the client it wraps (see the module).
#[derive(Clone, Copy, Default)]
pub struct TimingLayer;

impl<S> tower::Layer<S> for TimingLayer {
    type Service = Timed<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Timed { inner }
    }
}

#[derive(Clone)]
pub struct Timed<S> {
    inner: S,
}

impl<S, R> tower::Service<R> for Timed<S>
where
    S: tower::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(async move {
            // Started at the first poll, in the task that awaits the response.
            let start = Instant::now();
            let out = fut.await;
            let took = start.elapsed();
            let _ = API_WAIT.try_with(|w| w.add(took));
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service, ServiceExt};

    /// A service whose responses take `delay`.
    fn slow(
        delay: Duration,
    ) -> impl Service<(), Response = (), Error = std::convert::Infallible, Future: Send> + Clone {
        tower::service_fn(move |()| async move {
            tokio::time::sleep(delay).await;
            Ok(())
        })
    }

    #[tokio::test(start_paused = true)]
    async fn requests_in_the_scope_count_and_others_do_not() {
        let svc = TimingLayer.layer(slow(Duration::from_millis(40)));
        let wait = ApiWait::default();
        scope(&wait, async {
            svc.clone().oneshot(()).await.unwrap();
            // Time outside a request is the reconcile's own.
            tokio::time::sleep(Duration::from_millis(500)).await;
            svc.clone().oneshot(()).await.unwrap();
        })
        .await;
        assert_eq!(wait.get(), Duration::from_millis(80));

        // A request outside any scope (a watch, a probe loop) is not counted anywhere, and a
        // task spawned by the scope is outside it.
        svc.clone().oneshot(()).await.unwrap();
        let spawned = svc.clone();
        scope(&wait, async move {
            tokio::spawn(spawned.oneshot(())).await.unwrap().unwrap();
        })
        .await;
        assert_eq!(wait.get(), Duration::from_millis(80));
    }

    /// Through a `Buffer`, as in the kube client: the request is dispatched by the buffer's
    /// worker task, and still counted for the task that awaits it.
    #[tokio::test(start_paused = true)]
    async fn a_request_through_a_buffer_counts_for_its_sender() {
        let svc = tower::buffer::Buffer::new(TimingLayer.layer(slow(Duration::from_millis(25))), 8);
        let wait = ApiWait::default();
        scope(&wait, async {
            svc.clone().oneshot(()).await.unwrap();
        })
        .await;
        assert_eq!(wait.get(), Duration::from_millis(25));
    }

    #[tokio::test(start_paused = true)]
    async fn each_request_of_the_scope_is_observed_on_its_own() {
        use prometheus_client::metrics::histogram::Histogram;
        let requests = Histogram::new([0.01, 0.05, 0.1]);
        let wait = ApiWait::observing(requests.clone());
        let (fast, slow_) =
            (TimingLayer.layer(slow(Duration::from_millis(5))), TimingLayer.layer(slow(Duration::from_millis(70))));
        scope(&wait, async {
            fast.clone().oneshot(()).await.unwrap();
            fast.clone().oneshot(()).await.unwrap();
            slow_.clone().oneshot(()).await.unwrap();
        })
        .await;
        // Outside the scope: not observed.
        slow_.clone().oneshot(()).await.unwrap();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("requests", "", requests);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "requests_count 3",
            r#"requests_bucket{le="0.01"} 2"#,
            r#"requests_bucket{le="0.05"} 2"#,
            r#"requests_bucket{le="0.1"} 3"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert_eq!(wait.get(), Duration::from_millis(80));
    }
}
