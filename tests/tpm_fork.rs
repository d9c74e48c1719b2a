//! After `fork()`, a child that signs opens its own TPM connection instead
//! of using its parent's ESYS context, and the parent keeps signing with
//! its own. Alone in its test process: fork() and threads do not mix.
//!
//! The child signs with a persistent key: it leaves with `_exit`, so
//! whatever it loaded would stay in swtpm's three transient object slots,
//! and a persistent key needs none. It drops a file key the parent has
//! loaded: that must not flush the parent's object (swtpm has no resource
//! manager, so a flush through the inherited context would remove it).
#![cfg(all(feature = "tpm", unix))]

use popkey_testkit::common;
use popkey_testkit::swtpm;

use popkey::shr::SignedHttpRequest;
use popkey::{CreateOptions, PopCryptoProvider, PopKey};
use serde_json::Value;
use swtpm::Swtpm;

fn shr(key: &PopKey) -> popkey::Result<String> {
    SignedHttpRequest::new("GET", "https://api.example.com/fork", "at")?.sign(key)
}

#[test]
fn child_after_fork_signs_on_its_own_connection() {
    let tpm = Swtpm::start();
    let key = PopKey::create(&tpm.uri("handle=0x81000400"), &CreateOptions::new()).unwrap();
    let jwk: Value = serde_json::from_str(key.canonical_public_key_jwk()).unwrap();
    common::ring_verify(&shr(&key).unwrap(), &jwk);
    let path = tpm.file("key.pem");
    let file_key = PopKey::create(
        &tpm.uri(&format!("path={}", path.display())),
        &CreateOptions::new(),
    )
    .unwrap();
    let file_jwk: Value = serde_json::from_str(file_key.canonical_public_key_jwk()).unwrap();
    common::ring_verify(&shr(&file_key).unwrap(), &file_jwk);
    let transient = || {
        let out = tpm.tool("tpm2-tools", "tpm2_getcap", &["handles-transient"]);
        swtpm::stdout(&out)
            .lines()
            .filter(|l| l.contains("0x80"))
            .count()
    };
    // The storage primary and the file key.
    assert_eq!(transient(), 2);
    let out = tpm.file("child.out");

    // SAFETY: the child only signs, writes a file and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut lines = String::new();
            for _ in 0..10 {
                match shr(&key) {
                    Ok(s) => lines.push_str(&s),
                    Err(e) => lines.push_str(&format!("ERROR {e}")),
                }
                lines.push('\n');
            }
            // Dropping the last handle on the file key releases it.
            drop(file_key);
            std::fs::write(&out, lines).is_ok()
        }));
        // SAFETY: leaving the child without running the parent's destructors.
        unsafe { libc::_exit(if matches!(result, Ok(true)) { 0 } else { 1 }) };
    }
    // The parent signs while the child does.
    let mut mine = Vec::new();
    for _ in 0..10 {
        mine.push(shr(&key).unwrap());
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
    assert_eq!(lines.len(), 10);
    for l in lines {
        assert!(!l.starts_with("ERROR"), "child: {l}");
        common::ring_verify(l, &jwk);
    }
    for t in &mine {
        common::ring_verify(t, &jwk);
    }
    // The parent's objects were left alone by the child.
    assert_eq!(transient(), 2, "the child flushed the parent's objects");
    for _ in 0..10 {
        common::ring_verify(&shr(&key).unwrap(), &jwk);
        common::ring_verify(&shr(&file_key).unwrap(), &file_jwk);
    }
    assert_eq!(transient(), 2);
}
