//! How the operator's client reaches the API server.
//!
//! kube's layers (base URI, retry of 5xx, authentication, extra headers) over a hyper client
//! whose connections notice a peer that is gone: TCP keepalive (a probe after 30 s without a
//! packet, the connection dropped after 3 unanswered probes 10 s apart) and a TCP user timeout
//! for data never acknowledged. kube's own client sets neither: a watch on a connection whose
//! peer vanished without a reset (a node down, a NAT entry dropped) waited forever.
//!
//! By default HTTP/1.1: every watch on a connection of its own and every request in flight on
//! another (17-18 connections at rest and 82-114 at peak in `make bench`).
//! [`ApiProtocol::Negotiate`] (`--api-http2`) offers `h2` and `http/1.1` by ALPN, as client-go
//! does: on HTTP/2 every watch and request of the process shares one connection (one pool,
//! [`Connections`], under every client), which is also pinged, so a connection that a hung
//! proxy keeps open but silent is noticed too. On the bench's 2 cores that one connection was
//! the slower way on every latency (the whole process's frames pass one connection task; a
//! pod Failed → deleted p99 went 571 → 3631 ms), hence the default. A configured proxy keeps kube's client.
use std::time::Duration;

use anyhow::Context as _;
use http::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::retry::RetryPolicy;
use kube::client::{Body, ClientBuilder, ConfigExt as _, DynBody};
use kube::{Client, Config};
use tower::retry::RetryLayer;
use tower::util::BoxService;
use tower::{BoxError, ServiceBuilder, ServiceExt as _};

/// Which HTTP versions the client offers the API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiProtocol {
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 when the API server agrees (ALPN), else HTTP/1.1.
    Negotiate,
}

/// The service below a [`Client`]: what [`ClientBuilder`] layers wrap.
pub type Transport = BoxService<Request<Body>, Response<Box<DynBody>>, BoxError>;

/// HTTP/2: a ping after this long without a frame, and the connection dropped when its
/// answer takes longer than `PING_TIMEOUT` (client-go: read idle 30 s, ping timeout 15 s). One
/// dead HTTP/2 connection would otherwise stall every watch at once.
const PING_AFTER: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// TCP keepalive, as client-go dials (30 s), with the probes that decide: a peer that answers
/// nothing is given up 30 s + 3 × 10 s after its last packet.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const TCP_KEEPALIVE_PROBES: u32 = 3;
/// How long sent data may stay unacknowledged before the connection is dropped (keepalive
/// covers an idle connection only).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(60);

/// The hyper client under [`Connections`]: cloning it shares its pool.
type Pool = hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// The process's connections to the API server: one pool, shared by every client built on it.
/// The raw client (start-up checks, the lease) and the guarded one (the controllers) reuse
/// each other's idle connections; on HTTP/2 both share one connection, negotiated before the
/// controllers start, instead of one per client and one per watch that started before the
/// first had told ALPN's answer (14 at start-up in the test cluster). With a proxy in the
/// kubeconfig, each client is kube's own.
#[derive(Clone)]
pub struct Connections(Option<Pool>);

impl Connections {
    pub fn new(config: &Config, protocol: ApiProtocol) -> anyhow::Result<Self> {
        if config.proxy_url.is_some() {
            return Ok(Self(None));
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(config.connect_timeout);
        http.set_nodelay(true);
        http.set_keepalive(Some(TCP_KEEPALIVE));
        http.set_keepalive_interval(Some(TCP_KEEPALIVE_INTERVAL));
        http.set_keepalive_retries(Some(TCP_KEEPALIVE_PROBES));
        http.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT));
        let tls = config.rustls_client_config().context("TLS settings of the Kubernetes client")?;
        let mut https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
        if let Some(name) = &config.tls_server_name {
            let name = rustls_pki_types::ServerName::try_from(name.clone())
                .with_context(|| format!("tls-server-name {name:?} is not a valid server name"))?;
            https = https.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
        }
        let https = match protocol {
            ApiProtocol::Http1 => https.enable_http1().wrap_connector(http),
            ApiProtocol::Negotiate => https.enable_all_versions().wrap_connector(http),
        };
        let pool = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            // Initial lists of thousands of objects come over one connection: let the windows
            // grow with what the connection carries instead of 64 KiB per stream.
            .http2_adaptive_window(true)
            .http2_keep_alive_interval(PING_AFTER)
            .http2_keep_alive_timeout(PING_TIMEOUT)
            .build::<_, Body>(https);
        Ok(Self(Some(pool)))
    }

    /// kube's layers over these connections, for more layers to be added.
    pub fn client_builder(&self, config: &Config) -> anyhow::Result<ClientBuilder<Transport>> {
        let Some(pool) = &self.0 else {
            return ClientBuilder::try_from(config.clone()).context("building the Kubernetes client");
        };
        let service = ServiceBuilder::new()
            .layer(config.base_uri_layer())
            .option_layer(config.default_retry.then(|| RetryLayer::new(RetryPolicy::server_retry())))
            .option_layer(config.auth_layer().context("credentials of the Kubernetes client")?)
            .layer(config.extra_headers_layer().context("headers of the Kubernetes client")?)
            .map_err(BoxError::from)
            .service(pool.clone())
            .map_response(|response| {
                response.map(|body| Box::new(http_body_util::BodyExt::map_err(body, BoxError::from)) as Box<DynBody>)
            })
            .boxed();
        Ok(ClientBuilder::new(service, config.default_namespace.clone()))
    }

    pub fn client(&self, config: &Config) -> anyhow::Result<Client> {
        Ok(self.client_builder(config)?.build())
    }
}

/// The HTTP version the API server answers `client` with (one `GET /version`).
pub async fn negotiated(client: &Client) -> anyhow::Result<http::Version> {
    let request = Request::get("/version").body(Body::empty()).context("GET /version")?;
    let response = client.send(request).await.context("GET /version")?;
    Ok(response.version())
}
