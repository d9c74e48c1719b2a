//! PKCS#11 keys, named by RFC 7512 `pkcs11:` URIs, through `cryptoki`.
//!
//! * [`module`]: one `C_Initialize` (OS locking) per module per process,
//!   shared by every key; re-initialization after `fork()` or when the
//!   module was finalized under us.
//! * [`token`]: picking the token the URI names; logging in.
//! * [`object`]: finding, reading and generating keys.
//! * [`sign`]: mechanisms and signature formats.
//! * this file: the key handle, its pool of logged-in sessions (a
//!   `cryptoki::Session` is `Send` but not `Sync`, so each signing thread
//!   takes one out and puts it back) and recovery from lost sessions,
//!   logouts, module finalization and token removal.

mod errors;
mod module;
mod object;
mod pin;
mod sign;
mod token;

use std::sync::{Arc, Mutex, PoisonError};

use cryptoki::error::RvError;
use cryptoki::mechanism::MechanismType;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use rand::RngCore;

use self::errors::{is_key_or_login_gone, is_session_gone, is_token_gone, Ctx, Fail};
use self::module::{Live, Module};
use self::object::{KeySelector, Kind};
use self::pin::Pin;
use self::token::{Found, TokenSelector};
use super::{Backend, KeyLocation};
use crate::alg::Algorithm;
use crate::error::{Error, Result};
use crate::jwk::PublicJwk;
use crate::uri::Pkcs11Uri;

/// Idle sessions kept per key; more are closed when they come back.
const MAX_IDLE: usize = 32;

/// Bytes of random `CKA_ID` for new keys.
const NEW_ID_LEN: usize = 16;

/// Random `CKA_ID`s tried for a new key before giving up.
const NEW_ID_TRIES: usize = 8;

/// A private key on a PKCS#11 token.
pub(crate) struct Pkcs11Key {
    module: Arc<Module>,
    token: TokenSelector,
    key: KeySelector,
    pin: Pin,
    token_label: String,
    alg: Algorithm,
    jwk: PublicJwk,
    non_exportable: bool,
    state: Mutex<State>,
}

/// What may change under a key: the module epoch, the slot and object
/// handles valid in it, and idle sessions opened in it.
struct State {
    epoch: u64,
    slot: Option<Found>,
    handle: Option<ObjectHandle>,
    idle: Vec<Session>,
}

/// What to do after a failed attempt.
enum Next {
    /// Try again (the cause was repaired or may be).
    Retry(Error),
    /// Give up with this error.
    Fatal(Error),
}

/// Sessions of an older module epoch, or whose handle is known to be
/// invalid, are forgotten rather than closed: their handle numbers may now
/// belong to someone else's session.
fn abandon(session: Session) {
    std::mem::forget(session);
}

/// Closes a session opened in module epoch `epoch`, unless the module was
/// re-initialized since (then its handle number may belong to a session of
/// the new generation, and it is abandoned). The module cannot be reset
/// while the close runs. The caller must not hold a [`Live`] of the module.
fn close(module: &Module, epoch: u64, session: Session) {
    match module.current(epoch) {
        Some(_live) => drop(session),
        None => abandon(session),
    }
}

/// The error `open` reports when the module could not be re-initialized to
/// look again: the original one (same type), with why there was no reset.
fn not_reset(original: Error, why: Error) -> Error {
    match original {
        Error::KeyNotFound(m) => Error::KeyNotFound(format!("{m}; {why}")),
        Error::TokenNotFound(m) => Error::TokenNotFound(format!("{m}; {why}")),
        Error::TokenUnavailable(m) => Error::TokenUnavailable(format!("{m}; {why}")),
        other => other,
    }
}

fn check_type(raw: &str, uri: &Pkcs11Uri) -> Result<()> {
    match uri.object_type.as_deref() {
        None | Some("private") => Ok(()),
        Some(t) => Err(Error::uri(
            raw,
            format!("type={t} does not name a private key; use type=private or leave type out"),
        )),
    }
}

