//! One TPM connection per TCTI per process, shared by every key on it.
//!
//! A [`Device`] owns the ESYS context behind a mutex. It creates the storage
//! primary key once, keeps each key loaded between signatures, authorizes
//! with a password session (no TPM session object, no extra round trip),
//! and flushes what it loaded when a key is dropped. A signature is one
//! TPM2_Sign round trip.
//!
//! Failures are classified ([`super::rc`]) and recovered within a bounded
//! number of attempts: transient codes are retried after a short pause, a
//! full object memory flushes the least recently used object, and a dropped
//! connection or a TPM reset reconnects, re-creates the primary and reloads
//! the key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::constants::{CapabilityType, PropertyTag, StartupType};
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::resource_handles::{Hierarchy, Provision};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Auth, CapabilityData, Digest, HashcheckTicket, Private, Public, Signature, SignatureScheme,
};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;
use tss_esapi::Context;

use super::keyfile::OWNER;
use super::rc::{self, Class};
use super::tcti::{self, Tcti};
use super::template;
use crate::backend::device::text;
use crate::backend::{DeviceInfo, DeviceKind};
use crate::error::{Error, Result, TpmError};

/// Fixed properties asked for from `TPM_PT_FAMILY_INDICATOR` on: enough to
/// reach `TPM_PT_FIRMWARE_VERSION_2`.
const FIXED_PROPERTIES_ASKED: u32 = 16;

/// Attempts per operation, the first included.
const MAX_ATTEMPTS: u32 = 8;

/// Where a key lives.
pub(crate) enum Source {
    /// A persistent handle, `0x81xxxxxx`.
    Persistent(u32),
    /// A key blob loaded under `parent` (the owner primary or a persistent key).
    Blob {
        parent: u32,
        public: Public,
        private: Private,
    },
}

/// Everything a device needs to (re)load one key.
pub(crate) struct KeySpec {
    pub(crate) id: u64,
    pub(crate) source: Source,
    pub(crate) auth: Option<Auth>,
    /// The key's name in messages (its URI, redacted).
    pub(crate) name: String,
    /// For a persistent key: its TPM Name as first resolved. A later
    /// resolution (after a reconnect, a TPM reset or a replacement through
    /// this process) must find the same Name, else the handle now holds
    /// another key and signing is refused.
    pub(crate) pinned: OnceLock<Vec<u8>>,
}

