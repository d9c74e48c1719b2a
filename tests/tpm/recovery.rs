//! Recovery and concurrency on a private swtpm: a restarted simulator, four
//! threads on one key, more keys than the TPM has object slots.

use popkey_testkit::common;
use popkey_testkit::swtpm;

use popkey::shr::SignedHttpRequest;
use popkey::{Algorithm, CreateOptions, PopKey};
use swtpm::Swtpm;

fn shr(key: &PopKey, n: usize) -> String {
    SignedHttpRequest::new("GET", &format!("https://api.example.com/items/{n}"), "at")
        .unwrap()
        .sign(key)
        .unwrap()
}

#[test]
fn signing_survives_a_swtpm_restart() {
    let mut tpm = Swtpm::start();
    let path = tpm.file("key.pem");
    let file_key = PopKey::create(
        &tpm.uri(&format!("path={}", path.display())),
        &CreateOptions::new(),
    )
    .unwrap();
    let handle_key = PopKey::create(
        &tpm.uri("handle=0x81000200"),
        &CreateOptions::new().alg(Algorithm::RS256),
    )
    .unwrap();
    common::verify_shr(&shr(&file_key, 1));
    common::verify_shr(&shr(&handle_key, 1));

    // Same state directory, same ports: the connection drops, the
    // transient objects are gone, the persistent key and seeds remain.
    tpm.restart();
    common::verify_shr(&shr(&file_key, 2));
    common::verify_shr(&shr(&handle_key, 2));

    tpm.restart();
    tpm.restart();
    common::verify_shr(&shr(&handle_key, 3));
    common::verify_shr(&shr(&file_key, 3));
}

#[test]
fn four_threads_times_200_signatures() {
    let tpm = Swtpm::start();
    let path = tpm.file("key.pem");
    let key = PopKey::create(
        &tpm.uri(&format!("path={}", path.display())),
        &CreateOptions::new(),
    )
    .unwrap();
    let tokens: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let key = key.clone();
                s.spawn(move || (0..200).map(|i| shr(&key, t * 1000 + i)).collect())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut n = 0;
    for t in tokens.iter().flatten() {
        let (h, _) = common::verify_shr(t);
        assert_eq!(h["kid"], key.kid());
        n += 1;
    }
    assert_eq!(n, 800);
}

/// swtpm has three transient object slots and no resource manager: five
/// keys and the primary cannot all stay loaded, so popkey flushes the least
/// recently used one and reloads it when it is needed again.
#[test]
fn more_keys_than_object_slots() {
    let tpm = Swtpm::start();
    let keys: Vec<PopKey> = (0..5)
        .map(|i| {
            let path = tpm.file(&format!("key{i}.pem"));
            PopKey::create(
                &tpm.uri(&format!("path={}", path.display())),
                &CreateOptions::new(),
            )
            .unwrap()
        })
        .collect();
    let persistent = PopKey::create(&tpm.uri("handle=0x81000300"), &CreateOptions::new()).unwrap();
    for round in 0..3 {
        for (i, key) in keys.iter().enumerate() {
            common::verify_shr(&shr(key, round * 10 + i));
            common::verify_shr(&shr(&persistent, round * 10 + i));
        }
    }
    // Threads on different keys at once.
    std::thread::scope(|s| {
        for key in &keys {
            s.spawn(move || {
                for i in 0..20 {
                    common::verify_shr(&shr(key, i));
                }
            });
        }
    });
}

/// A TPM reset under a live connection (swtpm's CMD_INIT through the
/// control channel, then no TPM2_Startup): popkey sends TPM2_Startup, finds
/// its objects gone, reconnects and reloads.
#[test]
fn signing_survives_a_tpm_reset() {
    let tpm = Swtpm::start();
    let path = tpm.file("key.pem");
    let key = PopKey::create(
        &tpm.uri(&format!("path={}", path.display())),
        &CreateOptions::new(),
    )
    .unwrap();
    common::verify_shr(&shr(&key, 1));
    let ctrl = format!("127.0.0.1:{}", tpm.port + 1);
    tpm.tool("swtpm-tools", "swtpm_ioctl", &["--tcp", &ctrl, "-i"]);
    common::verify_shr(&shr(&key, 2));
    common::verify_shr(&shr(&key, 3));
}
