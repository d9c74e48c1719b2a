//! A real nginx for a test: its own configuration, prefix, temporary
//! directories (client body and proxy temp paths, logs, pid file) and free
//! loopback ports, run in the foreground as one process
//! (`daemon off; master_process off;`) and killed by PID when dropped.
//! Never the system service.
//!
//! The caller writes the `http {}` block's contents (servers, upstreams,
//! locations); the kit writes the rest and fills in placeholders:
//!
//! * `@PORT0@`, `@PORT1@`, …: free loopback ports, as many as
//!   [`NginxBuilder::ports`] asks for (nginx listens on them; the kit waits
//!   until every one accepts connections);
//! * `@DIR@`: the instance's private directory (absolute, no trailing `/`),
//!   e.g. for certificate files written there with [`Nginx::dir`] known in
//!   advance through [`NginxBuilder::files`].
//!
//! ```no_run
//! use popkey_testkit::nginx::Nginx;
//! let upstream = 8080;
//! let nginx = Nginx::builder()
//!     .ports(1)
//!     .http(&format!(
//!         "server {{ listen 127.0.0.1:@PORT0@; \
//!          location / {{ proxy_pass http://127.0.0.1:{upstream}; }} }}"
//!     ))
//!     .start();
//! let base = nginx.url(0); // http://127.0.0.1:<port>
//! # let _ = base;
//! ```
//!
//! If nginx does not start (bad configuration, a port taken), the panic
//! message carries its error log. [`Nginx::error_log`] and
//! [`Nginx::access_log`] read the logs during a test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nginx binary: `$POPKEY_NGINX`, else Debian's `/usr/sbin/nginx`,
/// else `nginx` on the PATH.
pub fn nginx_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("POPKEY_NGINX") {
        return PathBuf::from(p);
    }
    let debian = Path::new("/usr/sbin/nginx");
    if debian.exists() {
        return debian.to_path_buf();
    }
    PathBuf::from("nginx")
}

/// What to start: see [`Nginx::builder`].
#[derive(Clone, Debug, Default)]
pub struct NginxBuilder {
    ports: usize,
    http: String,
    main: String,
    files: Vec<(String, Vec<u8>)>,
}

impl NginxBuilder {
    /// How many free loopback ports to reserve as `@PORT0@`…`@PORT{n-1}@`.
    pub fn ports(mut self, n: usize) -> Self {
        self.ports = n;
        self
    }

    /// The contents of the `http {}` block (servers, upstreams, maps…),
    /// with placeholders. Temp paths, logs and `default_type` are set by
    /// the kit before it; do not repeat them.
    pub fn http(mut self, text: &str) -> Self {
        self.http = text.to_owned();
        self
    }

    /// Extra main-context directives (e.g. `worker_rlimit_nofile 4096;` or
    /// a `stream {}` block), with placeholders.
    pub fn main(mut self, text: &str) -> Self {
        self.main = text.to_owned();
        self
    }

    /// A file to write into the instance directory before nginx starts
    /// (a certificate, a key, a static page), by name relative to `@DIR@`.
    pub fn file(mut self, name: &str, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push((name.to_owned(), contents.into()));
        self
    }

    /// Several [`NginxBuilder::file`]s at once.
    pub fn files<N: AsRef<str>, C: Into<Vec<u8>>>(
        mut self,
        files: impl IntoIterator<Item = (N, C)>,
    ) -> Self {
        for (n, c) in files {
            self = self.file(n.as_ref(), c);
        }
        self
    }

    /// Starts nginx and waits until every port accepts connections. Panics
    /// with the error log when it does not start. A port that another
    /// process took in the meantime is retried with fresh ports (3 tries).
    pub fn start(self) -> Nginx {
        let mut last = String::new();
        for _ in 0..3 {
            match self.try_start() {
                Ok(n) => return n,
                Err((retry, log)) => {
                    last = log;
                    if !retry {
                        break;
                    }
                }
            }
        }
        panic!("nginx did not start:\n{last}");
    }

