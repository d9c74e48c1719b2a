//! Test support shared by popkey's integration tests, examples and benches:
//! one place instead of a support folder per test file.
//!
//! * [`common`]: independent checks of what popkey signs (`ring`, and Python
//!   `joserfc` through `tests/interop/verify_jws.py`), never popkey's own
//!   verification code;
//! * [`softhsm`]: a private SoftHSM2 token directory per test process;
//! * [`swtpm`]: a private swtpm per test, killed by PID on drop;
//! * [`redis`]: a private `redis-server` per test (TCP or unix socket);
//! * [`authority`]: a local Entra-style authority and a protected API;
//! * [`nginx`]: a private nginx per test (own config, prefix, temp dirs
//!   and free ports), killed by PID on drop;
//! * [`gateway`]: `popkey gateway` behind nginx (an echo upstream, the
//!   `auth_request` config, the gateway process);
//! * [`pki`]: a throwaway CA and server certificate made with openssl.
//!
//! Nothing here skips: a missing package fails the test and names it.

pub mod authority;
pub mod common;
pub mod gateway;
pub mod nginx;
pub mod pki;
pub mod redis;
pub mod softhsm;
pub mod swtpm;

/// The `popkey` binary cargo built beside the running test or example
/// (`target/<profile>/popkey`; test binaries live in `target/<profile>/deps`).
pub fn popkey_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("test binary directory").to_path_buf();
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir.pop();
    }
    let bin = dir.join("popkey");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo test builds it for integration tests)",
        bin.display()
    );
    bin
}
