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

/// TSS base codes (tss2_common.h) that classification looks at.
const BASE_BAD_REFERENCE: u32 = 5;
const BASE_INSUFFICIENT_BUFFER: u32 = 6;
const BASE_BAD_SEQUENCE: u32 = 7;
const BASE_NO_CONNECTION: u32 = 8;
const BASE_TRY_AGAIN: u32 = 9;
const BASE_IO_ERROR: u32 = 10;
const BASE_BAD_VALUE: u32 = 11;
const BASE_BAD_SIZE: u32 = 16;
const BASE_MALFORMED_RESPONSE: u32 = 17;
const BASE_INSUFFICIENT_RESPONSE: u32 = 19;

/// Names of the TSS base codes, 1 to 30 (tss2_common.h).
const BASE_NAMES: [&str; 30] = [
    "GENERAL_FAILURE",
    "NOT_IMPLEMENTED",
    "BAD_CONTEXT",
    "ABI_MISMATCH",
    "BAD_REFERENCE",
    "INSUFFICIENT_BUFFER",
    "BAD_SEQUENCE",
    "NO_CONNECTION",
    "TRY_AGAIN",
    "IO_ERROR",
    "BAD_VALUE",
    "NOT_PERMITTED",
    "INVALID_SESSIONS",
    "NO_DECRYPT_PARAM",
    "NO_ENCRYPT_PARAM",
    "BAD_SIZE",
    "MALFORMED_RESPONSE",
    "INSUFFICIENT_CONTEXT",
    "INSUFFICIENT_RESPONSE",
    "INCOMPATIBLE_TCTI",
    "NOT_SUPPORTED",
    "BAD_TCTI_STRUCTURE",
    "MEMORY",
    "BAD_TR",
    "MULTIPLE_DECRYPT_SESSIONS",
    "MULTIPLE_ENCRYPT_SESSIONS",
    "RSP_AUTH_FAILED",
    "NO_CONFIG",
    "BAD_PATH",
    "NOT_DELETABLE",
];

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
            // The link failed, or the response stream broke off mid-way.
            BASE_IO_ERROR
            | BASE_NO_CONNECTION
            | BASE_MALFORMED_RESPONSE
            | BASE_INSUFFICIENT_RESPONSE => Class::Disconnected,
            // ESYS refuses every call after a transport failure left it in
            // its internal-error state: a fresh context is the way out.
            BASE_BAD_SEQUENCE if layer == LAYER_ESYS => Class::Stale,
            // The transport's own failures, bad arguments apart.
            BASE_BAD_REFERENCE | BASE_BAD_VALUE | BASE_BAD_SIZE | BASE_INSUFFICIENT_BUFFER => {
                Class::Fatal
            }
            _ if layer == LAYER_TCTI => Class::Disconnected,
            // Anything else (BAD_TR, NOT_PERMITTED, RSP_AUTH_FAILED, bad
            // arguments, …) is a final answer, not a reason to reconnect.
            _ => Class::Fatal,
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
        Some(rc) => match base_name(rc) {
            Some(name) => format!("{e} (TSS2_RC {rc:#x}, {name})"),
            None => format!("{e} (TSS2_RC {rc:#x})"),
        },
        None => e.to_string(),
    }
}

/// "ESYS BAD_TR" and the like for codes from the TSS's own layers.
fn base_name(rc: u32) -> Option<String> {
    let layer = match (rc >> 16) & 0xff {
        LAYER_ESYS => "ESYS",
        LAYER_SYS => "SYS",
        LAYER_TCTI => "TCTI",
        _ => return None,
    };
    let base = (rc & 0xffff) as usize;
    let name = BASE_NAMES.get(base.checked_sub(1)?)?;
    Some(format!("{layer} {name}"))
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
        assert_eq!(classify(&err(0x07_000a)), Class::Disconnected);
        assert_eq!(classify(&err(0x08_000a)), Class::Disconnected);
        assert_eq!(classify(&err(0x07_0008)), Class::Disconnected);
        assert_eq!(classify(&err(0x0a_0008)), Class::Disconnected);
        assert_eq!(classify(&err(0x08_0011)), Class::Disconnected);
        assert_eq!(classify(&err(0x08_0013)), Class::Disconnected);
        assert_eq!(classify(&err(0x07_0007)), Class::Stale);
        assert_eq!(classify(&err(0x0a_0009)), Class::Transient);
        assert_eq!(classify(&err(0x07_000b)), Class::Fatal);
        // Not link failures: final answers, no reconnect.
        assert_eq!(classify(&err(0x07_0018)), Class::Fatal); // ESYS BAD_TR
        assert_eq!(classify(&err(0x07_000c)), Class::Fatal); // ESYS NOT_PERMITTED
        assert_eq!(classify(&err(0x07_001b)), Class::Fatal); // ESYS RSP_AUTH_FAILED
        assert_eq!(classify(&err(0x07_0001)), Class::Fatal); // ESYS GENERAL_FAILURE
        assert_eq!(classify(&err(0x08_0007)), Class::Fatal); // SYS BAD_SEQUENCE
        assert_eq!(classify(&err(0x07_0017)), Class::Fatal); // ESYS MEMORY
        assert_eq!(classify(&err(0x0a_000b)), Class::Fatal); // TCTI BAD_VALUE
        assert_eq!(classify(&err(0x0a_0001)), Class::Disconnected); // TCTI GENERAL_FAILURE
        assert_eq!(classify(&err(0x100)), Class::NeedsStartup);
        assert_eq!(classify(&err(0x1df)), Class::Integrity);
    }

    #[test]
    fn descriptions_name_the_code() {
        assert!(describe(&err(0x07_0018)).contains("ESYS BAD_TR"));
        assert!(describe(&err(0x07_001b)).contains("ESYS RSP_AUTH_FAILED"));
        assert!(describe(&err(0x0a_000a)).contains("TCTI IO_ERROR"));
        assert!(describe(&err(0x07_001e)).contains("ESYS NOT_DELETABLE"));
        assert!(describe(&err(0x922)).contains("0x922"));
    }
}