/// A failed attempt.
enum Fail {
    /// A TSS error during `doing`; classified and maybe retried.
    Tss(&'static str, tss_esapi::Error),
    /// Could not open the TCTI.
    Connect(tss_esapi::Error),
    /// A final answer: no retry.
    Done(Error),
}

type Attempt<T> = std::result::Result<T, Fail>;

fn tss(doing: &'static str) -> impl Fn(tss_esapi::Error) -> Fail {
    move |e| Fail::Tss(doing, e)
}

/// A key loaded (or a persistent key resolved) in the current connection.
struct Loaded {
    id: u64,
    handle: KeyHandle,
    transient: bool,
    /// The persistent handle it was resolved from, if any.
    persistent: Option<u32>,
    last_used: u64,
}

/// A live connection.
struct Conn {
    /// The process that opened it: a child after fork() must not use (or
    /// flush through) its parent's connection.
    pid: u32,
    ctx: Context,
    primary: Option<KeyHandle>,
    keys: Vec<Loaded>,
    tick: u64,
    /// What the TPM says about itself, read once per connection.
    info: Option<DeviceInfo>,
}

/// One TPM, reached through one TCTI.
pub(crate) struct Device {
    tcti: Tcti,
    conn: Mutex<Option<Conn>>,
    next_id: AtomicU64,
}

/// The process-wide registry: one device per canonical TCTI, alive while a
/// key uses it.
fn registry() -> &'static Mutex<HashMap<String, Weak<Device>>> {
    static DEVICES: OnceLock<Mutex<HashMap<String, Weak<Device>>>> = OnceLock::new();
    DEVICES.get_or_init(|| Mutex::new(HashMap::new()))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Device {
    /// The device for a TCTI: the existing one if a key already uses it.
    pub(crate) fn get(tcti: Tcti) -> Arc<Device> {
        let mut map = lock(registry());
        map.retain(|_, d| d.strong_count() > 0);
        if let Some(d) = map.get(&tcti.canonical).and_then(Weak::upgrade) {
            return d;
        }
        let key = tcti.canonical.clone();
        let d = Arc::new(Device {
            tcti,
            conn: Mutex::new(None),
            next_id: AtomicU64::new(1),
        });
        map.insert(key, Arc::downgrade(&d));
        d
    }

    /// A fresh key id on this device.
    pub(crate) fn next_key_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// What the TPM says about itself (its fixed properties), read once per
    /// connection. A TPM that does not answer is [`DeviceKind::Unknown`].
    pub(crate) fn info(&self) -> DeviceInfo {
        self.run(None, "read the TPM's fixed properties", |conn, _| {
            conn.info()
        })
        .unwrap_or_else(|_| DeviceInfo::unknown())
    }

    /// Signs a SHA-256 digest with a key, loading it first if needed.
    pub(crate) fn sign(
        &self,
        key: &KeySpec,
        digest: &Digest,
        scheme: SignatureScheme,
    ) -> Result<Signature> {
        self.run(Some(key), "signing", |conn, handle| {
            let handle = handle.ok_or(Fail::Done(internal("no key handle")))?;
            conn.ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.sign(handle, digest.clone(), scheme, null_ticket()?)
                })
                .map_err(tss("TPM2_Sign"))
        })
    }

    /// The key's public area as the TPM reports it (loads the key).
    pub(crate) fn read_public(&self, key: &KeySpec) -> Result<Public> {
        self.run(Some(key), "reading the public key", |conn, handle| {
            let handle = handle.ok_or(Fail::Done(internal("no key handle")))?;
            conn.ctx
                .execute_without_session(|c| c.read_public(handle))
                .map(|(public, _, _)| public)
                .map_err(tss("TPM2_ReadPublic"))
        })
    }

    /// Creates a key under the owner storage primary; returns its blob.
    pub(crate) fn create(
        &self,
        template: &Public,
        auth: Option<&Auth>,
    ) -> Result<(Public, Private)> {
        self.run(None, "creating a key", |conn, _| {
            let primary = conn.primary()?;
            conn.ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.create(primary, template.clone(), auth.cloned(), None, None, None)
                })
                .map(|r| (r.out_public, r.out_private))
                .map_err(tss("TPM2_Create"))
        })
    }

    /// True when a persistent handle holds an object.
    pub(crate) fn persistent_exists(&self, handle: u32) -> Result<bool> {
        self.run(None, "listing persistent handles", |conn, _| {
            conn.persistent_exists(handle)
        })
    }

    /// Makes a key blob persistent at `handle` (TPM2_EvictControl). An
    /// occupied handle is refused unless `replace`, which evicts the old key.
    pub(crate) fn persist(&self, blob: &KeySpec, handle: u32, replace: bool) -> Result<()> {
        let Source::Blob { .. } = blob.source else {
            return Err(internal("persist needs a key blob"));
        };
        let persistent = PersistentTpmHandle::new(handle)
            .map_err(|e| internal(&format!("bad persistent handle: {e}")))?;
        self.run(None, "persisting the key", |conn, _| {
            if conn.persistent_exists(handle)? {
                if !replace {
                    return Err(Fail::Done(occupied(handle)));
                }
                // Keys open on the old one resolve the handle anew on their
                // next use, and find that it holds another key.
                conn.forget_persistent(handle);
                conn.evict(persistent).map_err(|f| match f {
                    Fail::Tss(_, e) => Fail::Tss("TPM2_EvictControl (removing the old key)", e),
                    f => f,
                })?;
            }
            let transient = conn.load_blob(blob)?;
            let result = conn
                .ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.evict_control(
                        Provision::Owner,
                        transient.into(),
                        Persistent::Persistent(persistent),
                    )
                });
            let _ = conn.ctx.flush_context(transient.into());
            match result {
                Ok(mut tr) => {
                    let _ = conn.ctx.tr_close(&mut tr);
                    Ok(())
                }
                // NV_DEFINED: someone took the handle meanwhile.
                Err(e) if rc::raw(&e) == Some(0x14c) => Err(Fail::Done(occupied(handle))),
                Err(e) => Err(Fail::Tss("TPM2_EvictControl", e)),
            }
        })
    }

    /// Resolves a persistent key's handle anew and compares its Name with
    /// the one it was opened with: [`Error::TpmKeyUnloadable`] when the
    /// handle now holds another key.
    pub(crate) fn recheck(&self, key: &KeySpec) -> Result<()> {
        let Source::Persistent(h) = key.source else {
            return Ok(());
        };
        {
            let mut guard = lock(&self.conn);
            forget_if_forked(&mut guard);
            if let Some(conn) = guard.as_mut() {
                conn.forget_persistent(h);
            }
        }
        self.run(Some(key), "checking the key", |_, _| Ok(()))
    }

    /// Evicts the persistent object at `handle`, if there is one (undoing a
    /// `persist` whose key then failed to open).
    pub(crate) fn evict(&self, handle: u32) -> Result<()> {
        let persistent = PersistentTpmHandle::new(handle)
            .map_err(|e| internal(&format!("bad persistent handle: {e}")))?;
        self.run(None, "evicting the key", |conn, _| {
            if !conn.persistent_exists(handle)? {
                return Ok(());
            }
            conn.forget_persistent(handle);
            conn.evict(persistent)
        })
    }

    /// Forgets a key: flushes it if it was loaded, closes its handle if it
    /// was persistent. Called when the key is dropped.
    pub(crate) fn release(&self, id: u64) {
        let mut guard = lock(&self.conn);
        forget_if_forked(&mut guard);
        if let Some(conn) = guard.as_mut() {
            if let Some(pos) = conn.keys.iter().position(|k| k.id == id) {
                let k = conn.keys.swap_remove(pos);
                conn.drop_handle(k);
            }
        }
    }

    /// Runs `op` on a live connection (with `key` loaded when given),
    /// recovering from what can be recovered.
    fn run<T>(
        &self,
        key: Option<&KeySpec>,
        doing: &'static str,
        mut op: impl FnMut(&mut Conn, Option<KeyHandle>) -> Attempt<T>,
    ) -> Result<T> {
        let mut guard = lock(&self.conn);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.attempt(&mut guard, key, &mut op);
            let fail = match result {
                Ok(v) => return Ok(v),
                Err(f) => f,
            };
            let (what, err) = match fail {
                Fail::Done(e) => return Err(e),
                Fail::Connect(e) => {
                    if attempt >= MAX_ATTEMPTS.min(4) {
                        return Err(Error::Tpm(TpmError::Unreachable {
                            tcti: self.tcti.canonical.clone(),
                            reason: format!(
                                "{}; {}",
                                rc::describe(&e),
                                tcti::unreachable_hint(&self.tcti)
                            ),
                        }));
                    }
                    pause(attempt);
                    continue;
                }
                Fail::Tss(what, e) => (what, e),
            };
            let class = rc::classify(&err);
            let give_up = attempt >= MAX_ATTEMPTS;
            match class {
                Class::Transient if !give_up => pause(attempt),
                Class::Memory if !give_up => {
                    let current = key.map(|k| k.id);
                    let freed = guard.as_mut().is_some_and(|c| c.make_room(current));
                    if !freed {
                        return Err(self.final_error(key, doing, what, &err, class, true));
                    }
                }
                Class::Stale | Class::Disconnected if !give_up => {
                    // Drop the connection (flushing what still can be) and
                    // start over: new context, new primary, keys reloaded.
                    *guard = None;
                    if class == Class::Disconnected {
                        pause(attempt);
                    }
                }
                Class::NeedsStartup if !give_up => {
                    if let Some(conn) = guard.as_mut() {
                        let _ = conn.ctx.startup(StartupType::Clear);
                    }
                }
                _ => return Err(self.final_error(key, doing, what, &err, class, false)),
            }
        }
    }

    fn attempt<T>(
        &self,
        guard: &mut Option<Conn>,
        key: Option<&KeySpec>,
        op: &mut impl FnMut(&mut Conn, Option<KeyHandle>) -> Attempt<T>,
    ) -> Attempt<T> {
        forget_if_forked(guard);
        if guard.is_none() {
            let ctx = Context::new(self.tcti.conf.clone()).map_err(Fail::Connect)?;
            *guard = Some(Conn {
                pid: std::process::id(),
                ctx,
                primary: None,
                keys: Vec::new(),
                tick: 0,
                info: None,
            });
        }
        let conn = guard
            .as_mut()
            .ok_or_else(|| Fail::Done(internal("no connection")))?;
        let handle = match key {
            Some(k) => Some(conn.key_handle(k)?),
            None => None,
        };
        op(conn, handle)
    }

    fn final_error(
        &self,
        key: Option<&KeySpec>,
        doing: &str,
        what: &str,
        err: &tss_esapi::Error,
        class: Class,
        no_room: bool,
    ) -> Error {
        let name = key.map_or_else(
            || format!("the TPM at {}", self.tcti.canonical),
            |k| k.name.clone(),
        );
        let detail = rc::describe(err);
        match class {
            Class::AuthFailed if what.contains("primary") => Error::Tpm(TpmError::AuthFailed {
                key: name,
                reason: format!(
                    "the owner hierarchy has an authorization value ({detail}); popkey creates the storage primary with an empty owner auth, so keep keys under a persistent parent instead"
                ),
            }),
            Class::AuthFailed => Error::Tpm(TpmError::AuthFailed {
                key: name,
                reason: format!(
                    "the TPM rejected the key's authorization value during {what} ({detail}); give the right one with ;auth-source=FILE (a trailing newline is ignored; without auth-source popkey uses the empty value). Repeated failures lock the TPM out (dictionary-attack protection)"
                ),
            }),
            Class::Lockout => Error::Tpm(TpmError::AuthFailed {
                key: name,
                reason: format!(
                    "the TPM is in dictionary-attack lockout after too many wrong authorization values ({detail}); wait for the lockout to expire or reset it with `tpm2_dictionarylockout -c`"
                ),
            }),
            Class::Integrity => Error::Tpm(TpmError::KeyUnloadable {
                key: name,
                reason: format!(
                    "{what} failed its integrity check ({detail}): the key was made by another TPM, or under another parent, or this TPM's owner hierarchy was cleared since; the key is lost for this TPM — create a new one"
                ),
            }),
            Class::Memory if no_room => Error::Backend {
                backend: "tpm",
                message: format!(
                    "{doing}: the TPM has no free object slots ({detail}) and popkey holds nothing it can flush; other programs are holding transient objects — use a resource manager (device:/dev/tpmrm0 or tabrmd) or flush them with `tpm2_flushcontext -t`"
                ),
            },
            Class::Disconnected | Class::Stale => Error::Tpm(TpmError::Unreachable {
                tcti: self.tcti.canonical.clone(),
                reason: format!(
                    "{doing} failed {MAX_ATTEMPTS} times ({what}: {detail}); {}",
                    tcti::unreachable_hint(&self.tcti)
                ),
            }),
            _ => Error::Backend {
                backend: "tpm",
                message: format!("{name}: {doing}: {what} failed: {detail}"),
            },
        }
    }
}

