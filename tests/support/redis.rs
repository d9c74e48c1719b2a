//! A real `redis-server` for a test: its own free port (or unix socket) and
//! temporary directory, no persistence (`--save '' --appendonly no`),
//! killed by PID when dropped. Restartable on the same address, and
//! pausable (SIGSTOP) to play a slow server.
#![allow(dead_code)]

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
        };
        s.start();
        s
    }

    fn start_at(addr: Addr) -> Self {
        let mut s = RedisServer {
            child: None,
            addr,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        s.start();
        s
    }

    /// The URL to connect with.
    pub fn url(&self) -> String {
        match &self.addr {
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
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match &self.addr {
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
        panic!("redis-server did not answer PING at {}", self.url());
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
        self.raw(b"PING\r\n")
            .is_some_and(|r| r.starts_with("+PONG"))
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
        let mut cmd = Command::new("redis-cli");
        match &self.addr {
            Addr::Tcp(p) => cmd.args(["-h", "127.0.0.1", "-p", &p.to_string()]),
            Addr::Unix(path) => cmd.arg("-s").arg(path),
        };
        let out = cmd.args(args).output().expect("redis-cli is installed");
        assert!(out.status.success(), "redis-cli {args:?} failed");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
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
