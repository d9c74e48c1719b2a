//! base64url without padding (RFC 7515 §2), strict on input.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Encodes `bytes` as unpadded base64url.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes unpadded base64url, rejecting padding, other alphabets and
/// non-canonical trailing bits.
pub fn decode(text: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|e| format!("invalid base64url: {e}"))
}

/// [`decode`] appending to `out` (a reused buffer), with the same checks
/// and messages.
pub(crate) fn decode_into(text: &str, out: &mut Vec<u8>) -> Result<(), String> {
    URL_SAFE_NO_PAD
        .decode_vec(text, out)
        .map_err(|e| format!("invalid base64url: {e}"))
}

/// [`encode`] appending to `out`.
pub(crate) fn encode_into(bytes: impl AsRef<[u8]>, out: &mut String) {
    URL_SAFE_NO_PAD.encode_string(bytes, out)
}

/// [`encode`] appended to a byte buffer, written in place.
pub(crate) fn encode_append(bytes: impl AsRef<[u8]>, out: &mut Vec<u8>) {
    let bytes = bytes.as_ref();
    let start = out.len();
    let len = base64::encoded_len(bytes.len(), false).unwrap_or(0);
    out.resize(start + len, 0);
    let written = URL_SAFE_NO_PAD
        .encode_slice(bytes, &mut out[start..])
        .unwrap_or(0);
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
