//! `install_default` / `default_key` / `rotate_default`: one process-wide key
//! (this file is its own test process, so the global starts empty).

use popkey_testkit::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use popkey::dpop::DpopProof;
use popkey::PopKey;

#[test]
fn install_get_and_rotate_under_concurrency() {
    assert!(popkey::default_key().is_none());
    let first = PopKey::open("mem:").unwrap();
    popkey::install_default(first.clone()).unwrap();
    assert!(popkey::default_key().unwrap().same_handle(&first));
    let again = PopKey::open("mem:").unwrap();
    assert!(popkey::install_default(again.clone())
        .unwrap_err()
        .same_handle(&again));
    assert!(popkey::install_default_slot(popkey::KeySlot::new(again)).is_err());

    let stop = Arc::new(AtomicBool::new(false));
    let rotator = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                popkey::rotate_default(PopKey::open("mem:").unwrap()).unwrap();
                n += 1;
            }
            n
        })
    };
    let workers: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                for _ in 0..300 {
                    let key = popkey::default_key().unwrap();
                    let proof = DpopProof::new("GET", "https://api.example.com/")
                        .unwrap()
                        .sign(&key)
                        .unwrap();
                    let (h, _) = common::verify_dpop(&proof);
                    assert_eq!(common::thumbprint(&h["jwk"]), key.kid());
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(rotator.join().unwrap() > 0);
    assert!(!popkey::default_key().unwrap().same_handle(&first));
}
