//! A replay store shared by a fleet of verifiers: Redis or Valkey.
//!
//! Every instance of an API records the proofs it accepts in one Redis (or
//! Valkey, or Redis Cluster), so a proof accepted by one instance is a
//! replay at every other.
//!
//! * One atomic `SET <prefix><id> 1 NX PX <ms>` per proof: the first
//!   instance to record it wins, every other sees `replay`. There is no
//!   check-then-add window.
//! * `<id>` is `dpop:` or `shr:` followed by base64url(SHA-256(length-prefixed
//!   thumbprint ‖ `jti` or the SHR payload)): 43 characters the client
//!   cannot choose. Keys never hold attacker-chosen bytes.
//! * The TTL is the proof's remaining acceptance window (`iat`/`ts` +
//!   max age + clock skew − now), so Redis holds about one key per proof
//!   accepted in the last window.
//! * Each call has a timeout (default 250 ms). On a timeout, a lost
//!   connection or any other error the verification **fails closed** with
//!   [`ErrorKind::ReplayStoreUnavailable`] (answer 503): a proof is never
//!   accepted without being recorded. The connection manager reconnects in
//!   the background, so the same store works again once Redis is back.
//! * Single-key commands only: safe with Redis Cluster.

use std::path::Path;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionInfo, IntoConnectionInfo};

use super::replay::{AsyncReplayStore, ReplayFuture};
use super::{err, ErrorKind, VerifyError};

/// The key prefix used unless [`RedisReplayStore::prefix`] sets another.
pub const DEFAULT_PREFIX: &str = "popkey:replay:";

/// The per-call timeout used unless [`RedisReplayStore::timeout`] sets another.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);

/// An [`AsyncReplayStore`] in Redis/Valkey, for verifiers behind a load
/// balancer (see the [module documentation](self)).
///
/// URLs: `redis://[user:password@]host[:port][/db]`, `rediss://…` (TLS) and
/// `unix:///path/to/redis.sock[?db=N]`. The password may also come from a
/// file ([`RedisReplayStore::password_file`]); it never appears in `Debug`
/// output or error messages.
///
/// Creating the store does not connect; the first verification does, and a
/// failed connection is retried by later ones.
///
/// ```no_run
/// # async fn demo() -> Result<(), popkey::verify::VerifyError> {
/// use std::sync::Arc;
/// use popkey::verify::{dpop::DpopVerifier, redis::RedisReplayStore, token::DecodeOnly, Request};
/// let store = Arc::new(RedisReplayStore::new("redis://127.0.0.1:6379/0")?.prefix("api1:"));
/// let verifier = DpopVerifier::new(Arc::new(DecodeOnly)).async_replay_store(store);
/// # let proof = "";
/// let request = Request::new("GET", "https://api.example.com/x").header("DPoP", proof);
/// match verifier.verify_async(&request).await {
///     Ok(v) => { /* serve */ }
///     Err(e) if e.kind() == popkey::verify::ErrorKind::ReplayStoreUnavailable => { /* 503 */ }
///     Err(e) => { /* 401 */ }
/// }
/// # Ok(()) }
/// ```
pub struct RedisReplayStore {
    client: redis::Client,
    manager: tokio::sync::OnceCell<ConnectionManager>,
    prefix: String,
    timeout: Duration,
    /// Where it connects, without credentials (for Debug).
    shown: String,
}

fn unavailable(message: impl Into<String>) -> VerifyError {
    err(ErrorKind::ReplayStoreUnavailable, message)
}

impl RedisReplayStore {
    /// A store at `url` (see the type documentation), with the default
    /// prefix and timeout. Fails only on an unusable URL.
    pub fn new(url: &str) -> Result<Self, VerifyError> {
        let info = url.into_connection_info().map_err(|e| {
            // The URL may hold a password: name the problem, not the URL.
            err(
                ErrorKind::ReplayStoreUnavailable,
                format!("the replay store URL is unusable ({:?})", e.kind()),
            )
        })?;
        Self::from_info(info)
    }

    fn from_info(info: ConnectionInfo) -> Result<Self, VerifyError> {
        let shown = format!("{} db {}", info.addr, info.redis.db);
        let client = redis::Client::open(info).map_err(|e| {
            unavailable(format!("the replay store URL is unusable ({:?})", e.kind()))
        })?;
        Ok(RedisReplayStore {
            client,
            manager: tokio::sync::OnceCell::new(),
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            shown,
        })
    }