impl Conn {
    /// The TPM's manufacturer, vendor strings, firmware version and
    /// revision (`TPM2_GetCapability`, fixed properties), once per connection.
    fn info(&mut self) -> Attempt<DeviceInfo> {
        if let Some(info) = &self.info {
            return Ok(info.clone());
        }
        let (data, _) = self
            .ctx
            .execute_without_session(|c| {
                c.get_capability(
                    CapabilityType::TpmProperties,
                    PropertyTag::FamilyIndicator.into(),
                    FIXED_PROPERTIES_ASKED,
                )
            })
            .map_err(tss("TPM2_GetCapability (fixed properties)"))?;
        let props = match data {
            CapabilityData::TpmProperties(list) => list,
            _ => return Ok(DeviceInfo::unknown()),
        };
        let get = |tag: PropertyTag| props.find(tag).map(|p| p.value());
        let info = describe_tpm(&FixedProperties {
            family: get(PropertyTag::FamilyIndicator),
            revision: get(PropertyTag::Revision),
            manufacturer: get(PropertyTag::Manufacturer),
            vendor: [
                get(PropertyTag::VendorString1),
                get(PropertyTag::VendorString2),
                get(PropertyTag::VendorString3),
                get(PropertyTag::VendorString4),
            ],
            firmware: [
                get(PropertyTag::FirmwareVersion1),
                get(PropertyTag::FirmwareVersion2),
            ],
        });
        self.info = Some(info.clone());
        Ok(info)
    }

