//! Finding the token a URI names, and logging sessions in.

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;

use super::errors::{Ctx, Fail};
use super::pin::{Pin, RejectedPins};
use crate::backend::device::text;
use crate::backend::{DeviceInfo, DeviceKind};
use crate::error::{Error, Pkcs11Error};
use crate::uri::Pkcs11Uri;

/// The token attributes of a `pkcs11:` URI.
#[derive(Clone, Debug, Default)]
pub(super) struct TokenSelector {
    label: Option<String>,
    manufacturer: Option<String>,
    model: Option<String>,
    serial: Option<String>,
    slot_id: Option<u64>,
}

/// A token that matched.
#[derive(Clone)]
pub(super) struct Found {
    pub(super) slot: Slot,
    pub(super) label: String,
    pub(super) serial: String,
    pub(super) login_required: bool,
    /// The token has its own PIN pad (`CKF_PROTECTED_AUTHENTICATION_PATH`).
    pub(super) pin_pad: bool,
}

impl TokenSelector {
    pub(super) fn from_uri(uri: &Pkcs11Uri) -> Self {
        TokenSelector {
            label: uri.token.clone(),
            manufacturer: uri.manufacturer.clone(),
            model: uri.model.clone(),
            serial: uri.serial.clone(),
            slot_id: uri.slot_id,
        }
    }

    /// Exactly the token found before (its serial and label).
    pub(super) fn exact(found: &Found) -> Self {
        TokenSelector {
            label: Some(found.label.clone()),
            serial: Some(found.serial.clone()),
            ..TokenSelector::default()
        }
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (name, v) in [
            ("token", &self.label),
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
            ("serial", &self.serial),
        ] {
            if let Some(v) = v {
                parts.push(format!("{name}={v}"));
            }
        }
        if let Some(id) = self.slot_id {
            parts.push(format!("slot-id={id}"));
        }
        if parts.is_empty() {
            "any token".into()
        } else {
            parts.join(";")
        }
    }

    /// The one initialized token that matches. Several matches are an error
    /// (name the token with `token=` or `serial=`).
    pub(super) fn find(&self, ctx: &Pkcs11) -> Result<Found, Fail> {
        let slots = ctx.get_slots_with_token().ctx("list the slots")?;
        let mut seen = Vec::new();
        let mut matches = Vec::new();
        for slot in slots {
            let info = match token_info(ctx, slot) {
                Ok(i) => i,
                // A token that went away between the two calls, or is
                // broken, must not keep us from finding the others.
                Err(CkError::Pkcs11(
                    RvError::TokenNotPresent
                    | RvError::DeviceRemoved
                    | RvError::SlotIdInvalid
                    | RvError::GeneralError
                    | RvError::DeviceError,
                    _,
                )) => continue,
                Err(e) => return Err(Fail::Ck("read token information", e)),
            };
            if !info.token_initialized() {
                continue;
            }
            seen.push(format!(
                "`{}` (slot-id={}, serial={})",
                info.label(),
                slot.id(),
                info.serial_number()
            ));
            let fits =
                |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
            if fits(&self.label, info.label())
                && fits(&self.manufacturer, info.manufacturer_id())
                && fits(&self.model, info.model())
                && fits(&self.serial, info.serial_number())
                && self.slot_id.is_none_or(|id| id == slot.id())
            {
                matches.push(Found {
                    slot,
                    label: info.label().to_owned(),
                    serial: info.serial_number().to_owned(),
                    login_required: info.login_required(),
                    pin_pad: info.protected_authentication_path(),
                });
            }
        }
        match matches.len() {
            1 => Ok(matches.remove(0)),
            0 => Err(Error::Pkcs11(Pkcs11Error::TokenNotFound(format!(
                "no initialized token matches {}; tokens present: {}",
                self.describe(),
                present(&seen)
            )))
            .into()),
            n => Err(Error::Pkcs11(Pkcs11Error::TokenNotFound(format!(
                "{n} tokens match {}; name one with token= or serial= (tokens present: {})",
                self.describe(),
                present(&seen)
            )))
            .into()),
        }
    }
}

/// `C_GetTokenInfo`, asked again a few times when it fails with
/// `CKR_GENERAL_ERROR` / `CKR_DEVICE_ERROR`: SoftHSM2 answers that while
/// another process is rewriting the token's files.
fn token_info(ctx: &Pkcs11, slot: Slot) -> Result<cryptoki::slot::TokenInfo, CkError> {
    let mut tries = 0;
    loop {
        match ctx.get_token_info(slot) {
            Err(CkError::Pkcs11(RvError::GeneralError | RvError::DeviceError, _)) if tries < 5 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10 * tries));
            }
            other => return other,
        }
    }
}

fn present(seen: &[String]) -> String {
    match seen.len() {
        0 => "none".into(),
        n if n > 6 => format!("{}, and {} more", seen[..6].join(", "), n - 6),
        _ => seen.join(", "),
    }
}

