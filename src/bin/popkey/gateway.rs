//! `popkey gateway`: forward authentication for nginx `auth_request`,
//! Traefik `forwardAuth` and Envoy `ext_authz` (HTTP).
//!
//! The proxy sends a subrequest carrying the client's headers and the
//! original method and URI; the gateway verifies the DPoP or PoP
//! credentials for the *public* URL and answers
//!
//! * 200 with `X-Pop-Subject` (the token's `sub`), `X-Pop-Jkt` (the key
//!   thumbprint) and `X-Pop-Scheme` (`dpop` or `pop`) for the upstream;
//!   with `--mtls`, certificate-bound Bearer tokens (RFC 8705) pass with
//!   `X-Pop-Scheme: mtls` and `X-Pop-X5t-S256` (the client certificate from
//!   the proxy's `Client-Cert` header);
//! * 401 / 400 / 503 with the challenge headers for the client
//!   (`WWW-Authenticate`, `DPoP-Nonce`, `Cache-Control: no-store`).
//!
//! Only the proxies may ask (`--trusted-proxy`, loopback by default; 403
//! for anyone else), since the gateway believes the original request they
//! describe. Every answer carries `X-Pop-Status` (its own status code), so an nginx
//! `auth_request` (which turns anything but 2xx/401/403 into 500) can give
//! the client the real one. Any path is an auth endpoint except `/healthz`
//! (the process is up) and `/readyz` (the issuer's keys are loaded).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clap::{Args, ValueEnum};
use popkey::server::IpNet;

use crate::fleet::FleetArgs;

#[derive(Args)]
pub(crate) struct GatewayArgs {
    /// Address to listen on, e.g. 127.0.0.1:9090. Only the proxy should
    /// reach it: the gateway believes the X-Original-* / X-Forwarded-*
    /// headers it is sent.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// The access tokens' issuer (`iss`). Its signing keys are found by
    /// discovery (`/.well-known/openid-configuration`, then
    /// `oauth-authorization-server`) unless --jwks gives them.
    #[arg(long, value_name = "URL")]
    issuer: String,
    /// The audience (`aud`) access tokens must carry.
    #[arg(long)]
    audience: String,
    /// The public origin clients sign for (`https://api.example.com`).
    /// Without it the origin comes from the X-Forwarded-Proto and
    /// X-Forwarded-Host (else Host) headers the proxy sets.
    #[arg(long, value_name = "URL")]
    public_origin: Option<String>,
    /// Peers allowed to ask (addresses or CIDRs, repeatable): the proxies.
    /// Anyone else gets 403, since the gateway believes the original method,
    /// URI and host the caller names.
    #[arg(
        long = "trusted-proxy",
        value_name = "CIDR",
        default_values_t = ["127.0.0.0/8".to_owned(), "::1".to_owned()]
    )]
    trusted_proxies: Vec<String>,
    /// A JWKS file with the issuer's keys, instead of discovery (offline
    /// use and tests).
    #[arg(long, value_name = "FILE")]
    jwks: Option<PathBuf>,
    /// Also accept certificate-bound Bearer tokens (RFC 8705): the token's
    /// cnf.x5t#S256 must match the client certificate the proxy forwards in
    /// Client-Cert (RFC 9440 `:base64:` or nginx's
    /// `$ssl_client_escaped_cert`). Answers X-Pop-Scheme `mtls` and
    /// X-Pop-X5t-S256.
    #[arg(long)]
    mtls: bool,
    /// The header the proxy forwards the client certificate in (with --mtls).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "client-cert",
        requires = "mtls"
    )]
    client_cert_header: String,
    /// Also trust the PEM CA certificates in FILE when fetching the issuer's
    /// discovery document and keys (a private CA; repeatable).
    #[arg(long = "ca-file", value_name = "FILE")]
    ca_files: Vec<PathBuf>,
    /// Oldest acceptable proof, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    max_age: u64,
    #[command(flatten)]
    fleet: FleetArgs,
    /// Log format on standard error.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Least severe log level: error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log_level: tracing::Level,
}

/// How log lines look.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// The original request, as the proxy describes it.
struct Original {
    method: String,
    url: String,
}

struct Gateway {
    auth: auth::Authenticator,
    public_origin: Option<String>,
    trusted: Vec<IpNet>,
    ready: AtomicBool,
}