    /// The owner storage primary, created on first use in this connection.
    fn primary(&mut self) -> Attempt<KeyHandle> {
        if let Some(p) = self.primary {
            return Ok(p);
        }
        let template = template::storage_primary().map_err(Fail::Done)?;
        let p = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.create_primary(Hierarchy::Owner, template, None, None, None, None)
            })
            .map_err(tss("TPM2_CreatePrimary (the owner storage primary)"))?
            .key_handle;
        self.primary = Some(p);
        Ok(p)
    }

    /// The handle of a key, loading or resolving it first if needed.
    fn key_handle(&mut self, key: &KeySpec) -> Attempt<KeyHandle> {
        self.tick += 1;
        let tick = self.tick;
        if let Some(k) = self.keys.iter_mut().find(|k| k.id == key.id) {
            k.last_used = tick;
            return Ok(k.handle);
        }
        let (handle, persistent) = match &key.source {
            Source::Persistent(h) => (self.open_persistent(*h, &key.name)?, Some(*h)),
            Source::Blob { .. } => (self.load_blob(key)?, None),
        };
        let loaded = Loaded {
            id: key.id,
            handle,
            transient: persistent.is_none(),
            persistent,
            last_used: tick,
        };
        if let Some(h) = persistent {
            if let Err(f) = self.check_pinned(key, handle, h) {
                self.drop_handle(loaded);
                return Err(f);
            }
        }
        if let Some(auth) = &key.auth {
            if let Err(e) = self.ctx.tr_set_auth(handle.into(), auth.clone()) {
                self.drop_handle(loaded);
                return Err(Fail::Tss("setting the key's auth value", e));
            }
        }
        self.keys.push(loaded);
        Ok(handle)
    }

    /// Compares the Name of the object now at persistent handle `h` with
    /// the one the key was opened with (recording it on first use). ESYS
    /// knows the Name from the TPM2_ReadPublic of the resolution: no extra
    /// round trip.
    fn check_pinned(&mut self, key: &KeySpec, handle: KeyHandle, h: u32) -> Attempt<()> {
        let name = self
            .ctx
            .tr_get_name(handle.into())
            .map_err(tss("reading the key's Name"))?;
        let name = name.value().to_vec();
        let pinned = key.pinned.get_or_init(|| name.clone());
        if *pinned == name {
            return Ok(());
        }
        Err(Fail::Done(replaced(&key.name, h)))
    }

    /// Evicts a persistent object, then drops ESYS's record of it: ESYS
    /// keeps it (with its Name) after the eviction, and would refuse to
    /// resolve the handle once another key is there.
    fn evict(&mut self, persistent: PersistentTpmHandle) -> Attempt<()> {
        let mut old = self
            .ctx
            .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::Persistent(persistent)))
            .map_err(tss("TPM2_ReadPublic"))?;
        let result = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.evict_control(Provision::Owner, old, Persistent::Persistent(persistent))
            });
        // Closes ESYS's object; tss-esapi's own record went with the
        // eviction, hence the ignored error.
        let _ = self.ctx.tr_close(&mut old);
        result.map(|_| ()).map_err(tss("TPM2_EvictControl"))
    }

    /// Closes the ESYS handles resolved from persistent handle `h`, so that
    /// the keys using them resolve (and check) it anew.
    fn forget_persistent(&mut self, h: u32) {
        let mut i = 0;
        while i < self.keys.len() {
            if self.keys[i].persistent == Some(h) {
                let k = self.keys.swap_remove(i);
                self.drop_handle(k);
            } else {
                i += 1;
            }
        }
    }

    /// An ESYS handle for a persistent object; a missing one is
    /// [`Error::KeyNotFound`].
    fn open_persistent(&mut self, handle: u32, name: &str) -> Attempt<KeyHandle> {
        let tpm_handle = PersistentTpmHandle::new(handle)
            .map_err(|_| Fail::Done(internal("bad persistent handle")))?;
        let mut resolved = self
            .ctx
            .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::Persistent(tpm_handle)));
        if matches!(&resolved, Err(e) if rc::raw(e) == Some(ESYS_GENERAL_FAILURE)) {
            // ESYS still holds this handle's object, with a Name the TPM no
            // longer reports there: the keys open on it were replaced. Close
            // it (those keys resolve anew, and are checked, on next use),
            // then resolve again for this one.
            self.forget_persistent(handle);
            resolved = self.ctx.execute_without_session(|c| {
                c.tr_from_tpm_public(TpmHandle::Persistent(tpm_handle))
            });
        }
        match resolved {
            Ok(h) => Ok(h.into()),
            Err(e) if rc::classify(&e) == Class::Stale => Err(Fail::Done(Error::KeyNotFound(
                format!(
                    "{name}: the TPM has no object at persistent handle {handle:#010x}; create one with PopKey::create(\"tpm:handle={handle:#010x}\") or list them with `tpm2_getcap handles-persistent`"
                ),
            ))),
            Err(e) => Err(Fail::Tss("TPM2_ReadPublic (the persistent handle)", e)),
        }
    }

    /// Loads a blob under its parent; the caller owns the transient handle.
    fn load_blob(&mut self, key: &KeySpec) -> Attempt<KeyHandle> {
        let Source::Blob {
            parent,
            public,
            private,
        } = &key.source
        else {
            return Err(Fail::Done(internal("not a key blob")));
        };
        let (parent_handle, close_parent) = if *parent == OWNER {
            (self.primary()?, false)
        } else {
            (self.open_persistent(*parent, &key.name)?, true)
        };
        let loaded = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.load(parent_handle, private.clone(), public.clone())
            });
        if close_parent {
            let mut h: ObjectHandle = parent_handle.into();
            let _ = self.ctx.tr_close(&mut h);
        }
        loaded.map_err(tss("TPM2_Load (the key)"))
    }

    fn persistent_exists(&mut self, handle: u32) -> Attempt<bool> {
        let (data, _) = self
            .ctx
            .execute_without_session(|c| c.get_capability(CapabilityType::Handles, handle, 1))
            .map_err(tss("TPM2_GetCapability"))?;
        Ok(match data {
            CapabilityData::Handles(list) => list.as_ref().iter().any(|h| u32::from(*h) == handle),
            _ => false,
        })
    }

    /// Frees one object slot: the least recently used key other than
    /// `keep`, else the primary. False when nothing could be freed.
    fn make_room(&mut self, keep: Option<u64>) -> bool {
        let victim = self
            .keys
            .iter()
            .enumerate()
            .filter(|(_, k)| k.transient && Some(k.id) != keep)
            .min_by_key(|(_, k)| k.last_used)
            .map(|(i, _)| i);
        if let Some(i) = victim {
            let k = self.keys.swap_remove(i);
            self.drop_handle(k);
            return true;
        }
        if let Some(p) = self.primary.take() {
            let _ = self.ctx.flush_context(p.into());
            return true;
        }
        false
    }

    fn drop_handle(&mut self, k: Loaded) {
        if k.transient {
            let _ = self.ctx.flush_context(k.handle.into());
        } else if self.keys.iter().any(|o| o.handle == k.handle) {
            // ESYS hands out one ESYS_TR per persistent handle: another key
            // open on the same handle still uses it.
        } else {
            let mut h: ObjectHandle = k.handle.into();
            let _ = self.ctx.tr_close(&mut h);
        }
    }
}

