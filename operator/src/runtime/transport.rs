//! How the operator's client reaches the API server.
//!
//! By default, kube's own client: HTTP/1.1, every watch on a connection of its own and every
//! request in flight on another (17 connections at rest and 81 at peak in `make bench`).
//! [`ApiProtocol::Negotiate`] (`--api-http2`) offers `h2` and `http/1.1` by ALPN, as client-go
//! does: on HTTP/2 every watch and request shares one connection (1 at rest, 2 at peak), which
//! is pinged, so a connection gone silent is noticed. On the bench's 2 cores that one
//! connection was the slower way on every latency (the whole process's frames pass one
//! connection task; a pod Failed → deleted p99 went 571 → 3631 ms), hence the default. The
//! layers on top are kube's own (base URI, retry of 5xx, authentication, extra headers); a
//! configured proxy keeps kube's client.
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
    /// HTTP/1.1 only: kube's default client.
    Http1,
    /// HTTP/2 when the API server agrees (ALPN), else HTTP/1.1.
    Negotiate,
}

/// The service below a [`Client`]: what [`ClientBuilder`] layers wrap.
pub type Transport = BoxService<Request<Body>, Response<Box<DynBody>>, BoxError>;

/// A dead connection is noticed within `KEEP_ALIVE_INTERVAL + KEEP_ALIVE_TIMEOUT` even while
/// only watches use it (client-go: read idle 30 s, ping timeout 15 s). On HTTP/2 one dead TCP
/// connection would otherwise stall every watch at once.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(15);

pub fn client_builder(config: &Config, protocol: ApiProtocol) -> anyhow::Result<ClientBuilder<Transport>> {
    if protocol == ApiProtocol::Http1 || config.proxy_url.is_some() {
        return ClientBuilder::try_from(config.clone()).context("building the Kubernetes client");
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout);
    http.set_nodelay(true);
    let tls = config.rustls_client_config().context("TLS settings of the Kubernetes client")?;
    let mut https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
    if let Some(name) = &config.tls_server_name {
        let name = rustls_pki_types::ServerName::try_from(name.clone())
            .with_context(|| format!("tls-server-name {name:?} is not a valid server name"))?;
        https = https.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
    }
    let https = https.enable_all_versions().wrap_connector(http);
    let hyper = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        // Initial lists of thousands of objects come over one connection: let the windows
        // grow with what the connection carries instead of 64 KiB per stream.
        .http2_adaptive_window(true)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .http2_keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .build::<_, Body>(https);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.default_retry.then(|| RetryLayer::new(RetryPolicy::server_retry())))
        .option_layer(config.auth_layer().context("credentials of the Kubernetes client")?)
        .layer(config.extra_headers_layer().context("headers of the Kubernetes client")?)
        .map_err(BoxError::from)
        .service(hyper)
        .map_response(|response| {
            response.map(|body| Box::new(http_body_util::BodyExt::map_err(body, BoxError::from)) as Box<DynBody>)
        })
        .boxed();
    Ok(ClientBuilder::new(service, config.default_namespace.clone()))
}

pub fn client(config: &Config, protocol: ApiProtocol) -> anyhow::Result<Client> {
    Ok(client_builder(config, protocol)?.build())
}

/// The HTTP version the API server answers `client` with (one `GET /version`).
pub async fn negotiated(client: &Client) -> anyhow::Result<http::Version> {
    let request = Request::get("/version").body(Body::empty()).context("GET /version")?;
    let response = client.send(request).await.context("GET /version")?;
    Ok(response.version())
}