pub(crate) fn run(args: &GatewayArgs) -> Result<String, String> {
    init_logs(args.log_format, args.log_level);
    let public_origin = match &args.public_origin {
        Some(o) => Some(parse_origin(o)?),
        None => None,
    };
    let trusted = args
        .trusted_proxies
        .iter()
        .map(|p| {
            p.parse::<IpNet>()
                .map_err(|e| format!("--trusted-proxy: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    rt.block_on(async {
        let shutdown = shutdown_signal()?;
        let auth = auth::Authenticator::new(&auth::Settings {
            issuer: &args.issuer,
            audience: &args.audience,
            jwks: args.jwks.as_deref(),
            max_age: args.max_age,
            fleet: &args.fleet,
            mtls: args.mtls.then_some(args.client_cert_header.as_str()),
            trusted: &args.trusted_proxies,
            ca_files: &args.ca_files,
        })
        .await?;
        let gateway = Arc::new(Gateway {
            auth,
            public_origin,
            trusted,
            ready: AtomicBool::new(false),
        });
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        tokio::spawn(warm_up(gateway.clone()));
        let app = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .fallback(authorize)
            .with_state(gateway);
        tracing::info!(listen = %local, issuer = %args.issuer, audience = %args.audience, "popkey gateway listening");
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| format!("the server failed: {e}"))?;
        tracing::info!("popkey gateway stopped");
        Ok(String::new())
    })
}

fn init_logs(format: LogFormat, level: tracing::Level) {
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false);
    // A second subscriber (never here) would be the only reason to fail.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Loads the issuer's keys once at start, so /readyz can say so; retried
/// with a pause until it works.
async fn warm_up(g: Arc<Gateway>) {
    let mut pause = std::time::Duration::from_millis(200);
    loop {
        match g.auth.warm_up().await {
            Ok(()) => {
                g.ready.store(true, Ordering::SeqCst);
                tracing::info!("issuer keys loaded; ready");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "issuer keys not loaded yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(10));
            }
        }
    }
}

async fn readyz(State(g): State<Arc<Gateway>>) -> Response {
    if g.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "issuer keys not loaded\n").into_response()
    }
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is
/// called (before start-up work), not when the future is first polled, so a
/// SIGTERM during start-up also ends in a clean stop.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    let ctrl_c = tokio::signal::ctrl_c();
    Ok(async move {
        #[cfg(unix)]
        let term = term.recv();
        #[cfg(not(unix))]
        let term = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = ctrl_c => {},
            _ = term => {},
        }
        tracing::info!("shutting down: finishing the requests in flight");
    })
}

/// `scheme://host[:port]` without path, query or trailing `/`.
fn parse_origin(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text).map_err(|e| format!("--public-origin `{text}`: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "--public-origin `{text}` must be an http(s) origin, e.g. https://api.example.com"
        ));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "--public-origin `{text}` must be an origin only (no path, query or fragment)"
        ));
    }
    Ok(url.origin().ascii_serialization())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The original method and public URL: nginx's X-Original-Method /
