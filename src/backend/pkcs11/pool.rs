//! The session pool of a PKCS#11 key and recovery on the signing path:
//! lost sessions, logouts, module finalization and token removal.

use std::sync::PoisonError;

use cryptoki::error::RvError;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use rand::RngCore;

use super::errors::{is_key_or_login_gone, is_session_gone, is_token_gone, Ctx, Fail};
use super::module::{Live, Module};
use super::object;
use super::sign;
use super::token::{self, Found};
use super::Pkcs11Key;
use crate::error::{Error, Pkcs11Error};

/// Idle sessions kept per key; more are closed when they come back.
const MAX_IDLE: usize = 32;

/// What may change under a key: the module epoch, the slot and object
/// handles valid in it, and idle sessions opened in it.
pub(super) struct State {
    pub(super) epoch: u64,
    pub(super) slot: Option<Found>,
    pub(super) handle: Option<ObjectHandle>,
    pub(super) idle: Vec<Session>,
}

/// What to do after a failed attempt.
pub(super) enum Next {
    /// Try again (the cause was repaired or may be).
    Retry(Error),
    /// Give up with this error.
    Fatal(Error),
}

/// Sessions of an older module epoch, or whose handle is known to be
/// invalid, are forgotten rather than closed: their handle numbers may now
/// belong to someone else's session.
pub(super) fn abandon(session: Session) {
    std::mem::forget(session);
}

/// Closes a session opened in module epoch `epoch`, unless the module was
/// re-initialized since (then its handle number may belong to a session of
/// the new generation, and it is abandoned). The module cannot be reset
/// while the close runs. The caller must not hold a [`Live`] of the module.
pub(super) fn close(module: &Module, epoch: u64, session: Session) {
    match module.current(epoch) {
        Some(_live) => drop(session),
        None => abandon(session),
    }
}

/// The error `open` reports when the module could not be re-initialized to
/// look again: the original one (same type), with why there was no reset.
pub(super) fn not_reset(original: Error, why: Error) -> Error {
    match original {
        Error::KeyNotFound(m) => Error::KeyNotFound(format!("{m}; {why}")),
        Error::Pkcs11(Pkcs11Error::TokenNotFound(m)) => {
            Error::Pkcs11(Pkcs11Error::TokenNotFound(format!("{m}; {why}")))
        }
        Error::Pkcs11(Pkcs11Error::TokenUnavailable(m)) => {
            Error::Pkcs11(Pkcs11Error::TokenUnavailable(format!("{m}; {why}")))
        }
        other => other,
    }
}

