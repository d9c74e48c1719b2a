//! After `fork()`, a child that signs initializes the module anew instead
//! of using its parent's sessions, and the parent keeps signing with its
//! own. Alone in its test process: fork() and threads do not mix.
#![cfg(all(feature = "pkcs11", unix))]

use popkey_testkit::common;
use popkey_testkit::softhsm;

use popkey::shr::SignedHttpRequest;
use popkey::{CreateOptions, PopCryptoProvider, PopKey};
use serde_json::Value;
use softhsm::token;

fn shr(key: &PopKey) -> popkey::Result<String> {
    SignedHttpRequest::new("GET", "https://api.example.com/fork", "at")?.sign(key)
}

#[test]
fn child_after_fork_signs_with_fresh_sessions() {
    let _serial = softhsm::serial();
    let t = token();
    let key = PopKey::create(&t.uri("forked"), &CreateOptions::new()).unwrap();
    let jwk: Value = serde_json::from_str(key.canonical_public_key_jwk()).unwrap();
    common::ring_verify(&shr(&key).unwrap(), &jwk);
    let out = t.hsm.dir.join("child.out");

    // SAFETY: the child only signs, writes a file and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut lines = String::new();
            for _ in 0..20 {
                match shr(&key) {
                    Ok(s) => lines.push_str(&s),
                    Err(e) => lines.push_str(&format!("ERROR {e}")),
                }
                lines.push('\n');
            }
            std::fs::write(&out, lines).is_ok()
        }));
        // SAFETY: leaving the child without running the parent's destructors.
        unsafe { libc::_exit(if matches!(result, Ok(true)) { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for the child forked above.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed: status {status}"
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 20);
    for l in lines {
        assert!(!l.starts_with("ERROR"), "child: {l}");
        common::ring_verify(l, &jwk);
    }
    // The parent's sessions were left alone by the child.
    for _ in 0..20 {
        common::ring_verify(&shr(&key).unwrap(), &jwk);
    }
}