fn pick_alg(
    kind: Kind,
    want: Option<Algorithm>,
    allowed: &[MechanismType],
    name: &str,
) -> Result<Algorithm> {
    let permits = |m: MechanismType| allowed.is_empty() || allowed.contains(&m);
    let alg = match (kind, want) {
        (Kind::Ec, None | Some(Algorithm::ES256)) => Algorithm::ES256,
        // An RSA key whose token allows only PSS signs PS256 by default.
        (Kind::Rsa, None)
            if !permits(MechanismType::SHA256_RSA_PKCS)
                && permits(MechanismType::SHA256_RSA_PKCS_PSS) =>
        {
            Algorithm::PS256
        }
        (Kind::Rsa, None) => Algorithm::RS256,
        (Kind::Rsa, Some(a @ (Algorithm::RS256 | Algorithm::PS256))) => a,
        (Kind::Ec, Some(a)) => {
            return Err(Error::AlgorithmMismatch(format!(
                "{name} holds an EC P-256 key, which cannot sign {a}"
            )))
        }
        (Kind::Rsa, Some(a)) => {
            return Err(Error::AlgorithmMismatch(format!(
                "{name} holds an RSA key, which cannot sign {a}"
            )))
        }
    };
    let mech = sign::mechanism(alg).mechanism_type();
    if !permits(mech) {
        return Err(Error::AlgorithmMismatch(format!(
            "{name} may not sign {alg}: its CKA_ALLOWED_MECHANISMS do not include {mech}"
        )));
    }
    Ok(alg)
}

/// Opens the key a `pkcs11:` URI names. `raw` is the URI text, for errors.
pub(crate) fn open(raw: &str, uri: &Pkcs11Uri) -> Result<Pkcs11Key> {
    check_type(raw, uri)?;
    let module = module::load(&module::module_path(uri)?)?;
    let pin = Pin::from_uri(uri)?;
    let key = KeySelector {
        id: uri.id.clone(),
        label: uri.object.clone(),
    };
    let token = TokenSelector::from_uri(uri);
    let epoch = module.epoch();
    match Pkcs11Key::open_selected(
        Arc::clone(&module),
        token.clone(),
        key.clone(),
        pin.clone(),
        uri.alg,
    ) {
        // Some modules (SoftHSM2) show a process only the tokens and
        // objects that existed when it initialized the module, plus its own.
        // A key or token made since by another process (pkcs11-tool, p11tool,
        // softhsm2-util) shows up after a re-initialization; other open keys
        // recover from it transparently. A token SoftHSM2 could not read
        // because another process was rewriting it is read afresh the same way.
        Err(e @ (Error::KeyNotFound(_) | Error::TokenNotFound(_) | Error::TokenUnavailable(_))) => {
            // A token being rewritten may just need asking again (slot list
            // and all) before the module is reset for it.
            let e = if matches!(e, Error::KeyNotFound(_)) {
                e
            } else {
                std::thread::sleep(std::time::Duration::from_millis(50));
                match Pkcs11Key::open_selected(
                    Arc::clone(&module),
                    token.clone(),
                    key.clone(),
                    pin.clone(),
                    uri.alg,
                ) {
                    Err(
                        e @ (Error::KeyNotFound(_)
                        | Error::TokenNotFound(_)
                        | Error::TokenUnavailable(_)),
                    ) => e,
                    other => return other,
                }
            };
            if let Err(why) = module.reinitialize(epoch) {
                return Err(not_reset(e, why));
            }
            Pkcs11Key::open_selected(module, token, key, pin, uri.alg)
        }
        other => other,
    }
}