impl Pkcs11Key {
    /// Signs a random challenge with `handle` and verifies it in software
    /// with the public key this handle advertises. Only after a key was
    /// found again, never on the signing path.
    fn prove_handle(
        &self,
        session: &Session,
        handle: ObjectHandle,
    ) -> std::result::Result<(), Fail> {
        let mut challenge = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut challenge);
        let sig = sign::sign(
            session,
            handle,
            self.alg,
            &sign::mechanism(self.alg),
            &challenge,
            self.jwk.signature_len(),
        )?;
        self.jwk.verify(self.alg, &challenge, &sig).map_err(|e| {
            Fail::Done(Error::KeyMismatch(format!(
                "the key {} on token `{}` was found again but is not the key that was opened: its private key does not match the public key this handle uses ({e}); popkey will not sign with it, open it again",
                self.key.describe(),
                self.token_label
            )))
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets everything tied to the token's presence.
    fn lose_token(&self) {
        let mut st = self.lock();
        st.slot = None;
        st.handle = None;
        for s in st.idle.drain(..) {
            abandon(s);
        }
    }

    /// A logged-in session and the key handle, from the pool when it can.
    fn checkout(&self, live: &Live<'_>) -> std::result::Result<(Session, ObjectHandle), Fail> {
        let epoch = live.epoch();
        let (slot, handle) = {
            let mut st = self.lock();
            if st.epoch != epoch {
                st.epoch = epoch;
                st.slot = None;
                st.handle = None;
                for s in st.idle.drain(..) {
                    abandon(s);
                }
            }
            if let Some(h) = st.handle {
                if let Some(s) = st.idle.pop() {
                    return Ok((s, h));
                }
            }
            (st.slot.clone(), st.handle)
        };
        let found = match slot {
            Some(f) => f,
            None => match self.token.find(live.ctx()) {
                // Asked once more before anyone resets the module for it.
                Err(Fail::Done(Error::Pkcs11(Pkcs11Error::TokenNotFound(_)))) => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    self.token.find(live.ctx())
                }
                r => r,
            }
            .map_err(|f| match f {
                Fail::Done(Error::Pkcs11(Pkcs11Error::TokenNotFound(why))) => Fail::Done(Error::Pkcs11(Pkcs11Error::TokenUnavailable(
                    format!(
                        "token `{}` that holds this key is not there ({why}); popkey looks for it again on the next call",
                        self.token_label
                    ),
                ))),
                other => other,
            })?,
        };
        let session = live
            .ctx()
            .open_ro_session(found.slot)
            .ctx("open a session")?;
        token::login(&session, &self.pin, &found, &self.module.rejected)?;
        let handle = match handle {
            Some(h) => h,
            None => {
                let h = object::find_private(&session, &self.key, &self.token_label).map_err(
                    |f| match f {
                        Fail::Done(Error::KeyNotFound(why)) => Fail::Done(Error::KeyNotFound(format!(
                            "the key this handle signs with is no longer on the token (deleted, or the token was re-initialized): {why}; popkey looks for it again on the next call"
                        ))),
                        other => other,
                    },
                )?;
                let info = object::read_key(&session, h, &self.token_label)?;
                if info.jwk != self.jwk || info.non_exportable != self.non_exportable {
                    return Err(Error::KeyMismatch(format!(
                        "the key {} on token `{}` is not the key that was opened (its public key or attributes changed); open it again",
                        self.key.describe(),
                        self.token_label
                    ))
                    .into());
                }
                // Another public object with the same CKA_ID may still show
                // the old public key: the private key must prove it is the
                // pair of the public key this handle advertises.
                self.prove_handle(&session, h)?;
                h
            }
        };
        let mut st = self.lock();
        if st.epoch == epoch {
            st.slot = Some(found);
            st.handle = Some(handle);
        }
        Ok((session, handle))
    }

    /// Puts a session of module epoch `epoch` back in the pool. `live`: the
    /// caller still holds the module in that epoch (so a session that does
    /// not fit is closed at once; otherwise only if the epoch still holds).
    fn checkin(&self, live: Option<&Live<'_>>, epoch: u64, session: Session) {
        let mut st = self.lock();
        if st.epoch != epoch {
            abandon(session);
        } else if st.idle.len() < MAX_IDLE {
            st.idle.push(session);
        } else {
            drop(st);
            match live {
                Some(l) if l.epoch() == epoch => drop(session),
                Some(_) => abandon(session),
                None => close(&self.module, epoch, session),
            }
        }
    }

    /// One try: check out a session, sign, check it back in. On failure,
    /// repair what can be repaired and say whether to try again.
    pub(super) fn attempt(
        &self,
        input: &[u8],
        reinitialized: &mut bool,
    ) -> std::result::Result<Vec<u8>, Next> {
        let live = self.module.live().map_err(Next::Fatal)?;
        let epoch = live.epoch();
        let (fail, session) = match self.checkout(&live) {
            Ok((session, handle)) => {
                let mech = sign::mechanism(self.alg);
                match sign::sign(
                    &session,
                    handle,
                    self.alg,
                    &mech,
                    input,
                    self.jwk.signature_len(),
                ) {
                    Ok(sig) => {
                        self.checkin(Some(&live), epoch, session);
                        return Ok(sig);
                    }
                    Err(f) => (f, Some(session)),
                }
            }
            Err(f) => (f, None),
        };
        drop(live);
        let Some(rv) = fail.rv() else {
            // A popkey error; the session (if any) is fine.
            if let Some(s) = session {
                self.checkin(None, epoch, s);
            }
            return match fail {
                Fail::Done(e @ Error::Pkcs11(Pkcs11Error::TokenUnavailable(_)))
                    if !*reinitialized =>
                {
                    // The token may be back but only visible to a freshly
                    // initialized module (SoftHSM scans tokens at C_Initialize).
                    *reinitialized = true;
                    match self.module.reinitialize(epoch) {
                        Ok(()) => Err(Next::Retry(e)),
                        Err(why) => Err(Next::Fatal(not_reset(e, why))),
                    }
                }
                f => Err(Next::Fatal(f.into_error())),
            };
        };
        let err = fail.into_error();
        if is_session_gone(rv) {
            // Someone closed our sessions or re-initialized the module
            // behind our back: object handles may be stale too, so the key
            // is found (and checked) again.
            if let Some(s) = session {
                abandon(s);
            }
            self.lock().handle = None;
            Err(Next::Retry(err))
        } else if is_key_or_login_gone(rv) {
            // Logged out or the object store changed: log in again and find
            // the key again (checked to be the same key).
            if let Some(s) = session {
                close(&self.module, epoch, s);
            }
            self.lock().handle = None;
            Err(Next::Retry(err))
        } else if rv == RvError::CryptokiNotInitialized {
            if let Some(s) = session {
                abandon(s);
            }
            *reinitialized = true;
            self.module.reinitialize(epoch).map_err(Next::Fatal)?;
            Err(Next::Retry(err))
        } else if is_token_gone(rv) {
            if let Some(s) = session {
                abandon(s);
            }
            self.lose_token();
            let e = Error::Pkcs11(Pkcs11Error::TokenUnavailable(format!(
                "token `{}` went away ({err}); popkey looks for it again on the next call",
                self.token_label
            )));
            if *reinitialized {
                return Err(Next::Fatal(e));
            }
            *reinitialized = true;
            match self.module.reinitialize(epoch) {
                Ok(()) => Err(Next::Retry(e)),
                Err(why) => Err(Next::Fatal(not_reset(e, why))),
            }
        } else {
            // The operation failed on a sound session: close it, report.
            if let Some(s) = session {
                close(&self.module, epoch, s);
            }
            Err(Next::Fatal(err))
        }
    }
}

impl Drop for Pkcs11Key {
    /// Idle sessions are closed, unless they belong to an older module epoch
    /// or to the parent of a forked process: those are left alone.
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        match self.module.current(st.epoch) {
            Some(_live) => st.idle.clear(),
            None => {
                for s in st.idle.drain(..) {
                    abandon(s);
                }
            }
        }
    }
}