/// Logs the user in on `session` unless the application already is (login
/// state is per token, shared by all sessions). `CKR_USER_ALREADY_LOGGED_IN`
/// counts as success. A wrong PIN is reported, never retried here, and
/// recorded in `rejected`: a PIN the token rejected is never offered to it
/// again by this process (any key), the call fails with `WrongPin` at once.
pub(super) fn login(
    session: &Session,
    pin: &Pin,
    found: &Found,
    rejected: &RejectedPins,
) -> Result<(), Fail> {
    let token = found.label.as_str();
    let info = session.get_session_info().ctx("read session state")?;
    if matches!(
        info.session_state(),
        SessionState::RoUser | SessionState::RwUser
    ) {
        return Ok(());
    }
    let auth = pin.auth();
    if auth.is_none() && found.pin_pad {
        // The user types the PIN on the device.
        return match session.login(UserType::User, None) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                Err(Error::Pkcs11(Pkcs11Error::WrongPin {
                    token: token.to_owned(),
                })
                .into())
            }
            Err(e) => Err(Fail::Ck("log in on the token's PIN pad", e)),
        };
    }
    let Some(auth) = auth else {
        if found.login_required {
            return Err(Error::Pkcs11(Pkcs11Error::PinUnavailable(format!(
                "token `{token}` requires a login; add `pin-source=/path/to/pin-file` (or pin-value=) to the URI"
            )))
            .into());
        }
        return Ok(());
    };
    if rejected.contains(&found.serial, token, pin) {
        return Err(Error::Pkcs11(Pkcs11Error::WrongPin {
            token: token.to_owned(),
        })
        .into());
    }
    // CKR_GENERAL_ERROR (SoftHSM2 answers it while another process rewrites
    // the token's files; the PIN was not checked) is asked again, at most
    // twice. Nothing else is: other errors may have spent a try.
    let mut tries = 0;
    let result = loop {
        match session.login(UserType::User, Some(&auth)) {
            Err(CkError::Pkcs11(RvError::GeneralError, _)) if tries < 2 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10 * tries));
            }
            other => break other,
        }
    };
    match result {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange | RvError::PinInvalid, _)) => {
            rejected.insert(&found.serial, token, pin);
            Err(Error::Pkcs11(Pkcs11Error::WrongPin {
                token: token.to_owned(),
            })
            .into())
        }
        Err(CkError::Pkcs11(
            rv @ (RvError::GeneralError
            | RvError::DeviceError
            | RvError::FunctionFailed
            | RvError::UserPinNotInitialized),
            _,
        )) => Err(Error::Pkcs11(Pkcs11Error::TokenUnavailable(format!(
            "token `{token}` could not be read while logging in ({}); another process may be rewriting it",
            super::errors::ckr_name(rv)
        )))
        .into()),
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(Error::Pkcs11(Pkcs11Error::PinLocked {
            token: token.to_owned(),
        })
        .into()),
        Err(e) => Err(Fail::Ck("log in", e)),
    }
}

/// The manufacturer SoftHSM tokens report.
const SOFTHSM_MANUFACTURER: &str = "SoftHSM project";

/// What the module, the slot and the token say about themselves. A
/// question the module does not answer leaves its fields empty; it never
/// fails the open.
pub(super) fn device_info(ctx: &Pkcs11, slot: Slot) -> DeviceInfo {
    let mut info = DeviceInfo::unknown();
    if let Ok(lib) = ctx.get_library_info() {
        info.description = text(lib.library_description()).map(|d| {
            let v = lib.library_version();
            format!("{d} {}.{}", v.major(), v.minor())
        });
    }
    if let Ok(t) = token_info(ctx, slot) {
        info.manufacturer = text(t.manufacturer_id());
        info.model = text(t.model());
        info.serial = text(t.serial_number());
        let v = t.firmware_version();
        info.firmware = Some(format!("{}.{}", v.major(), v.minor()));
    }
    info.hardware_slot = ctx.get_slot_info(slot).ok().map(|s| s.hardware_slot());
    (info.kind, info.known_as) = classify(info.manufacturer.as_deref(), info.hardware_slot);
    info
}

/// Hardware only when the slot says so and the token is not a known
/// software token.
fn classify(
    manufacturer: Option<&str>,
    hardware_slot: Option<bool>,
) -> (DeviceKind, Option<String>) {
    if manufacturer == Some(SOFTHSM_MANUFACTURER) {
        return (DeviceKind::Software, Some("SoftHSM".into()));
    }
    match hardware_slot {
        Some(true) => (DeviceKind::Hardware, None),
        Some(false) => (DeviceKind::Software, None),
        None => (DeviceKind::Unknown, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softhsm_is_software_whatever_its_slot_says() {
        assert_eq!(
            classify(Some("SoftHSM project"), Some(true)).0,
            DeviceKind::Software
        );
        assert_eq!(classify(Some("ACME"), Some(true)).0, DeviceKind::Hardware);
        assert_eq!(classify(Some("ACME"), Some(false)).0, DeviceKind::Software);
        assert_eq!(classify(None, None).0, DeviceKind::Unknown);
    }
}