/// Creates a key pair on the token a `pkcs11:` URI names, labelled with its
/// `object`, with a fresh random `CKA_ID`. Nothing is left on the token when
/// creation fails.
pub(crate) fn create(
    raw: &str,
    uri: &Pkcs11Uri,
    alg: Algorithm,
    rsa_bits: usize,
    overwrite: bool,
) -> Result<Pkcs11Key> {
    check_type(raw, uri)?;
    let label = uri.object.clone().ok_or_else(|| {
        Error::uri(
            raw,
            "name the new key with object=<label>; it becomes its CKA_LABEL",
        )
    })?;
    if uri.id.is_some() {
        return Err(Error::uri(
            raw,
            "leave id= out when creating a key: popkey gives every new key a fresh random CKA_ID",
        ));
    }
    let module = module::load(&module::module_path(uri)?)?;
    let pin = Pin::from_uri(uri)?;
    let selector = TokenSelector::from_uri(uri);
    let live = module.live()?;
    let epoch = live.epoch();
    let found = selector.find(live.ctx()).map_err(Fail::into_error)?;
    let session = live
        .ctx()
        .open_rw_session(found.slot)
        .ctx("open a read-write session")
        .map_err(Fail::into_error)?;
    let must_login = Found {
        login_required: true,
        ..found.clone()
    };
    token::login(&session, &pin, &must_login, &module.rejected).map_err(Fail::into_error)?;
    if object::label_in_use(&session, &label).map_err(Fail::into_error)? {
        return Err(Error::LabelInUse {
            token: found.label.clone(),
            label,
            replace_asked: overwrite,
        });
    }
    let mut id = [0u8; NEW_ID_LEN];
    let mut tries = 0;
    loop {
        if tries == NEW_ID_TRIES {
            return Err(Error::Backend {
                backend: "pkcs11",
                message: format!(
                    "token `{}` reported every one of {NEW_ID_TRIES} random {NEW_ID_LEN}-byte CKA_IDs as in use; no key was created",
                    found.label
                ),
            });
        }
        tries += 1;
        rand::rngs::OsRng.fill_bytes(&mut id);
        if !object::id_in_use(&session, &id).map_err(Fail::into_error)? {
            break;
        }
    }
    let (public, private) =
        object::generate(&session, alg, rsa_bits, &id, &label).map_err(Fail::into_error)?;
    // The new key must be found by its label and id, readable, and
    // prove the pair; otherwise it goes.
    let key = KeySelector {
        id: Some(id.to_vec()),
        label: Some(label.clone()),
    };
    drop(live);
    let opened = Pkcs11Key::open_selected(Arc::clone(&module), selector, key, pin.clone(), Some(alg))
        .and_then(|k| {
            if !k.non_exportable {
                return Err(Error::Backend {
                    backend: "pkcs11",
                    message: format!(
                        "token `{}` made the new key exportable although popkey asked for CKA_SENSITIVE and not CKA_EXTRACTABLE; the key was removed again",
                        k.token_label
                    ),
                });
            }
            k.prove().map(|()| k)
        });
    match opened {
        Ok(k) => {
            close(&module, epoch, session);
            Ok(k)
        }
        Err(e) => {
            remove_new_pair(
                &module,
                epoch,
                session,
                [public, private],
                &found,
                &id,
                &pin,
            );
            Err(e)
        }
    }
}

/// Removes a key pair `create` made: by its handles through `session` while
/// the module is still in `epoch`; otherwise (the module was re-initialized
/// and the handles may name other objects now) by its `CKA_ID` through a
/// fresh session. Best effort.
fn remove_new_pair(
    module: &Module,
    epoch: u64,
    session: Session,
    handles: [ObjectHandle; 2],
    found: &Found,
    id: &[u8],
    pin: &Pin,
) {
    if let Some(_live) = module.current(epoch) {
        for h in handles {
            let _ = session.destroy_object(h);
        }
        drop(session);
        return;
    }
    abandon(session);
    let Ok(live) = module.live() else { return };
    let Ok(found) = TokenSelector::exact(found).find(live.ctx()) else {
        return;
    };
    let Ok(s) = live.ctx().open_rw_session(found.slot) else {
        return;
    };
    let must_login = Found {
        login_required: true,
        ..found
    };
    if token::login(&s, pin, &must_login, &module.rejected).is_err() {
        return;
    }
    if let Ok(objects) = s.find_objects(&[cryptoki::object::Attribute::Id(id.to_vec())]) {
        for h in objects {
            let _ = s.destroy_object(h);
        }
    }
}