    /// Reads the password from `path` (one line; surrounding whitespace is
    /// dropped), replacing any in the URL. Call before the first use.
    pub fn password_file(self, path: impl AsRef<Path>) -> Result<Self, VerifyError> {
        let path = path.as_ref();
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            unavailable(format!(
                "cannot read the replay store password file {}: {e}",
                path.display()
            ))
        })?);
        let mut info = self.client.get_connection_info().clone();
        info.redis.password = Some(text.trim().to_owned());
        let mut store = Self::from_info(info)?;
        store.prefix = self.prefix;
        store.timeout = self.timeout;
        Ok(store)
    }

    /// Prefixes every key with `prefix` (default `popkey:replay:`), to share
    /// one Redis between APIs or environments.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The longest a verification waits for Redis (default 250 ms),
    /// connecting included; past it the verification fails closed.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The Redis key a replay id is recorded under.
    pub fn key_for(&self, id: &str) -> String {
        format!("{}{}", self.prefix, id)
    }

    async fn connection(&self) -> Result<ConnectionManager, VerifyError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1)
            .set_factor(10)
            .set_max_delay(100);
        let manager = self
            .manager
            .get_or_try_init(|| ConnectionManager::new_with_config(self.client.clone(), config))
            .await
            .map_err(|e| {
                unavailable(format!(
                    "cannot connect to the replay store at {} ({:?})",
                    self.shown,
                    e.kind()
                ))
            })?;
        Ok(manager.clone())
    }

    /// `SET key 1 NX PX ttl_ms`: true when this call recorded it.
    async fn set_nx(&self, key: &str, ttl_ms: u64) -> Result<bool, VerifyError> {
        let mut conn = self.connection().await?;
        let answer: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut conn)
            .await
            .map_err(|e| {
                unavailable(format!(
                    "the replay store at {} failed ({:?})",
                    self.shown,
                    e.kind()
                ))
            })?;
        Ok(answer.is_some())
    }
}

impl AsyncReplayStore for RedisReplayStore {
    fn check_and_record_async<'a>(
        &'a self,
        id: &'a str,
        expires_at: u64,
        now: u64,
    ) -> ReplayFuture<'a> {
        Box::pin(async move {
            if expires_at < now {
                // Already outside its window: nothing to remember.
                return Ok(());
            }
            // Whole seconds: a proof is acceptable through its expiry second.
            let ttl_ms = (expires_at - now).max(1).saturating_mul(1000);
            let key = self.key_for(id);
            match tokio::time::timeout(self.timeout, self.set_nx(&key, ttl_ms)).await {
                Ok(Ok(true)) => Ok(()),
                Ok(Ok(false)) => Err(err(
                    ErrorKind::Replay,
                    "this proof was already used; send a fresh one",
                )),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(unavailable(format!(
                    "the replay store at {} did not answer within {} ms",
                    self.shown,
                    self.timeout.as_millis()
                ))),
            }
        })
    }
}

impl std::fmt::Debug for RedisReplayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisReplayStore")
            .field("at", &self.shown)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_errors_never_show_the_password() {
        let s = RedisReplayStore::new("redis://user:hunter2secret@127.0.0.1:1/3").unwrap();
        let d = format!("{s:?}");
        assert!(!d.contains("hunter2secret"), "{d}");
        assert!(d.contains("127.0.0.1"), "{d}");
        let e = RedisReplayStore::new("redis://user:hunter2secret@[::1/x").unwrap_err();
        assert!(!e.to_string().contains("hunter2secret"));
        assert_eq!(e.kind(), ErrorKind::ReplayStoreUnavailable);
        RedisReplayStore::new("unix:///tmp/x.sock?db=2").unwrap();
        RedisReplayStore::new("rediss://h.example:6380/0").unwrap();
    }

    #[tokio::test]
    async fn unreachable_store_fails_closed() {
        // Port 1 on loopback: refused at once.
        let s = RedisReplayStore::new("redis://127.0.0.1:1/0").unwrap();
        let e = s
            .check_and_record_async("dpop:x", 2_000, 1_000)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ReplayStoreUnavailable);
    }
}
