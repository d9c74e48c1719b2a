//! TSS response codes: which failures are worth another try, and how.

use tss_esapi::constants::response_code::Tss2ResponseCode;

/// What to do after a failed TPM command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// RETRY, YIELDED, TESTING, CANCELED, NV_RATE: the same command again,
    /// after a short pause.
    Transient,
    /// Out of object or session slots: flush something, then again.
    Memory,
    /// A handle the TPM no longer knows (TPM reset, flushed by someone
    /// else): reload what popkey had loaded, then again.
    Stale,
    /// The transport failed (TPM or simulator gone, connection dropped):
    /// reconnect, re-create the primary, reload, then again.
    Disconnected,
    /// The TPM was not started (TPM2_Startup missing).
    NeedsStartup,
    /// The authorization value was wrong.
    AuthFailed,
    /// Dictionary-attack lockout.
    Lockout,
    /// A key blob that does not belong to this parent or TPM.
    Integrity,
    /// Anything else: report it.
    Fatal,
}

/// The raw 32-bit TSS2_RC of an error, if it came from the TSS.
pub(crate) fn raw(e: &tss_esapi::Error) -> Option<u32> {
    match e {
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::FormatZero(c)) => Some(c.0),
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::FormatOne(c)) => Some(c.0),
        _ => None,
    }
}

const LAYER_TPM: u32 = 0;
const LAYER_ESYS: u32 = 7;
const LAYER_SYS: u32 = 8;
const LAYER_TCTI: u32 = 10;
const LAYER_RESMGR_TPM: u32 = 11;

/// TSS base codes (tss2_common.h) that mean "bad argument", not "bad link".
const BASE_BAD_REFERENCE: u32 = 5;
const BASE_BAD_VALUE: u32 = 11;
const BASE_BAD_SIZE: u32 = 16;
const BASE_TRY_AGAIN: u32 = 9;
const BASE_INSUFFICIENT_BUFFER: u32 = 6;

/// Classifies an error.
pub(crate) fn classify(e: &tss_esapi::Error) -> Class {
    let Some(rc) = raw(e) else {
        return Class::Fatal;
    };
    let layer = (rc >> 16) & 0xff;
    match layer {
        LAYER_TPM | LAYER_RESMGR_TPM => classify_tpm(rc & 0xffff),
        LAYER_ESYS | LAYER_SYS | LAYER_TCTI => match rc & 0xffff {
            BASE_TRY_AGAIN => Class::Transient,
            BASE_BAD_REFERENCE | BASE_BAD_VALUE | BASE_BAD_SIZE | BASE_INSUFFICIENT_BUFFER => {
                Class::Fatal
            }
            _ => Class::Disconnected,
        },
        _ => Class::Fatal,
    }
}

fn classify_tpm(rc: u32) -> Class {
    if rc & 0x80 != 0 {
        // Format one: an error about a parameter, handle or session.
        return match rc & 0x3f {
            0x0e | 0x22 => Class::AuthFailed, // AUTH_FAIL, BAD_AUTH
            0x0b => Class::Stale,             // HANDLE
            0x1f => Class::Integrity,         // INTEGRITY
            _ => Class::Fatal,
        };
    }
    match rc {
        0x922 | 0x908 | 0x90a | 0x909 | 0x920 => Class::Transient, // RETRY YIELDED TESTING CANCELED NV_RATE
        0x902..=0x906 => Class::Memory, // OBJECT_MEMORY SESSION_MEMORY MEMORY SESSION_HANDLES OBJECT_HANDLES
        0x910..=0x91e => Class::Stale,  // REFERENCE_Hx / REFERENCE_Sx
        0x100 => Class::NeedsStartup,   // INITIALIZE
        0x921 => Class::Lockout,
        _ => Class::Fatal,
    }
}

/// A short, human description of an error with its code.
pub(crate) fn describe(e: &tss_esapi::Error) -> String {
    match raw(e) {
        Some(rc) => format!("{e} (TSS2_RC {rc:#x})"),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tss_esapi::constants::response_code::Tss2ResponseCode;

    fn err(rc: u32) -> tss_esapi::Error {
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::from(rc))
    }

    #[test]
    fn classes() {
        assert_eq!(classify(&err(0x922)), Class::Transient);
        assert_eq!(classify(&err(0x908)), Class::Transient);
        assert_eq!(classify(&err(0x90a)), Class::Transient);
        assert_eq!(classify(&err(0x902)), Class::Memory);
        assert_eq!(classify(&err(0x910)), Class::Stale);
        assert_eq!(classify(&err(0x18b)), Class::Stale);
        assert_eq!(classify(&err(0x98e)), Class::AuthFailed);
        assert_eq!(classify(&err(0x9a2)), Class::AuthFailed);
        assert_eq!(classify(&err(0x0a_000a)), Class::Disconnected);
        assert_eq!(classify(&err(0x07_0007)), Class::Disconnected);
        assert_eq!(classify(&err(0x0a_0009)), Class::Transient);
        assert_eq!(classify(&err(0x07_000b)), Class::Fatal);
        assert_eq!(classify(&err(0x100)), Class::NeedsStartup);
        assert_eq!(classify(&err(0x1df)), Class::Integrity);
    }
}
