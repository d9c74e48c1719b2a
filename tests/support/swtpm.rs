//! A private swtpm per test: a temporary state directory, a free loopback
//! port pair, `--flags not-need-init,startup-clear`, killed by PID on drop.
//! A missing swtpm (or tpm2-tools, or the tpm2 OpenSSL provider) fails the
//! test and names the package to install; nothing is skipped.

use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Swtpm {
    child: Option<Child>,
    /// The TPM command port; the control port is `port + 1`.
    pub port: u16,
    state: tempfile::TempDir,
    /// A scratch directory for key files and tool output.
    pub work: tempfile::TempDir,
}

/// Two consecutive free loopback ports, below the kernel's ephemeral range
/// (32768 and up on Linux): swtpm binds without SO_REUSEADDR, so a port
/// that recently served as some client's source port (TIME-WAIT) would make
/// it fail. A clash that remains makes swtpm exit, and `start` tries again.
fn free_port_pair() -> u16 {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    for _ in 0..200 {
        let p: u16 = rng.gen_range(10_000..32_000);
        if TcpListener::bind(("127.0.0.1", p)).is_ok()
            && TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
        {
            return p;
        }
    }
    panic!("no free loopback port pair found");
}

impl Swtpm {
    /// Starts a fresh swtpm.
    pub fn start() -> Swtpm {
        let mut s = Swtpm {
            child: None,
            port: 0,
            state: tempfile::tempdir().expect("temp dir"),
            work: tempfile::tempdir().expect("temp dir"),
        };
        for _ in 0..10 {
            s.port = free_port_pair();
            if s.spawn() {
                return s;
            }
        }
        panic!("swtpm did not start (10 tries with different ports)");
    }

    /// Runs swtpm on this instance's ports and state; true once it listens.
    fn spawn(&mut self) -> bool {
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--server"])
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", self.port))
            .arg("--ctrl")
            .arg(format!(
                "type=tcp,port={},bindaddr=127.0.0.1",
                self.port + 1
            ))
            .arg("--tpmstate")
            .arg(format!("dir={}", self.state.path().display()))
            .args(["--flags", "not-need-init,startup-clear"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                panic!("`swtpm` is not installed: install the Debian packages `swtpm swtpm-tools`")
            }
            Err(e) => panic!("cannot run swtpm: {e}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return false; // exited: port taken, most likely
            }
            // Probe the control port; the command port serves one client
            // at a time and is left to the code under test.
            if TcpStream::connect(("127.0.0.1", self.port + 1)).is_ok() {
                self.child = Some(child);
                return true;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The TCTI string for this instance.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// A `tpm:` URI for `key` (`handle=…` or `path=…`) on this instance.
    pub fn uri(&self, key: &str) -> String {
        format!("tpm:{key};tcti={}", self.tcti())
    }

    /// A path in the scratch directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// Kills swtpm (SIGKILL, by PID) and starts it again on the same ports
    /// with the same state directory.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(Instant::now() < deadline, "swtpm did not restart");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs a TPM tool against this instance (TPM2TOOLS_TCTI and
    /// TPM2OPENSSL_TCTI set) in the scratch directory; panics unless it
    /// succeeds. `package` is named if the program is missing.
    pub fn tool(&self, package: &str, program: &str, args: &[&str]) -> Output {
        let out = self.try_tool(package, program, args);
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Like [`Swtpm::tool`], returning the output whatever the status.
    pub fn try_tool(&self, package: &str, program: &str, args: &[&str]) -> Output {
        match Command::new(program)
            .args(args)
            .current_dir(self.work.path())
            .env("TPM2TOOLS_TCTI", self.tcti())
            .env("TPM2OPENSSL_TCTI", self.tcti())
            .env("TSS2_LOG", "all+none")
            .stdin(Stdio::null())
            .output()
        {
            Ok(o) => o,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                panic!("`{program}` is not installed: install the Debian package `{package}`")
            }
            Err(e) => panic!("cannot run {program}: {e}"),
        }
    }

    /// tpm2-tools without a resource manager leave transient objects
    /// behind; flush them so the next command has slots.
    pub fn flush_transient(&self) {
        self.tool("tpm2-tools", "tpm2_flushcontext", &["-t"]);
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The stdout of a command as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
