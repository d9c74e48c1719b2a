//! Opening and creating PKCS#11 keys: the token and key a URI names, the
//! algorithm, and removing a half-made key again when creation fails.

use std::sync::{Arc, Mutex};

use cryptoki::mechanism::MechanismType;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use rand::RngCore;

use super::errors::{Ctx, Fail};
use super::module::{self, Module};
use super::object::{self, KeySelector, Kind};
use super::pin::Pin;
use super::pool::{abandon, close, not_reset, State};
use super::sign;
use super::token::{self, Found, TokenSelector};
use super::Pkcs11Key;
use crate::alg::Algorithm;
use crate::backend::Backend;
use crate::error::{Error, Pkcs11Error, Result};
use crate::uri::{Pkcs11ObjectType, Pkcs11Uri};

/// Bytes of random `CKA_ID` for new keys.
const NEW_ID_LEN: usize = 16;

/// Random `CKA_ID`s tried for a new key before giving up.
const NEW_ID_TRIES: usize = 8;

fn check_type(raw: &str, uri: &Pkcs11Uri) -> Result<()> {
    match uri.object_type {
        None | Some(Pkcs11ObjectType::Private) => Ok(()),
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
        Err(
            e @ (Error::KeyNotFound(_)
            | Error::Pkcs11(Pkcs11Error::TokenNotFound(_))
            | Error::Pkcs11(Pkcs11Error::TokenUnavailable(_))),
        ) => {
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
                        | Error::Pkcs11(Pkcs11Error::TokenNotFound(_))
                        | Error::Pkcs11(Pkcs11Error::TokenUnavailable(_))),
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
        return Err(Error::Pkcs11(Pkcs11Error::LabelInUse {
            token: found.label.clone(),
            label,
            replace_asked: overwrite,
        }));
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
    pub(super) fn open_selected(
        module: Arc<Module>,
        token: TokenSelector,
        key: KeySelector,
        pin: Pin,
        want: Option<Algorithm>,
    ) -> Result<Self> {
        let (epoch, found, session, info, device) = {
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
            let device = token::device_info(live.ctx(), found.slot);
            (live.epoch(), found, session, info, device)
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
            device,
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
}
