//! base64url without padding (RFC 7515 §2), strict on input.
//!
//! Encoding and decoding run on `base64-simd` (SIMD where the CPU has it,
//! chosen at run time); it refuses exactly what the `base64` crate's strict
//! engine refuses (padding, other alphabets, non-canonical trailing bits),
//! and that engine, run again on refused input only, words the error.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as SCALAR;
use base64::Engine;
use base64_simd::URL_SAFE_NO_PAD as SIMD;

/// Encodes `bytes` as unpadded base64url.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    SIMD.encode_to_string(bytes.as_ref())
}

/// Decodes unpadded base64url, rejecting padding, other alphabets and
/// non-canonical trailing bits.
pub fn decode(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    decode_into(text, &mut out)?;
    Ok(out)
}

/// Why `text` is not strict unpadded base64url, in the scalar engine's words.
#[cold]
fn refusal(text: &str) -> String {
    match SCALAR.decode(text) {
        Err(e) => format!("invalid base64url: {e}"),
        // Both engines refuse the same inputs; should they ever disagree,
        // the input is still refused.
        Ok(_) => "invalid base64url".to_string(),
    }
}

/// [`decode`] appending to `out` (a reused buffer), with the same checks
/// and messages.
pub(crate) fn decode_into(text: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let start = out.len();
    let Ok(len) = SIMD.decoded_length(text.as_bytes()) else {
        return Err(refusal(text));
    };
    out.resize(start + len, 0);
    match SIMD.decode(
        text.as_bytes(),
        base64_simd::Out::from_slice(&mut out[start..]),
    ) {
        Ok(written) => {
            let written = written.len();
            out.truncate(start + written);
            Ok(())
        }
        Err(_) => {
            out.truncate(start);
            Err(refusal(text))
        }
    }
}

/// [`encode`] of a SHA-256 digest, on the stack.
pub(crate) fn encode_digest(digest: &[u8; 32]) -> [u8; 43] {
    let mut out = [0u8; 43];
    let _ = SIMD.encode(digest, base64_simd::Out::from_slice(&mut out));
    out
}

/// [`encode`] appending to `out`.
pub(crate) fn encode_into(bytes: impl AsRef<[u8]>, out: &mut String) {
    SIMD.encode_append(bytes.as_ref(), out)
}

/// [`encode`] appended to a byte buffer, written in place.
pub(crate) fn encode_append(bytes: impl AsRef<[u8]>, out: &mut Vec<u8>) {
    let bytes = bytes.as_ref();
    let start = out.len();
    out.resize(start + SIMD.encoded_length(bytes.len()), 0);
    let written = SIMD
        .encode(bytes, base64_simd::Out::from_slice(&mut out[start..]))
        .len();
    out.truncate(start + written);
}

/// Byte buffers reused by the verifiers on each thread, so decoding a proof
/// of a few kilobytes does not allocate (and free) a large block per request.
pub(crate) mod scratch {
    use std::cell::RefCell;

    /// Buffers kept per thread, and the largest one worth keeping.
    const KEEP: usize = 4;
    const KEEP_CAPACITY: usize = 80 * 1024;

    thread_local! {
        static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    /// An empty buffer from this thread's pool (or a new one); it goes back
    /// to the pool, cleared, when dropped.
    pub(crate) struct Scratch(Vec<u8>);

    impl Scratch {
        pub(crate) fn take() -> Self {
            let buf = POOL
                .try_with(|p| p.try_borrow_mut().ok().and_then(|mut p| p.pop()))
                .ok()
                .flatten()
                .unwrap_or_default();
            Scratch(buf)
        }
    }

    impl std::ops::Deref for Scratch {
        type Target = Vec<u8>;
        fn deref(&self) -> &Vec<u8> {
            &self.0
        }
    }

    impl std::ops::DerefMut for Scratch {
        fn deref_mut(&mut self) -> &mut Vec<u8> {
            &mut self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let mut buf = std::mem::take(&mut self.0);
            if buf.capacity() == 0 || buf.capacity() > KEEP_CAPACITY {
                return;
            }
            buf.clear();
            let _ = POOL.try_with(|p| {
                if let Ok(mut p) = p.try_borrow_mut() {
                    if p.len() < KEEP {
                        p.push(buf);
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    /// The SIMD engine accepts and refuses exactly what the strict scalar
    /// engine does, and decodes to the same bytes: every string of up to
    /// 4 characters over an alphabet with both alphabets' extras, padding
    /// and a dot, then long strings with one character changed anywhere.
    #[test]
    fn same_verdicts_as_the_scalar_engine() {
        let alphabet: &[u8] = b"AQgw_-+/=.9z ";
        let scalar = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let check = |text: &str| {
            let ours = super::decode(text);
            match scalar.decode(text) {
                Ok(bytes) => assert_eq!(ours.as_deref(), Ok(&bytes[..]), "{text:?}"),
                Err(e) => assert_eq!(ours, Err(format!("invalid base64url: {e}")), "{text:?}"),
            }
        };
        let mut texts = vec![String::new()];
        for _ in 0..4 {
            let mut longer = Vec::new();
            for t in &texts {
                for &c in alphabet {
                    let mut t = t.clone();
                    t.push(c as char);
                    check(&t);
                    longer.push(t);
                }
            }
            texts = longer;
        }
        let bytes: Vec<u8> = (0..300u32).map(|i| (i * 7919 % 251) as u8).collect();
        for len in [0, 1, 2, 3, 31, 32, 33, 47, 48, 49, 64, 95, 96, 97, 200, 300] {
            let good = super::encode(&bytes[..len]);
            assert_eq!(good, scalar.encode(&bytes[..len]));
            check(&good);
            for i in 0..good.len() {
                for &c in b"=+./A_" {
                    let mut t = good.clone().into_bytes();
                    t[i] = c;
                    check(&String::from_utf8(t).unwrap());
                }
            }
        }
        let digest = [0xfbu8; 32];
        assert_eq!(
            super::encode_digest(&digest)[..],
            *scalar.encode(digest).as_bytes()
        );
        let mut appended = b"x".to_vec();
        super::encode_append(&bytes[..100], &mut appended);
        assert_eq!(&appended[1..], scalar.encode(&bytes[..100]).as_bytes());
        let mut out = b"keep".to_vec();
        assert!(super::decode_into("-_9", &mut out).is_err());
        assert_eq!(out, b"keep");
    }

    #[test]
    fn strict() {
        assert_eq!(super::encode(b"\xfb\xff"), "-_8");
        assert_eq!(super::decode("-_8").unwrap(), b"\xfb\xff");
        for bad in ["-_8=", "+/8", "-_9", "a"] {
            assert!(super::decode(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod scratch_tests {
    use super::scratch::Scratch;

    /// Buffers come back empty, and nested users get distinct buffers.
    #[test]
    fn buffers_are_reused_empty_and_never_shared() {
        let mut a = Scratch::take();
        a.extend_from_slice(b"first");
        let mut b = Scratch::take();
        b.extend_from_slice(b"second");
        assert_eq!(&a[..], b"first");
        drop(a);
        drop(b);
        let c = Scratch::take();
        assert!(c.is_empty());
        let mut out = Scratch::take();
        super::decode_into("-_8", &mut out).unwrap();
        assert_eq!(&out[..], b"\xfb\xff");
        assert!(super::decode_into("-_9", &mut out).is_err());
        let mut text = b"x.".to_vec();
        super::encode_append(b"\xfb\xff", &mut text);
        assert_eq!(text, b"x.-_8");
    }
}
