//! The flags every verifying command shares with the other instances of a
//! fleet (`popkey verify`, `popkey gateway`): the replay store and the
//! nonce key ring, parsed once here.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use popkey::verify::nonce::NonceIssuer;

#[derive(Args)]
pub(crate) struct FleetArgs {
    #[cfg(feature = "redis")]
    /// Record proofs in this Redis/Valkey (`redis://host:port/db`,
    /// `rediss://…`, `unix:///path.sock`), shared with the other instances:
    /// a proof accepted anywhere is a replay everywhere. If the store cannot
    /// answer, the proof is refused (`replay_store_unavailable`).
    #[arg(long, value_name = "URL")]
    pub(crate) replay_store: Option<String>,
    #[cfg(feature = "redis")]
    /// Key prefix in the replay store (default `popkey:replay:`).
    #[arg(long, value_name = "PREFIX", requires = "replay_store")]
    pub(crate) replay_prefix: Option<String>,
    #[cfg(feature = "redis")]
    /// A file holding the replay store's password (instead of the URL).
    #[arg(long, value_name = "FILE", requires = "replay_store")]
    pub(crate) replay_password_file: Option<PathBuf>,
    #[cfg(feature = "redis")]
    /// How long to wait for the replay store, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 250)]
    pub(crate) replay_timeout_ms: u64,
    /// Require a nonce issued with this key ring (lines of `<id> <base64
    /// secret>`, or JSON), as every instance sharing the ring does.
    #[arg(long, value_name = "FILE")]
    pub(crate) nonce_key_ring: Option<PathBuf>,
    /// How long a key-ring nonce is accepted, in seconds.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 300,
        requires = "nonce_key_ring"
    )]
    pub(crate) nonce_lifetime: u64,
}

impl FleetArgs {
    /// The nonce issuer built from `--nonce-key-ring`, if given.
    pub(crate) fn nonce_issuer(&self) -> Result<Option<Arc<NonceIssuer>>, String> {
        match &self.nonce_key_ring {
            Some(path) => NonceIssuer::from_key_ring_file(path, self.nonce_lifetime)
                .map(|n| Some(Arc::new(n)))
                .map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }

    /// The shared replay store named by `--replay-store`, if given (its
    /// calls need a tokio runtime).
    #[cfg(feature = "redis")]
    pub(crate) fn replay_store(
        &self,
    ) -> Result<Option<Arc<popkey::verify::redis::RedisReplayStore>>, String> {
        let Some(url) = &self.replay_store else {
            return Ok(None);
        };
        let mut store = popkey::verify::redis::RedisReplayStore::new(url)
            .map_err(|e| e.message().to_owned())?
            .timeout(std::time::Duration::from_millis(self.replay_timeout_ms));
        if let Some(p) = &self.replay_password_file {
            store = store.password_file(p).map_err(|e| e.message().to_owned())?;
        }
        if let Some(p) = &self.replay_prefix {
            store = store.prefix(p.clone());
        }
        Ok(Some(Arc::new(store)))
    }
}