/// After fork(), the child finds its parent's connection: it forgets it
/// without a word to the TPM (no flush, no finalize: the socket or device
/// is shared with the parent), and the next attempt opens its own.
fn forget_if_forked(guard: &mut Option<Conn>) {
    if guard.as_ref().is_some_and(|c| c.pid != std::process::id()) {
        if let Some(conn) = guard.take() {
            std::mem::forget(conn);
        }
    }
}

/// A NULL hashcheck ticket: for unrestricted keys signing a digest the TPM
/// did not compute.
fn null_ticket() -> tss_esapi::Result<HashcheckTicket> {
    HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
        tag: TPM2_ST_HASHCHECK,
        hierarchy: TPM2_RH_NULL,
        digest: Default::default(),
    })
}

/// What ESYS's TR_FromTPMPublic returns when the Name at a handle it knows
/// has changed.
const ESYS_GENERAL_FAILURE: u32 = 0x07_0001;

fn replaced(name: &str, h: u32) -> Error {
    Error::Tpm(TpmError::KeyUnloadable {
        key: name.to_string(),
        reason: format!(
            "the key at persistent handle {h:#010x} is not the key this handle opened: it was replaced (evicted and another key made persistent there) since it was opened; popkey will not sign with it — open the key again to use the new one"
        ),
    })
}

