//! Finding the token a URI names, and logging sessions in.

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;

use super::errors::{Ctx, Fail};
use super::pin::Pin;
use crate::error::Error;
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
    pub(super) login_required: bool,
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
            let info = match ctx.get_token_info(slot) {
                Ok(i) => i,
                // A token that went away between the two calls.
                Err(CkError::Pkcs11(
                    RvError::TokenNotPresent | RvError::DeviceRemoved | RvError::SlotIdInvalid,
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
            let fits = |want: &Option<String>, have: &str| want.as_deref().map_or(true, |w| w == have);
            if fits(&self.label, info.label())
                && fits(&self.manufacturer, info.manufacturer_id())
                && fits(&self.model, info.model())
                && fits(&self.serial, info.serial_number())
                && self.slot_id.map_or(true, |id| id == slot.id())
            {
                matches.push(Found {
                    slot,
                    label: info.label().to_owned(),
                    login_required: info.login_required(),
                });
            }
        }
        match matches.len() {
            1 => Ok(matches.remove(0)),
            0 => Err(Error::TokenNotFound(format!(
                "no initialized token matches {}; tokens present: {}",
                self.describe(),
                if seen.is_empty() {
                    "none".into()
                } else {
                    seen.join(", ")
                }
            ))
            .into()),
            n => Err(Error::TokenNotFound(format!(
                "{n} tokens match {}; name one with token= or serial= (tokens present: {})",
                self.describe(),
                seen.join(", ")
            ))
            .into()),
        }
    }
}

/// Logs the user in on `session` unless the application already is (login
/// state is per token, shared by all sessions). `CKR_USER_ALREADY_LOGGED_IN`
/// counts as success. A wrong PIN is reported, never retried here.
pub(super) fn login(
    session: &Session,
    pin: &Pin,
    token: &str,
    login_required: bool,
) -> Result<(), Fail> {
    let info = session.get_session_info().ctx("read session state")?;
    if matches!(
        info.session_state(),
        SessionState::RoUser | SessionState::RwUser
    ) {
        return Ok(());
    }
    let Some(auth) = pin.auth() else {
        if login_required {
            return Err(Error::PinUnavailable(format!(
                "token `{token}` requires a login; add `pin-source=/path/to/pin-file` (or pin-value=) to the URI"
            ))
            .into());
        }
        return Ok(());
    };
    match session.login(UserType::User, Some(&auth)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange | RvError::PinInvalid, _)) => {
            Err(Error::WrongPin {
                token: token.to_owned(),
            }
            .into())
        }
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(Error::PinLocked {
            token: token.to_owned(),
        }
        .into()),
        Err(e) => Err(Fail::Ck("log in", e)),
    }
}