    fn try_start(&self) -> Result<Nginx, (bool, String)> {
        let dir = tempfile::Builder::new()
            .prefix("popkey-nginx-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        for sub in ["logs", "tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"] {
            std::fs::create_dir_all(d.join(sub)).expect("create nginx directories");
        }
        for (name, contents) in &self.files {
            let path = d.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("create file directory");
            }
            std::fs::write(&path, contents).expect("write nginx file");
        }
        let ports: Vec<u16> = reserve_ports(self.ports);
        let fill = |text: &str| {
            let mut t = text.replace("@DIR@", &d.display().to_string());
            // Highest index first, so @PORT1@ never eats the start of @PORT10@.
            for (i, p) in ports.iter().enumerate().rev() {
                t = t.replace(&format!("@PORT{i}@"), &p.to_string());
            }
            t
        };
        let http = fill(&self.http);
        let main = fill(&self.main);
        if let Some(pos) = http.find("@PORT") {
            panic!(
                "nginx config names a port placeholder beyond the {} reserved: {}",
                ports.len(),
                &http[pos..http.len().min(pos + 12)]
            );
        }
        let conf = format!(
            "# Written by popkey-testkit for one test.\n\
             daemon off;\n\
             master_process off;\n\
             worker_processes 1;\n\
             pid {dir}/nginx.pid;\n\
             error_log {dir}/logs/error.log info;\n\
             events {{ worker_connections 1024; }}\n\
             {main}\n\
             http {{\n\
             \x20 access_log {dir}/logs/access.log;\n\
             \x20 client_body_temp_path {dir}/tmp/body;\n\
             \x20 proxy_temp_path {dir}/tmp/proxy;\n\
             \x20 fastcgi_temp_path {dir}/tmp/fastcgi;\n\
             \x20 uwsgi_temp_path {dir}/tmp/uwsgi;\n\
             \x20 scgi_temp_path {dir}/tmp/scgi;\n\
             \x20 default_type application/octet-stream;\n\
             {http}\n\
             }}\n",
            dir = d.display(),
        );
        let conf_path = d.join("nginx.conf");
        std::fs::write(&conf_path, &conf).expect("write nginx.conf");
        let stderr = std::fs::File::create(d.join("logs/stderr.log")).expect("stderr log");
        let child = Command::new(nginx_bin())
            .arg("-p")
            .arg(d)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(d.join("logs/error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): nginx is installed by ci/lib.sh (apt-get install nginx)",
                    nginx_bin().display()
                )
            });
        let mut nginx = Nginx {
            child: Some(child),
            ports,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = nginx.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                nginx.child = None;
                let log = nginx.logs_for_failure(&conf);
                let retry = log.contains("Address already in use");
                return Err((retry, format!("nginx exited with {status}\n{log}")));
            }
            if nginx.ports.iter().all(|p| port_open(*p)) {
                return Ok(nginx);
            }
            if Instant::now() > deadline {
                let log = nginx.logs_for_failure(&conf);
                return Err((false, format!("nginx is not listening after 10 s\n{log}")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A running nginx, killed (by PID) when dropped.
pub struct Nginx {
    child: Option<Child>,
    ports: Vec<u16>,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// What to start: ports, the `http {}` contents, extra files.
    pub fn builder() -> NginxBuilder {
        NginxBuilder::default()
    }

    /// Starts nginx with `ports` free ports and this `http {}` contents.
    pub fn start(ports: usize, http: &str) -> Nginx {
        Nginx::builder().ports(ports).http(http).start()
    }

    /// The port that replaced `@PORT{i}@`.
    pub fn port(&self, i: usize) -> u16 {
        self.ports[i]
    }

    /// `http://127.0.0.1:<port i>`.
    pub fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.port(i))
    }

    /// The instance's directory (`@DIR@`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// nginx's PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("nginx running").id()
    }

    /// The error log so far (level `info`).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir().join("logs/error.log")).unwrap_or_default()
    }

    /// The access log so far (the default `combined` format unless the
    /// caller's config says otherwise).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir().join("logs/access.log")).unwrap_or_default()
    }

    /// The configuration nginx was started with.
    pub fn config(&self) -> String {
        std::fs::read_to_string(self.dir().join("nginx.conf")).unwrap_or_default()
    }

    fn logs_for_failure(&self, conf: &str) -> String {
        let stderr = std::fs::read_to_string(self.dir().join("logs/stderr.log")).unwrap_or_default();
        format!(
            "--- error log ---\n{}\n--- stderr ---\n{stderr}\n--- nginx.conf ---\n{conf}",
            self.error_log()
        )
    }

    /// Stops nginx now (SIGKILL by PID) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.kill();
    }
}

impl std::fmt::Debug for Nginx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nginx")
            .field("ports", &self.ports)
            .field("dir", &self.dir.path())
            .finish()
    }
}

/// `n` distinct free loopback ports (each was bindable a moment ago).
pub fn reserve_ports(n: usize) -> Vec<u16> {
    // Hold every listener until all are chosen, so the n ports differ.
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}
