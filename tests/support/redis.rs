//! A real `redis-server` for a test: its own free port (or unix socket) and
//! temporary directory, no persistence (`--save '' --appendonly no`),
//! killed by PID when dropped. Restartable on the same address, and
//! pausable (SIGSTOP) to play a slow server.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the server listens.
#[derive(Clone, Debug)]
enum Addr {
    Tcp(u16),
    Unix(PathBuf),
}

/// A running `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    addr: Addr,
    dir: tempfile::TempDir,
    /// TLS only (the CA file that signed the server's certificate).
    tls_ca: Option<PathBuf>,
    /// `requirepass`.
    password: Option<String>,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

impl RedisServer {
    /// A server on a free loopback TCP port.
    pub fn tcp() -> Self {
        Self::start_at(Addr::Tcp(free_port()))
    }

    /// A server on a unix socket only (no TCP).
    pub fn unix() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("redis.sock");
        let mut s = RedisServer {
            child: None,
            addr: Addr::Unix(sock),
            dir,
            tls_ca: None,
            password: None,
        };
        s.start();
        s
    }

    /// A server speaking TLS only (certificate for `localhost`, signed by
    /// a CA made here with openssl: [`RedisServer::ca_file`]) and requiring
    /// `password`.
    pub fn tls_with_password(password: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let ok = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl is installed")
                .success();
            assert!(ok, "openssl {args:?}");
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=popkey test CA",
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=localhost",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            d.join("ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ]);
        let mut s = RedisServer {
            child: None,
            addr: Addr::Tcp(free_port()),
            tls_ca: Some(d.join("ca.pem")),
            dir,
            password: Some(password.to_owned()),
        };
        s.start();
        s
    }

    /// The CA file a TLS server's certificate chains to.
    pub fn ca_file(&self) -> &std::path::Path {
        self.tls_ca.as_deref().expect("a TLS server")
    }

    fn start_at(addr: Addr) -> Self {
        let mut s = RedisServer {
            child: None,
            addr,
            dir: tempfile::tempdir().expect("tempdir"),
            tls_ca: None,
            password: None,
        };
        s.start();
        s
    }

    /// The URL to connect with.
    pub fn url(&self) -> String {
        match &self.addr {
            Addr::Tcp(p) if self.tls_ca.is_some() => format!("rediss://localhost:{p}/0"),
            Addr::Tcp(p) => format!("redis://127.0.0.1:{p}/0"),
            Addr::Unix(path) => format!("unix://{}", path.display()),
        }
    }

    /// The server's PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Starts (again) on the same address, and waits until it answers PING.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(pass) = &self.password {
            cmd.args(["--requirepass", pass]);
        }
        match &self.addr {
            Addr::Tcp(p) if self.tls_ca.is_some() => {
                let d = self.dir.path();
                cmd.args(["--port", "0", "--tls-port", &p.to_string()])
                    .args(["--tls-auth-clients", "no"])
                    .arg("--tls-cert-file")
                    .arg(d.join("server.pem"))
                    .arg("--tls-key-file")
                    .arg(d.join("server.key"))
                    .arg("--tls-ca-cert-file")
                    .arg(d.join("ca.pem"));
            }
            Addr::Tcp(p) => {
                cmd.args(["--port", &p.to_string()]);
            }
            Addr::Unix(path) => {
                cmd.args(["--port", "0", "--unixsocketperm", "700"])
                    .arg("--unixsocket")
                    .arg(path);
            }
        }
        self.child = Some(cmd.spawn().expect("redis-server is installed (ci/lib.sh)"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        panic!("redis-server did not answer PING at {}:\n{log}", self.url());
    }

    /// Kills the server (SIGKILL, by PID) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the process (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Resumes a paused process (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: kill(2) on our own child's PID.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig})");
    }

    fn ping(&self) -> bool {
        if self.tls_ca.is_some() {
            return self.try_cli(&["PING"]).is_some_and(|r| r == "PONG");
        }
        // Up, whether or not it wants a password first.
        self.raw(b"PING\r\n")
            .is_some_and(|r| r.starts_with("+PONG") || r.starts_with("-NOAUTH"))
    }

    /// Sends one inline command, returns the first reply chunk.
    fn raw(&self, cmd: &[u8]) -> Option<String> {
        fn talk<S: Read + Write>(mut s: S, cmd: &[u8]) -> Option<String> {
            s.write_all(cmd).ok()?;
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).ok()?;
            Some(String::from_utf8_lossy(&buf[..n]).into_owned())
        }
        match &self.addr {
            Addr::Tcp(p) => {
                let s = std::net::TcpStream::connect(("127.0.0.1", *p)).ok()?;
                s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
                talk(s, cmd)
            }
            Addr::Unix(path) => {
                let s = std::os::unix::net::UnixStream::connect(path).ok()?;
                s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
                talk(s, cmd)
            }
        }
    }

    /// Runs `redis-cli` against this server; returns its trimmed output.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} failed"))
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let mut cmd = Command::new("redis-cli");
        match &self.addr {
            Addr::Tcp(p) if self.tls_ca.is_some() => cmd
                .args(["--tls", "-h", "localhost", "-p", &p.to_string()])
                .arg("--cacert")
                .arg(self.ca_file()),
            Addr::Tcp(p) => cmd.args(["-h", "127.0.0.1", "-p", &p.to_string()]),
            Addr::Unix(path) => cmd.arg("-s").arg(path),
        };
        if let Some(pass) = &self.password {
            // Through the environment, not the process list.
            cmd.env("REDISCLI_AUTH", pass);
        }
        let out = cmd.args(args).stderr(Stdio::null()).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            // SIGKILL ends a stopped (paused) process too.
            self.kill();
        }
    }
}