fn occupied(handle: u32) -> Error {
    Error::KeyExists(format!(
        "TPM persistent handle {handle:#010x} (evict it with `tpm2_evictcontrol -C o -c {handle:#010x}` or choose another handle)"
    ))
}

fn internal(msg: &str) -> Error {
    Error::Backend {
        backend: "tpm",
        message: format!("internal error: {msg}"),
    }
}

/// Back-off before the next attempt: 5, 10, 20, … ms, at most 400 ms.
fn pause(attempt: u32) {
    let ms = (5u64 << attempt.min(7)).min(400);
    std::thread::sleep(Duration::from_millis(ms));
}

/// The fixed properties popkey reports (`None`: the TPM did not list it).
struct FixedProperties {
    family: Option<u32>,
    revision: Option<u32>,
    manufacturer: Option<u32>,
    vendor: [Option<u32>; 4],
    firmware: [Option<u32>; 2],
}

/// The ASCII of a 4-byte property (big-endian), NULs dropped.
fn ascii(v: u32) -> String {
    v.to_be_bytes()
        .iter()
        .filter(|b| **b != 0)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

/// The device description of a TPM. The reference implementation (the IBM
/// / Microsoft TPM simulator, and libtpms under swtpm) reports the vendor
/// string `"SW  " " TPM"`: a software TPM.
fn describe_tpm(p: &FixedProperties) -> DeviceInfo {
    let mut info = DeviceInfo::unknown();
    info.manufacturer = p.manufacturer.and_then(|m| text(&ascii(m)));
    let vendor: String = p.vendor.iter().flatten().map(|&v| ascii(v)).collect();
    info.model = text(&vendor.split_whitespace().collect::<Vec<_>>().join(" "));
    info.firmware = match p.firmware {
        [Some(a), Some(b)] => Some(format!(
            "{}.{}.{}.{}",
            a >> 16,
            a & 0xffff,
            b >> 16,
            b & 0xffff
        )),
        [Some(a), None] => Some(format!("{}.{}", a >> 16, a & 0xffff)),
        _ => None,
    };
    let family = p.family.and_then(|f| text(&ascii(f)));
    info.description = match (family, p.revision) {
        (Some(f), Some(r)) => Some(format!("TPM {f}, revision {}.{:02}", r / 100, r % 100)),
        (Some(f), None) => Some(format!("TPM {f}")),
        (None, _) => None,
    };
    let squashed: String = vendor
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    if squashed.contains("SWTPM") || (squashed.contains("SW") && squashed.contains("TPM")) {
        info.kind = DeviceKind::Software;
        info.known_as = Some("swtpm / IBM TPM simulator".into());
    } else if p.manufacturer.is_some() {
        info.kind = DeviceKind::Hardware;
    }
    info
}

#[cfg(test)]
mod device_info_tests {
    use super::*;

    #[test]
    fn the_reference_simulator_is_software() {
        // What swtpm 0.x (libtpms) answers, as tpm2_getcap prints it raw.
        let info = describe_tpm(&FixedProperties {
            family: Some(0x322E_3000),
            revision: Some(0xA4),
            manufacturer: Some(0x4942_4D00),
            vendor: [Some(0x5357_2020), Some(0x2054_504D), Some(0), Some(0)],
            firmware: [Some(0x2019_1023), Some(0x0016_3636)],
        });
        assert_eq!(info.kind, DeviceKind::Software);
        assert_eq!(info.manufacturer.as_deref(), Some("IBM"));
        assert_eq!(info.model.as_deref(), Some("SW TPM"));
        assert_eq!(info.firmware.as_deref(), Some("8217.4131.22.13878"));
        assert_eq!(info.description.as_deref(), Some("TPM 2.0, revision 1.64"));
    }

    #[test]
    fn other_vendors_are_hardware() {
        let info = describe_tpm(&FixedProperties {
            family: Some(0x322E_3000),
            revision: Some(0x8A),
            manufacturer: Some(u32::from_be_bytes(*b"IFX\0")),
            vendor: [
                Some(u32::from_be_bytes(*b"SLB9")),
                Some(u32::from_be_bytes(*b"670\0")),
                None,
                None,
            ],
            firmware: [Some(0x0007_0055), Some(0x0011_3800)],
        });
        assert_eq!(info.kind, DeviceKind::Hardware);
        assert_eq!(info.manufacturer.as_deref(), Some("IFX"));
        assert_eq!(info.model.as_deref(), Some("SLB9670"));
        assert_eq!(info.firmware.as_deref(), Some("7.85.17.14336"));
    }
}
