//! Pieces for testing `popkey gateway` behind a real nginx: the upstream
//! API (a tiny axum app that echoes the identity headers nginx forwarded),
//! the nginx `auth_request` configuration the README documents, and the
//! gateway process itself (killed by PID on drop).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method, Uri};
use axum::Json;
use serde_json::{json, Value};

/// The upstream API: answers every request with
/// `{"method","uri","x_pop_subject","x_pop_jkt","x_pop_scheme","x_pop_status"}`,
/// the identity headers as it received them (`null` when absent).
pub struct EchoUpstream {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// Requests it answered.
    pub requests: Arc<AtomicUsize>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EchoUpstream {
    /// Starts it on a free loopback port, on its own thread and runtime.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = axum::Router::new().fallback(move |m: Method, u: Uri, h: HeaderMap| {
                    let count = count.clone();
                    async move {
                        count.fetch_add(1, Ordering::SeqCst);
                        let get = |n: &str| {
                            h.get(n)
                                .and_then(|v| v.to_str().ok())
                                .map(|v| Value::String(v.to_owned()))
                                .unwrap_or(Value::Null)
                        };
                        Json(json!({
                            "method": m.as_str(),
                            "uri": u.to_string(),
                            "x_pop_subject": get("x-pop-subject"),
                            "x_pop_jkt": get("x-pop-jkt"),
                            "x_pop_scheme": get("x-pop-scheme"),
                        }))
                    }
                });
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
            });
        });
        EchoUpstream {
            port,
            requests,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// Requests answered so far.
    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The nginx `http {}` contents for an API on `@PORT0@` whose `/` is
/// protected by `popkey gateway` at `gateway_port` through `auth_request`,
/// and, on `@PORT1@`, the same upstream without it (for comparisons).
///
/// This is the configuration the README's "Behind nginx" section shows:
/// the subrequest carries the original method and URI and the public
/// origin; 401 answers keep `WWW-Authenticate` and `DPoP-Nonce`; a 400 or
/// 503 from the gateway (which `auth_request` would turn into 500) is given
/// back with its own status through `X-Pop-Status`.
pub fn auth_request_http(gateway_port: u16, upstream_port: u16) -> String {
    format!(
        r#"
  upstream popkey_gateway {{ server 127.0.0.1:{gateway_port}; keepalive 16; }}
  upstream api {{ server 127.0.0.1:{upstream_port}; keepalive 16; }}

  server {{
    listen 127.0.0.1:@PORT0@;

    location / {{
      auth_request /_popkey_auth;
      # What the gateway verified, for the API.
      auth_request_set $pop_subject $upstream_http_x_pop_subject;
      auth_request_set $pop_jkt $upstream_http_x_pop_jkt;
      auth_request_set $pop_scheme $upstream_http_x_pop_scheme;
      # What the client needs when it is refused (or gets a fresh nonce).
      auth_request_set $pop_status $upstream_http_x_pop_status;
      auth_request_set $pop_challenge $upstream_http_www_authenticate;
      auth_request_set $pop_nonce $upstream_http_dpop_nonce;
      error_page 401 = @popkey_refused;
      error_page 500 = @popkey_error;
      add_header DPoP-Nonce $pop_nonce always;

      proxy_set_header X-Pop-Subject $pop_subject;
      proxy_set_header X-Pop-Jkt $pop_jkt;
      proxy_set_header X-Pop-Scheme $pop_scheme;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://api;
    }}

    location = /_popkey_auth {{
      internal;
      proxy_pass http://popkey_gateway;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}

    # auth_request itself copies WWW-Authenticate onto a 401.
    location @popkey_refused {{
      add_header DPoP-Nonce $pop_nonce always;
      add_header Cache-Control no-store always;
      return 401;
    }}

    location @popkey_error {{
      add_header WWW-Authenticate $pop_challenge always;
      add_header DPoP-Nonce $pop_nonce always;
      add_header Cache-Control no-store always;
      if ($pop_status = 400) {{ return 400; }}
      if ($pop_status = 503) {{ return 503; }}
      return 500;
    }}
  }}

  server {{
    listen 127.0.0.1:@PORT1@;
    location / {{
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://api;
    }}
  }}
"#
    )
}

/// A running `popkey gateway`, killed by PID on drop.
pub struct GatewayProcess {
    child: Option<Child>,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    log: tempfile::NamedTempFile,
}

impl GatewayProcess {
    /// Runs `popkey gateway --listen 127.0.0.1:<free port> <args>` and
    /// waits until `/healthz` answers. Panics with its log when it exits
    /// or does not answer within 20 s.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with(args, &[])
    }

    /// As [`GatewayProcess::start`], with extra environment.
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Self {
        let port = crate::nginx::reserve_ports(1)[0];
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = Command::new(crate::popkey_bin())
            .arg("gateway")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .env_remove("POPKEY_KEY")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("log"))
            .stderr(log.reopen().expect("log"))
            .spawn()
            .expect("run popkey gateway");
        let mut g = GatewayProcess {
            child: Some(child),
            port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = g.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                g.child = None;
                panic!("popkey gateway exited with {status}:\n{}", g.log());
            }
            if get_status(port, "/healthz") == Some(200) {
                return g;
            }
            assert!(
                Instant::now() < deadline,
                "popkey gateway does not answer /healthz:\n{}",
                g.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What it logged so far (stdout and stderr).
    pub fn log(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(self.log.path()).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    /// The log file's path.
    pub fn log_path(&self) -> PathBuf {
        self.log.path().to_path_buf()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("gateway running").id()
    }

    /// Sends SIGTERM and waits (at most 10 s) for it to exit; returns
    /// whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        // SAFETY: kill(2) on our own child's PID.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `GET http://127.0.0.1:<port><path>` over HTTP/1.0, read to the end; the
/// status code, or `None` when nothing answers.
pub fn get_status(port: u16, path: &str) -> Option<u16> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    // To the end: the server has finished (and logged) the request.
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    std::str::from_utf8(resp.get(9..12)?).ok()?.parse().ok()
}