impl Pkcs11Key {
    fn open_selected(
        module: Arc<Module>,
        token: TokenSelector,
        key: KeySelector,
        pin: Pin,
        want: Option<Algorithm>,
    ) -> Result<Self> {
        let (epoch, found, session, info) = {
            let live = module.live()?;
            let found = token.find(live.ctx()).map_err(Fail::into_error)?;
            let session = live
                .ctx()
                .open_ro_session(found.slot)
                .ctx("open a session")
                .map_err(Fail::into_error)?;
            token::login(&session, &pin, &found, &module.rejected).map_err(Fail::into_error)?;
            let handle =
                object::find_private(&session, &key, &found.label).map_err(Fail::into_error)?;
            let info =
                object::read_key(&session, handle, &found.label).map_err(Fail::into_error)?;
            (live.epoch(), found, session, info)
        };
        let name = format!("pkcs11 key {} on token `{}`", key.describe(), found.label);
        let alg = pick_alg(info.kind, want, &info.allowed, &name)?;
        // Found again later by what the token says its id is (and the
        // label, when the URI gave one or the key has no id).
        let key = KeySelector {
            id: (!info.id.is_empty()).then(|| info.id.clone()),
            label: key
                .label
                .or_else(|| info.id.is_empty().then(|| info.label.clone()).flatten()),
        };
        Ok(Pkcs11Key {
            module,
            token,
            key,
            pin,
            token_label: found.label.clone(),
            alg,
            jwk: info.jwk,
            non_exportable: info.non_exportable,
            state: Mutex::new(State {
                epoch,
                slot: Some(found),
                handle: Some(info.handle),
                idle: vec![session],
            }),
        })
    }

    /// Signs a random challenge and verifies it with the public key read
    /// from the token.
    fn prove(&self) -> Result<()> {
        let mut challenge = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut challenge);
        let sig = self.sign(&challenge)?;
        self.jwk.verify(self.alg, &challenge, &sig).map_err(|e| {
            Error::KeyMismatch(format!(
                "the new key on token `{}` did not verify its own signature ({e})",
                self.token_label
            ))
        })
    }

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
                Err(Fail::Done(Error::TokenNotFound(_))) => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    self.token.find(live.ctx())
                }
                r => r,
            }
            .map_err(|f| match f {
                Fail::Done(Error::TokenNotFound(why)) => Fail::Done(Error::TokenUnavailable(
                    format!(
                        "token `{}` that holds this key is not there ({why}); popkey looks for it again on the next call",
                        self.token_label
                    ),
                )),
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
    fn attempt(
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
                Fail::Done(e @ Error::TokenUnavailable(_)) if !*reinitialized => {
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
            let e = Error::TokenUnavailable(format!(
                "token `{}` went away ({err}); popkey looks for it again on the next call",
                self.token_label
            ));
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

impl Backend for Pkcs11Key {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }

    fn public_key(&self) -> &PublicJwk {
        &self.jwk
    }

    fn location(&self) -> KeyLocation {
        KeyLocation {
            backend: "pkcs11",
            hardware: true,
            non_exportable: self.non_exportable,
        }
    }

    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>> {
        let mut reinitialized = false;
        let mut last = None;
        for _ in 0..4 {
            match self.attempt(signing_input, &mut reinitialized) {
                Ok(sig) => return Ok(sig),
                Err(Next::Fatal(e)) => return Err(e),
                Err(Next::Retry(e)) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::TokenUnavailable("no attempt was made".into())))
    }
}
