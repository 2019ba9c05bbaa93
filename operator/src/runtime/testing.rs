//! Test-only: a mocked Kubernetes API server for the controllers' IO seams. A reconcile runs
//! against a [`kube::Client`] whose transport is a `tower_test` mock; the test plays the API
//! server with [`ApiServer::expect`], one request at a time: it asserts the verb and path,
//! answers, and gets back what was sent (query, JSON body) to assert on.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tower_test::mock::{self, Handle};

use super::context::{Context, Settings};
use super::metrics::Metrics;

/// How long a test waits for a request the code under test should make.
const WAIT: Duration = Duration::from_secs(5);

/// The test's end of the mocked API server.
pub struct ApiServer(Handle<Request<Body>, Response<Body>>);

/// A request the code under test made.
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: String,
    /// The body as JSON (`Null` when there was none).
    pub body: Value,
    /// The body as sent, for checks that it holds no secret.
    pub raw: String,
}

impl Seen {
    /// The value of query parameter `name`, percent-decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        self.query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| decode(v))
    }
}

fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("utf-8 query")
}

/// The API server's answer.
pub enum Reply {
    /// 200 with this object.
    Ok(Value),
    /// An error: a `Status` object with this code and reason (`NotFound`, `Conflict`, ...).
    Error(u16, &'static str),
    /// 200 with the request's own body (a write accepted as sent).
    Echo,
}

impl Reply {
    pub fn ok(obj: &impl Serialize) -> Self {
        Reply::Ok(serde_json::to_value(obj).expect("serializable object"))
    }

    pub fn not_found() -> Self {
        Reply::Error(404, "NotFound")
    }
}

fn response(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).expect("status code"))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("response")
}

/// The answer still owed to a request taken with [`ApiServer::receive`].
pub struct Pending {
    seen_body: Value,
    send: mock::SendResponse<Response<Body>>,
}

impl Pending {
    pub fn reply(self, reply: Reply) {
        self.send.send_response(match &reply {
            Reply::Ok(v) => response(200, v),
            Reply::Echo => response(200, &self.seen_body),
            Reply::Error(code, reason) => response(
                *code,
                &json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("mocked {reason}"), "reason": reason, "code": code,
                }),
            ),
        });
    }
}

impl ApiServer {
    /// Waits for the next request and asserts its verb and path; the answer is sent with
    /// [`Pending::reply`] (when it depends on what was sent).
    pub async fn receive(&mut self, method: Method, path: &str) -> (Seen, Pending) {
        let (seen, pending) =
            self.any(WAIT).await.unwrap_or_else(|| panic!("no request came; expected {method} {path}"));
        // The request's line only: a body may hold key material.
        let line = format!("{} {}?{}", seen.method, seen.path, seen.query);
        assert_eq!((&seen.method, seen.path.as_str()), (&method, path), "unexpected request: {line}");
        (seen, pending)
    }

    /// Waits up to `wait` for the next request, whatever it is (None: none came).
    pub async fn any(&mut self, wait: Duration) -> Option<(Seen, Pending)> {
        let (request, send) = tokio::time::timeout(wait, self.0.next_request()).await.ok()??;
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("request body");
        let seen = Seen {
            method: parts.method.clone(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            body: if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("a JSON body") },
            raw: String::from_utf8_lossy(&bytes).to_string(),
        };
        let pending = Pending { seen_body: seen.body.clone(), send };
        Some((seen, pending))
    }

    /// Waits for the next request, asserts its verb and path, answers with `reply` and
    /// returns what was sent.
    pub async fn expect(&mut self, method: Method, path: &str, reply: Reply) -> Seen {
        let (seen, pending) = self.receive(method, path).await;
        pending.reply(reply);
        seen
    }

    /// Waits for the code under test to finish and returns its result; a request it makes
    /// meanwhile is one the test did not expect, and fails the test (instead of hanging it).
    pub async fn finish<T>(&mut self, run: JoinHandle<T>) -> T {
        let outcome = tokio::time::timeout(WAIT, async {
            tokio::pin!(run);
            tokio::select! {
                joined = &mut run => joined.expect("the code under test panicked"),
                next = self.0.next_request() => match next {
                    Some((request, _)) => panic!("unexpected request: {} {}", request.method(), request.uri()),
                    None => run.await.expect("the code under test panicked"),
                },
            }
        })
        .await;
        outcome.unwrap_or_else(|_| panic!("the code under test did not finish"))
    }

    /// Asserts that no further request comes (the code under test has finished).
    pub async fn done(mut self) {
        if let Ok(Some((request, _))) = tokio::time::timeout(Duration::from_millis(200), self.0.next_request()).await {
            panic!("unexpected request: {} {}", request.method(), request.uri());
        }
    }
}

/// What the operator logged while a [`capture_logs`] guard was held (at every level).
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).to_string()
    }
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures every log line of this thread (a `#[tokio::test]` runs its spawned tasks on it)
/// until the guard is dropped.
pub fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || LogWriter(writer.clone()))
        .finish();
    (Logs(buf), tracing::subscriber::set_default(subscriber))
}

/// A client whose every request goes to the returned [`ApiServer`].
pub fn client() -> (Client, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), ApiServer(handle))
}

/// A [`Context`] over a mocked API server, with fresh metrics and a window view that has
/// listed no window.
pub fn context() -> (Arc<Context>, ApiServer) {
    let (client, server) = client();
    let (windows, feed) = super::windows::view();
    let (mut writer, _) = feed.into_parts();
    writer.apply_watcher_event(&kube::runtime::watcher::Event::InitDone);
    let ctx = Context::new(client, Arc::new(Metrics::default()), Settings::default(), windows);
    (Arc::new(ctx), server)
}
