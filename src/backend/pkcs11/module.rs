//! PKCS#11 modules: found once, loaded once and `C_Initialize`d once per
//! process, shared by every key that names them.
//!
//! A module is re-initialized (`C_Finalize` + `C_Initialize`) only when it
//! has to be: after `fork()` (the child must not use its parent's sessions),
//! when someone else finalized it (`CKR_CRYPTOKI_NOT_INITIALIZED`), or when a
//! token that was there went away and may be back. Every re-initialization
//! bumps an epoch; sessions and handles from an older epoch are abandoned
//! (never closed: their handle numbers may already belong to new sessions).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};

use super::pin::RejectedPins;
use crate::error::{Error, Pkcs11Error, Result};
use crate::uri::Pkcs11Uri;

/// At most one re-initialization per module in this window; callers that
/// would reset again within it get [`Error::TokenUnavailable`]. A forked
/// child is not held to it (it must initialize anew).
const RESET_INTERVAL: Duration = Duration::from_secs(2);

/// Where p11-kit installs its proxy module, which forwards to every module
/// the system has registered.
const P11_KIT_PROXY: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so",
    "/usr/lib/aarch64-linux-gnu/p11-kit-proxy.so",
    "/usr/lib64/p11-kit-proxy.so",
    "/usr/lib/p11-kit-proxy.so",
    "/usr/local/lib/p11-kit-proxy.so",
    "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so",
];

/// The module a URI names: its `module-path`, else `$PKCS11_MODULE`, else the
/// p11-kit proxy if it is installed.
pub(super) fn module_path(uri: &Pkcs11Uri) -> Result<PathBuf> {
    if let Some(p) = &uri.module_path {
        return Ok(p.clone());
    }
    if let Some(p) = std::env::var_os("PKCS11_MODULE").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    P11_KIT_PROXY
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .map(Path::to_path_buf)
        .ok_or_else(|| Error::Pkcs11(Pkcs11Error::Module {
            path: PathBuf::from("(none)"),
            reason: "no module given: add `?module-path=/path/to/module.so` to the URI, set PKCS11_MODULE, or install p11-kit's proxy module".into(),
        }))
}

struct State {
    ctx: Pkcs11,
    /// False after a failed re-initialization.
    ready: bool,
    /// The process that initialized the module.
    pid: u32,
    /// Bumped on every re-initialization.
    epoch: u64,
    /// popkey's own `C_Initialize` initialized the module (it did not
    /// answer `CKR_CRYPTOKI_ALREADY_INITIALIZED`). Only such a module is
    /// ever finalized by popkey.
    owned: bool,
    /// When popkey last re-initialized the module.
    last_reset: Option<Instant>,
}

/// One loaded, initialized PKCS#11 module.
pub(crate) struct Module {
    path: PathBuf,
    state: RwLock<State>,
    /// PINs tokens rejected, for every key of this module in this process.
    pub(super) rejected: RejectedPins,
}

/// A module known to be initialized in this process. Holding it keeps the
/// module from being re-initialized under a running call.
pub(super) struct Live<'a> {
    guard: RwLockReadGuard<'a, State>,
}

impl Live<'_> {
    pub(super) fn ctx(&self) -> &Pkcs11 {
        &self.guard.ctx
    }
    pub(super) fn epoch(&self) -> u64 {
        self.guard.epoch
    }
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Arc<Module>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// The process-wide handle of the module at `path`, loading and
/// initializing it on first use.
pub(super) fn load(path: &Path) -> Result<Arc<Module>> {
    let bad = |reason: String| {
        Error::Pkcs11(Pkcs11Error::Module {
            path: path.to_path_buf(),
            reason,
        })
    };
    let canonical = std::fs::canonicalize(path).map_err(|e| {
        bad(if e.kind() == std::io::ErrorKind::NotFound {
            "does not exist; check module-path / PKCS11_MODULE (SoftHSM2 on Debian: /usr/lib/softhsm/libsofthsm2.so, package softhsm2)".into()
        } else {
            format!("cannot be read: {e}")
        })
    })?;
    if !canonical.is_file() {
        return Err(bad("is not a file".into()));
    }
    let mut reg = registry().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(m) = reg.get(&canonical) {
        return Ok(Arc::clone(m));
    }
    let ctx = Pkcs11::new(&canonical).map_err(|e| match e {
        CkError::LibraryLoading(e) => bad(format!("cannot be loaded as a shared library: {e}")),
        CkError::MissingSymbol(_) | CkError::NullFunctionPointer => {
            bad("is a shared library but not a PKCS#11 module (it has no C_GetFunctionList)".into())
        }
        other => bad(format!("is not a usable PKCS#11 module: {other}")),
    })?;
    let owned = initialize(&ctx).map_err(|e| bad(format!("C_Initialize failed: {e}")))?;
    let module = Arc::new(Module {
        path: canonical.clone(),
        state: RwLock::new(State {
            ctx,
            ready: true,
            pid: std::process::id(),
            epoch: 0,
            owned,
            last_reset: None,
        }),
        rejected: RejectedPins::default(),
    });
    reg.insert(canonical, Arc::clone(&module));
    Ok(module)
}

