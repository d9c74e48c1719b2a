//! The process-wide key and rotation: a signature and the JWK next to it
//! always come from the same key, however often another thread rotates.

use popkey_testkit::common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use popkey::shr::SignedHttpRequest;
use popkey::{KeySlot, PopCryptoProvider, PopKey};

#[test]
fn snapshots_stay_coherent_while_rotating() {
    for (uri, rotations) in [("mem:", 50), ("mem:?alg=PS256", 3)] {
        let slot = Arc::new(KeySlot::open(uri).unwrap());
        let done = Arc::new(AtomicBool::new(false));
        // Every signer signs once before the first rotation and keeps going
        // until the last one has happened, so each sees at least two keys.
        let start = Arc::new(Barrier::new(5));
        let signers: Vec<_> = (0..4)
            .map(|_| {
                let (slot, done, start) = (slot.clone(), done.clone(), start.clone());
                std::thread::spawn(move || {
                    let mut seen = HashSet::new();
                    let mut first = true;
                    loop {
                        let finished = done.load(Ordering::SeqCst);
                        let key = slot.current();
                        let shr = SignedHttpRequest::new("GET", "https://api.example.com/x", "at")
                            .unwrap()
                            .sign(&key)
                            .unwrap();
                        // The JWK in cnf verifies the signature, and the kid
                        // in the header is that JWK's thumbprint.
                        let (h, p) = common::verify_shr(&shr);
                        assert_eq!(h["kid"], common::thumbprint(&p["cnf"]["jwk"]));
                        assert_eq!(h["kid"], key.kid());
                        seen.insert(key.kid().to_owned());
                        if first {
                            start.wait();
                            first = false;
                        }
                        if finished {
                            return seen;
                        }
                    }
                })
            })
            .collect();
        start.wait();
        for _ in 0..rotations {
            slot.rotate_now().unwrap();
        }
        done.store(true, Ordering::SeqCst);
        for s in signers {
            let seen = s.join().unwrap();
            assert!(
                seen.len() >= 2,
                "{uri}: a signer saw only {} key(s)",
                seen.len()
            );
        }
    }
}

#[test]
fn an_old_snapshot_keeps_signing_with_the_old_key() {
    let slot = KeySlot::open("mem:").unwrap();
    let old = slot.current();
    let replaced = slot.rotate_now().unwrap();
    assert!(replaced.same_handle(&old));
    let new = slot.current();
    assert_ne!(old.kid(), new.kid());
    let sig = old.sign(b"input").unwrap();
    old.public_jwk()
        .verify(old.algorithm(), b"input", &sig)
        .unwrap();
    assert!(new
        .public_jwk()
        .verify(new.algorithm(), b"input", &sig)
        .is_err());
}

#[test]
fn rotate_interval_makes_a_new_key_after_it_passes() {
    let slot = KeySlot::open("mem:?rotate=1s").unwrap();
    let first = slot.current();
    assert!(slot.current().same_handle(&first), "not due yet");
    std::thread::sleep(Duration::from_millis(1100));
    let second = slot.current();
    assert_ne!(first.kid(), second.kid());
    assert!(slot.current().same_handle(&second));
}

#[test]
fn only_mem_slots_regenerate() {
    let slot = KeySlot::new(PopKey::open("mem:").unwrap());
    assert!(slot.rotate_now().is_err());
    let other = PopKey::open("mem:").unwrap();
    slot.replace(other.clone());
    assert!(slot.current().same_handle(&other));
}