/// X-Original-URI, Traefik's X-Forwarded-Method / X-Forwarded-Uri, else the
/// subrequest's own (Envoy `ext_authz` keeps the original method and path).
fn original(
    g: &Gateway,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Original, String> {
    let method = header(headers, "x-original-method")
        .or_else(|| header(headers, "x-forwarded-method"))
        .unwrap_or(method.as_str());
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if method.is_empty() || method.len() > 32 || !method.bytes().all(tchar) {
        return Err("the original method is not an HTTP method".into());
    }
    let own = uri.path_and_query().map_or("/", |p| p.as_str());
    let path = header(headers, "x-original-uri")
        .or_else(|| header(headers, "x-forwarded-uri"))
        .unwrap_or(own);
    if !path.starts_with('/') || path.starts_with("//") {
        return Err("the original URI is not an absolute path".into());
    }
    let origin = match &g.public_origin {
        Some(o) => o.clone(),
        None => {
            let proto = header(headers, "x-forwarded-proto")
                .ok_or("no --public-origin and no X-Forwarded-Proto from the proxy")?;
            let host = header(headers, "x-forwarded-host")
                .or_else(|| header(headers, "host"))
                .ok_or("no --public-origin and no X-Forwarded-Host or Host from the proxy")?;
            // A list: the last entry is the nearest proxy's.
            let proto = proto.rsplit(',').next().unwrap_or(proto).trim();
            let host = host.rsplit(',').next().unwrap_or(host).trim();
            if !matches!(proto, "http" | "https") {
                return Err("X-Forwarded-Proto is neither http nor https".into());
            }
            parse_origin(&format!("{proto}://{host}"))
                .map_err(|_| "X-Forwarded-Host is not a host".to_owned())?
        }
    };
    let url = format!("{origin}{path}");
    if url::Url::parse(&url).is_err() {
        return Err("the original URI does not make a URL".into());
    }
    Ok(Original {
        method: method.to_owned(),
        url,
    })
}

async fn authorize(
    State(g): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let no_store = [("cache-control", "no-store".to_owned())];
    if !g.trusted.iter().any(|net| net.contains(peer.ip())) {
        tracing::warn!(%peer, status = 403, "refused: the peer is not a --trusted-proxy");
        return answer(StatusCode::FORBIDDEN, &no_store, "untrusted_peer");
    }
    let request = match original(&g, &method, &uri, &headers) {
        Ok(r) => r,
        Err(why) => {
            tracing::warn!(%peer, reason = %why, status = 400, "cannot tell the original request");
            return answer(StatusCode::BAD_REQUEST, &no_store, "invalid_request");
        }
    };
    // Logged without the query, which may carry secrets of its own.
    let path = request.url.split('?').next().unwrap_or_default().to_owned();
    match g
        .auth
        .authenticate(&request.method, &request.url, &headers, peer.ip())
        .await
    {
        Ok(ok) => {
            tracing::info!(
                %peer, method = %request.method, url = %path, status = 200,
                scheme = ok.scheme, jkt = %ok.jkt.as_deref().or(ok.x5t.as_deref()).unwrap_or(""), subject = ok.subject.as_deref().unwrap_or(""),
                "allowed"
            );
            let mut h = vec![("x-pop-scheme", ok.scheme.to_owned())];
            if let Some(jkt) = ok.jkt {
                h.push(("x-pop-jkt", jkt));
            }
            if let Some(x5t) = ok.x5t {
                h.push(("x-pop-x5t-s256", x5t));
            }
            if let Some(s) = ok.subject {
                h.push(("x-pop-subject", header_safe(&s)));
            }
            answer(StatusCode::OK, &h, "")
        }
        Err(no) => {
            tracing::info!(
                %peer, method = %request.method, url = %path, status = no.status.as_u16(),
                error = no.kind, "refused"
            );
            if let Some(d) = &no.detail {
                tracing::debug!(%peer, detail = %d, "refusal detail");
            }
            answer(no.status, &no.headers, no.kind)
        }
    }
}

/// The response, with `X-Pop-Status`; `error` (a kind name, never detail)
/// becomes a small JSON body.
fn answer(status: StatusCode, headers: &[(&str, String)], error: &str) -> Response {
    let body = if error.is_empty() {
        String::new()
    } else {
        serde_json::json!({ "error": error }).to_string()
    };
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        HeaderName::from_static("x-pop-status"),
        HeaderValue::from(status.as_u16()),
    );
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            h.append(n, v);
        }
    }
    if !error.is_empty() {
        h.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    resp
}