/// `C_Initialize` with OS locking. A module someone else in this process
/// already initialized is fine (but not popkey's: returns false).
fn initialize(ctx: &Pkcs11) -> std::result::Result<bool, String> {
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => Ok(true),
        Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(false),
        Err(CkError::Pkcs11(rv, _)) => Err(super::errors::ckr_name(rv)),
        Err(e) => Err(e.to_string()),
    }
}

impl Module {
    /// The current epoch (bumped by every re-initialization).
    pub(super) fn epoch(&self) -> u64 {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .epoch
    }

    /// The module, if it is still in `epoch` (so handles of that epoch may
    /// be closed while the returned guard is held); never re-initializes.
    pub(super) fn current(&self, epoch: u64) -> Option<Live<'_>> {
        let guard = self.state.read().unwrap_or_else(PoisonError::into_inner);
        (guard.ready && guard.epoch == epoch && guard.pid == std::process::id())
            .then_some(Live { guard })
    }

    /// The module, initialized in this process (re-initialized first after
    /// a fork or a failed re-initialization).
    pub(super) fn live(&self) -> Result<Live<'_>> {
        for _ in 0..3 {
            let seen = {
                let guard = self.state.read().unwrap_or_else(PoisonError::into_inner);
                if guard.ready && guard.pid == std::process::id() {
                    return Ok(Live { guard });
                }
                guard.epoch
            };
            self.reinitialize(seen)?;
        }
        Err(Error::Pkcs11(Pkcs11Error::TokenUnavailable(format!(
            "the PKCS#11 module {} keeps being re-initialized by another thread",
            self.path.display()
        ))))
    }

    /// `C_Finalize` + `C_Initialize`, unless another thread already did it
    /// since `seen_epoch`. In a forked child the parent's state is left alone
    /// (no `C_Finalize`, no session closed) and the module initialized anew.
    /// The caller must not hold a [`Live`] of this module.
    ///
    /// Held back: at most one reset per [`RESET_INTERVAL`] (callers within it
    /// get [`Error::TokenUnavailable`]), and a module that another library in
    /// this process initialized is never finalized: it is only initialized
    /// when it says it is not, otherwise this is an error.
    pub(super) fn reinitialize(&self, seen_epoch: u64) -> Result<()> {
        let mut st = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let pid = std::process::id();
        if st.epoch != seen_epoch && st.ready && st.pid == pid {
            return Ok(());
        }
        let forked = st.pid != pid;
        if !forked {
            if let Some(t) = st.last_reset {
                if t.elapsed() < RESET_INTERVAL {
                    return Err(Error::Pkcs11(Pkcs11Error::TokenUnavailable(format!(
                        "the PKCS#11 module {} was re-initialized less than {} s ago; popkey resets it at most once per {} s and looks for the token again on a later call",
                        self.path.display(),
                        RESET_INTERVAL.as_secs(),
                        RESET_INTERVAL.as_secs()
                    ))));
                }
            }
        }
        if !forked && !st.owned {
            // Not ours to finalize: initialize only if it is not initialized
            // any more (its owner finalized it).
            st.last_reset = Some(Instant::now());
            return match initialize(&st.ctx) {
                Ok(true) => {
                    st.owned = true;
                    st.epoch += 1;
                    st.ready = true;
                    Ok(())
                }
                Ok(false) => Err(Error::Pkcs11(Pkcs11Error::Module {
                    path: self.path.clone(),
                    reason: "another library in this process initialized this module, so popkey does not finalize and re-initialize it to recover; the token may show up again once that library re-initializes it, or run popkey in a process of its own".into(),
                })),
                Err(code) => {
                    st.epoch += 1;
                    st.ready = false;
                    Err(Error::Pkcs11(Pkcs11Error::Module {
                        path: self.path.clone(),
                        reason: format!("C_Initialize failed while recovering: {code}"),
                    }))
                }
            };
        }
        if !forked {
            // Errors (typically CKR_CRYPTOKI_NOT_INITIALIZED when someone else
            // finalized the module) do not matter: we initialize next.
            let _ = st.ctx.clone().finalize();
        }
        st.epoch += 1;
        st.pid = pid;
        st.last_reset = Some(Instant::now());
        match initialize(&st.ctx) {
            Ok(owned) => {
                st.owned = owned;
                st.ready = true;
                Ok(())
            }
            Err(code) => {
                st.ready = false;
                Err(Error::Pkcs11(Pkcs11Error::Module {
                    path: self.path.clone(),
                    reason: format!("C_Initialize failed while recovering: {code}"),
                }))
            }
        }
    }
}
