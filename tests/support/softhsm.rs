//! SoftHSM2 for the PKCS#11 tests.
//!
//! SoftHSM reads `SOFTHSM2_CONF` and scans its token directory at
//! `C_Initialize`, and popkey initializes a module once per process. So each
//! test *process* (each `tests/pkcs11_*.rs` file) gets one temporary
//! directory with its own config, holding a token per test, all created
//! before the first PKCS#11 call. Tests that need a process of their own
//! run the `popkey` binary or re-run this test binary as a child with the
//! same `SOFTHSM2_CONF`.
//!
//! The configuration sets `library.reset_on_fork = true`, so a forked child
//! that used its parent's module state would fail: it must initialize anew.
//!
//! Nothing here skips: without `softhsm2-util` (package `softhsm2`) or
//! `pkcs11-tool` (package `opensc`) the tests fail and say what to install.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

pub const USER_PIN: &str = "123456";
pub const SO_PIN: &str = "12345678";
/// Tokens made per test process.
const TOKENS: usize = 16;

pub struct Hsm {
    _dir: tempfile::TempDir,
    pub dir: PathBuf,
    pub conf: PathBuf,
    pub module: PathBuf,
    pub pin_file: PathBuf,
    next: AtomicUsize,
}

/// One token, for one test.
pub struct Token {
    pub label: String,
    pub hsm: &'static Hsm,
}

pub fn softhsm_module() -> PathBuf {
    if let Some(m) = std::env::var_os("POPKEY_TEST_SOFTHSM_MODULE") {
        return PathBuf::from(m);
    }
    for m in [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib64/pkcs11/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ] {
        if Path::new(m).exists() {
            return PathBuf::from(m);
        }
    }
    panic!("libsofthsm2.so not found: install the `softhsm2` package (apt-get install softhsm2)");
}

pub fn run(cmd: &mut Command, what: &str, package: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {what}: {e}; install the `{package}` package (apt-get install {package})"
        )
    });
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The per-process SoftHSM directory, with its tokens initialized.
pub fn hsm() -> &'static Hsm {
    static HSM: OnceLock<Hsm> = OnceLock::new();
    HSM.get_or_init(|| {
        let module = softhsm_module();
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_path_buf();
        std::fs::create_dir_all(path.join("tokens")).unwrap();
        let conf = path.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\nlibrary.reset_on_fork = true\n",
                path.join("tokens").display()
            ),
        )
        .unwrap();
        for i in 0..TOKENS {
            run(
                Command::new("softhsm2-util")
                    .env("SOFTHSM2_CONF", &conf)
                    .args(["--init-token", "--free", "--label"])
                    .arg(format!("t{i:02}"))
                    .args(["--so-pin", SO_PIN, "--pin", USER_PIN]),
                "softhsm2-util --init-token",
                "softhsm2",
            );
        }
        let pin_file = path.join("user.pin");
        std::fs::write(&pin_file, format!("{USER_PIN}\n")).unwrap();
        // Before any module is initialized in this process.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        Hsm {
            _dir: dir,
            dir: path,
            conf,
            module,
            pin_file,
            next: AtomicUsize::new(0),
        }
    })
}

/// Serializes the tests of one process. SoftHSM's file store is shared by
/// processes (pkcs11-tool, the popkey CLI, child signers) but it does not
/// promise that a process sees objects another one wrote while it is busy
/// writing itself, so tests never overlap: each holds this while it runs.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A token of its own for the calling test.
pub fn token() -> Token {
    let hsm = hsm();
    let i = hsm.next.fetch_add(1, Ordering::SeqCst);
    assert!(
        i < TOKENS,
        "more than {TOKENS} tokens asked for in one test process"
    );
    Token {
        label: format!("t{i:02}"),
        hsm,
    }
}

impl Token {
    /// `pkcs11:token=…;object=NAME?module-path=…&pin-source=…`
    pub fn uri(&self, object: &str) -> String {
        self.uri_with(object, "")
    }

    /// As [`Token::uri`], with `extra` appended to the query (`&alg=PS256`).
    pub fn uri_with(&self, object: &str, extra: &str) -> String {
        format!(
            "pkcs11:token={};object={object}?module-path={}&pin-source={}{extra}",
            self.label,
            self.hsm.module.display(),
            self.hsm.pin_file.display()
        )
    }

    /// The objects `pkcs11-tool --list-objects` shows, one block each,
    /// sorted (the listing order is not stable).
    pub fn objects(&self) -> Vec<String> {
        let listing = self.pkcs11_tool(&["--list-objects"]);
        let mut blocks: Vec<String> = Vec::new();
        for line in listing.lines() {
            if !line.starts_with(' ') || blocks.is_empty() {
                blocks.push(String::new());
            }
            let last = blocks.len() - 1;
            blocks[last].push_str(line);
            blocks[last].push('\n');
        }
        blocks.sort();
        blocks
    }

    /// Runs `pkcs11-tool` on this token, logged in; returns stdout.
    pub fn pkcs11_tool(&self, args: &[&str]) -> String {
        let out = run(
            Command::new("pkcs11-tool")
                .env("SOFTHSM2_CONF", &self.hsm.conf)
                .arg("--module")
                .arg(&self.hsm.module)
                .args(["--token-label", &self.label, "--login", "--pin", USER_PIN])
                .args(args),
            "pkcs11-tool",
            "opensc",
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The `popkey` CLI, with this test process's SoftHSM configuration.
    pub fn popkey(&self, args: &[&str]) -> Output {
        Command::new(crate::popkey_bin())
            .env("SOFTHSM2_CONF", &self.hsm.conf)
            .env_remove("POPKEY_KEY")
            .args(args)
            .output()
            .expect("run popkey")
    }
}

/// A `cryptoki` handle on SoftHSM in this process, for tests that act on the
/// token behind popkey's back. SoftHSM is already initialized by popkey or
/// gets initialized here; both are fine.
pub fn cryptoki() -> cryptoki::context::Pkcs11 {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    let p = Pkcs11::new(&hsm().module).expect("load SoftHSM");
    match p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => {}
        Err(cryptoki::error::Error::Pkcs11(
            cryptoki::error::RvError::CryptokiAlreadyInitialized,
            _,
        )) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    p
}

/// The slot holding token `label`.
pub fn slot_of(p: &cryptoki::context::Pkcs11, label: &str) -> cryptoki::slot::Slot {
    p.get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| {
            p.get_token_info(*s)
                .map(|i| i.label() == label)
                .unwrap_or(false)
        })
        .unwrap_or_else(|| panic!("token {label} not found"))
}

/// popkey re-initializes a module at most once per 2 s. Tests that need it
/// to re-initialize again (to see a token put back behind its back) wait
/// this long first.
pub fn past_reset_interval() {
    std::thread::sleep(std::time::Duration::from_millis(2100));
}

/// Logs `session`'s application in with `pin` (already logged in is fine).
pub fn login(session: &cryptoki::session::Session, pin: &str) {
    use cryptoki::error::{Error as CkError, RvError};
    match session.login(
        cryptoki::session::UserType::User,
        Some(&cryptoki::types::AuthPin::from(pin)),
    ) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login: {e}"),
    }
}
