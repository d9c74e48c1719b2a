//! PKCS#11 keys, named by RFC 7512 `pkcs11:` URIs, through `cryptoki`.
//!
//! * [`module`]: one `C_Initialize` (OS locking) per module per process,
//!   shared by every key; re-initialization after `fork()` or when the
//!   module was finalized under us.
//! * [`token`]: picking the token the URI names; logging in.
//! * [`object`]: finding, reading and generating keys.
//! * [`sign`]: mechanisms and signature formats.
//! * [`lifecycle`]: opening and creating keys (finding the token and the
//!   key, choosing the algorithm, removing a half-made key again).
//! * [`pool`]: the key's pool of logged-in sessions (a `cryptoki::Session`
//!   is `Send` but not `Sync`, so each signing thread takes one out and puts
//!   it back) and recovery from lost sessions, logouts, module finalization
//!   and token removal.
//! * this file: the key handle and its [`Backend`] implementation.

mod errors;
mod lifecycle;
mod module;
mod object;
mod pin;
mod pool;
mod sign;
mod token;

use std::sync::{Arc, Mutex};

use self::module::Module;
use self::object::KeySelector;
use self::pin::Pin;
use self::pool::{Next, State};
use self::token::TokenSelector;
use super::{Backend, BackendKind, DeviceInfo, KeyLocation};
use crate::alg::Algorithm;
use crate::error::{Error, Pkcs11Error, Result};
use crate::jwk::PublicJwk;

pub(crate) use self::lifecycle::{create, open};

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
    /// What the module, slot and token said when the key was opened.
    device: DeviceInfo,
    state: Mutex<State>,
}

impl Backend for Pkcs11Key {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }

    fn public_key(&self) -> &PublicJwk {
        &self.jwk
    }

    fn location(&self) -> KeyLocation {
        KeyLocation::in_device(
            BackendKind::Pkcs11,
            self.non_exportable,
            self.device.clone(),
        )
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
        Err(last.unwrap_or_else(|| {
            Error::Pkcs11(Pkcs11Error::TokenUnavailable("no attempt was made".into()))
        }))
    }
}