/// A value safe in a header: printable ASCII kept, every other byte (and
/// `%`) percent-encoded.
fn header_safe(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The gateway's side of `popkey::server`: the resource server built from
/// the flags, and its answers turned into forward-auth responses.
mod auth {
    use std::net::IpAddr;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use axum::http::{HeaderMap, StatusCode};
    use popkey::client::TlsConfig;
    use popkey::server::{Authenticated, Issuer, MtlsBinding, Rejection, ResourceServer};
    use popkey::verify::dpop::DpopVerifier;
    use popkey::verify::shr::ShrVerifier;
    use popkey::verify::token::{AccessTokenValidator, JwksValidator};

    use crate::fleet::FleetArgs;

    pub(super) struct Settings<'a> {
        pub(super) issuer: &'a str,
        pub(super) audience: &'a str,
        pub(super) jwks: Option<&'a Path>,
        pub(super) max_age: u64,
        pub(super) fleet: &'a FleetArgs,
        /// With --mtls: the certificate header's name.
        pub(super) mtls: Option<&'a str>,
        pub(super) trusted: &'a [String],
        pub(super) ca_files: &'a [PathBuf],
    }

    /// A request that passed.
    pub(super) struct Allowed {
        pub(super) scheme: &'static str,
        pub(super) jkt: Option<String>,
        pub(super) x5t: Option<String>,
        pub(super) subject: Option<String>,
    }

    /// A request that did not: the status and the headers for the client.
    pub(super) struct Refused {
        pub(super) status: StatusCode,
        pub(super) headers: Vec<(&'static str, String)>,
        pub(super) kind: &'static str,
        /// The verifier's message, for the gateway's own (debug) log.
        pub(super) detail: Option<String>,
    }

    pub(super) struct Authenticator {
        server: ResourceServer,
        /// With discovery: the issuer, for readiness.
        issuer: Option<Arc<Issuer>>,
    }

    impl Authenticator {
        pub(super) async fn new(s: &Settings<'_>) -> Result<Self, String> {
            let (validator, issuer): (Arc<dyn AccessTokenValidator>, _) = match s.jwks {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| format!("cannot read JWKS {}: {e}", path.display()))?;
                    let v = JwksValidator::from_jwks(&text)
                        .map_err(|e| format!("JWKS {}: {e}", path.display()))?
                        .issuer(s.issuer)
                        .audience(s.audience);
                    (Arc::new(v), None)
                }
                None => {
                    let mut tls = TlsConfig::new();
                    for f in s.ca_files {
                        tls = tls
                            .add_ca_pem_file(f)
                            .map_err(|e| format!("--ca-file: {e}"))?;
                    }
                    let issuer = Arc::new(
                        Issuer::builder(s.issuer)
                            .audience(s.audience)
                            .tls(&tls)
                            .map_err(|e| e.to_string())?
                            .build()
                            .map_err(|e| e.to_string())?,
                    );
                    (issuer.clone(), Some(issuer))
                }
            };
            let dpop = DpopVerifier::new(validator.clone()).max_age(s.max_age);
            let pop = ShrVerifier::new(validator.clone()).max_age(s.max_age);
            #[cfg(feature = "redis")]
            let (dpop, pop) = match s.fleet.replay_store()? {
                Some(store) => (
                    dpop.async_replay_store(store.clone()),
                    pop.async_replay_store(store),
                ),
                None => (dpop, pop),
            };
            let mut b = ResourceServer::builder().dpop(dpop).pop(pop);
            if let Some(header) = s.mtls {
                b = b.mtls(
                    MtlsBinding::new(validator)
                        .trusted_proxies(s.trusted)
                        .header(header),
                );
            }
            if let Some(i) = &issuer {
                b = b.issuer(i.clone());
            }
            if let Some(n) = s.fleet.nonce_issuer()? {
                b = b.nonce_issuer(n);
            }
            let server = b.build().map_err(|e| e.to_string())?;
            Ok(Authenticator { server, issuer })
        }

        /// Discovery and the first JWKS fetch (nothing to do with --jwks).
        pub(super) async fn warm_up(&self) -> Result<(), String> {
            match &self.issuer {
                Some(i) => i.refresh().await.map_err(|e| e.to_string()),
                None => Ok(()),
            }
        }

        pub(super) async fn authenticate(
            &self,
            method: &str,
            url: &str,
            headers: &HeaderMap,
            peer: IpAddr,
        ) -> Result<Allowed, Refused> {
            // The gateway never sees the body (auth subrequests carry none):
            // an SHR that signs it (`b`) is refused as too large to check.
            match self
                .server
                .authenticate_url_from(method, url, headers, None, Some(peer), None)
                .await
            {
                Ok(ok) => allowed(ok).ok_or_else(|| Refused {
                    status: StatusCode::UNAUTHORIZED,
                    headers: vec![("cache-control", "no-store".to_owned())],
                    kind: "unbound_token",
                    detail: None,
                }),
                Err(no) => Err(refused(&no)),
            }
        }
    }

    fn allowed(ok: Authenticated) -> Option<Allowed> {
        if ok.jkt.is_none() && ok.certificate_thumbprint.is_none() {
            return None;
        }
        Some(Allowed {
            scheme: ok.scheme.as_str(),
            jkt: ok.jkt,
            x5t: ok.certificate_thumbprint,
            subject: ok.subject,
        })
    }

    /// The rejection's headers; several `WWW-Authenticate` challenges are
    /// joined into one value (RFC 9110 §11.6.1), because nginx's
    /// `auth_request` (before 1.23) and `$upstream_http_*` keep only the
    /// first header of a name.
    fn refused(no: &Rejection) -> Refused {
        let mut headers: Vec<(&'static str, String)> = Vec::new();
        let challenges: Vec<&str> = no
            .headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if !challenges.is_empty() {
            headers.push(("www-authenticate", challenges.join(", ")));
        }
        for name in ["dpop-nonce", "cache-control", "retry-after"] {
            if let Some(v) = no.headers().get(name).and_then(|v| v.to_str().ok()) {
                headers.push((name, v.to_owned()));
            }
        }
        Refused {
            status: no.status(),
            headers,
            kind: no.kind().as_str(),
            detail: no.detail().map(|d| d.to_string()),
        }
    }
}
