//! Turning `cryptoki` errors into popkey errors a person can act on.

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, RvError};

use crate::error::{Error, Pkcs11Error};

/// A failure inside the backend: either a raw PKCS#11 error, which the
/// signing path may recover from, or a finished popkey error.
pub(super) enum Fail {
    /// A `cryptoki` error and what popkey was trying to do.
    Ck(&'static str, CkError),
    /// A popkey error, final.
    Done(Error),
}

impl Fail {
    /// The PKCS#11 return value, when this is a failed PKCS#11 call.
    pub(super) fn rv(&self) -> Option<RvError> {
        match self {
            Fail::Ck(_, e) => rv_of(e),
            Fail::Done(_) => None,
        }
    }

    /// The popkey error this failure finally is.
    pub(super) fn into_error(self) -> Error {
        match self {
            Fail::Ck(what, e) => pkcs11(what, e),
            Fail::Done(e) => e,
        }
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Done(e)
    }
}

/// Shorthand: tag a cryptoki result with what popkey was doing.
pub(super) trait Ctx<T> {
    fn ctx(self, what: &'static str) -> Result<T, Fail>;
}

impl<T> Ctx<T> for Result<T, CkError> {
    fn ctx(self, what: &'static str) -> Result<T, Fail> {
        self.map_err(|e| Fail::Ck(what, e))
    }
}

/// `PinIncorrect` -> `CKR_PIN_INCORRECT`.
pub(super) fn ckr_name(rv: RvError) -> String {
    let camel = format!("{rv:?}");
    let mut out = String::from("CKR_");
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// `Function::Sign` -> `C_Sign`.
pub(super) fn fn_name(f: Function) -> String {
    format!("C_{f:?}")
}

/// The return value of a failed PKCS#11 call, if that is what `e` is.
pub(super) fn rv_of(e: &CkError) -> Option<RvError> {
    match e {
        CkError::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// True for return values that mean the token or its slot went away.
/// `CKR_GENERAL_ERROR` is here too: SoftHSM answers it when the token's
/// storage vanished, and for a key that worked before, looking for the
/// token again is the useful reaction.
pub(super) fn is_token_gone(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::GeneralError
            | RvError::DeviceRemoved
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::SlotIdInvalid
            | RvError::DeviceError
    )
}

/// True for return values that mean our session handle is no longer valid.
pub(super) fn is_session_gone(rv: RvError) -> bool {
    matches!(rv, RvError::SessionHandleInvalid | RvError::SessionClosed)
}

/// True when the key handle or the login state no longer hold (someone
/// logged out, the object store changed).
pub(super) fn is_key_or_login_gone(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::UserNotLoggedIn | RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid
    )
}

/// A generic error for a failed call, with a hint for the common cases.
pub(crate) fn pkcs11(what: &str, e: CkError) -> Error {
    let (function, code, rv) = match &e {
        CkError::Pkcs11(rv, f) => (fn_name(*f), ckr_name(*rv), Some(*rv)),
        other => (what.to_owned(), other.to_string(), None),
    };
    let hint = match rv {
        Some(RvError::MechanismInvalid) => {
            "the token does not support this mechanism; pick another algorithm".to_owned()
        }
        Some(RvError::KeyTypeInconsistent | RvError::KeyFunctionNotPermitted) => {
            "the key cannot be used this way (check CKA_SIGN and CKA_ALLOWED_MECHANISMS)".to_owned()
        }
        Some(RvError::UserNotLoggedIn) => {
            "the session is not logged in; give the user PIN with pin-source=".to_owned()
        }
        Some(RvError::TokenWriteProtected) => "the token is write-protected".to_owned(),
        Some(RvError::DeviceMemory | RvError::HostMemory) => {
            "the token or host is out of memory".to_owned()
        }
        Some(rv) if is_token_gone(rv) => {
            "the token was removed or is not present; popkey looks for it again on the next call"
                .to_owned()
        }
        _ => format!("while trying to {what}"),
    };
    Error::Pkcs11(Pkcs11Error::Call {
        function,
        code,
        hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(ckr_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(
            ckr_name(RvError::UserAlreadyLoggedIn),
            "CKR_USER_ALREADY_LOGGED_IN"
        );
        assert_eq!(fn_name(Function::Sign), "C_Sign");
    }
}
