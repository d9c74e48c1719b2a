//! The token cache: tokens reused until shortly before they expire, one
//! request in flight per key, nothing on disk.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::token::{Scheme, TokenRequest, TokenResponse};
use crate::error::Result;

/// What a cached token is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// Token endpoint URL.
    pub endpoint: String,
    /// Client id.
    pub client_id: String,
    /// Scopes, sorted.
    pub scopes: Vec<String>,
    /// Token kind.
    pub scheme: Scheme,
    /// Thumbprint of the key the token is bound to.
    pub thumbprint: String,
}

impl CacheKey {
    /// The key for `req` bound to the key with `thumbprint`.
    pub fn new(req: &TokenRequest, thumbprint: &str) -> Self {
        let mut scopes = req.scopes.clone();
        scopes.sort();
        scopes.dedup();
        CacheKey {
            endpoint: req.token_endpoint.to_string(),
            client_id: req.client_id.clone(),
            scopes,
            scheme: req.scheme,
            thumbprint: thumbprint.to_owned(),
        }
    }
}

struct Cached {
    token: Arc<TokenResponse>,
    refresh_at: Instant,
    expires_at: Instant,
}

/// Longest lifetime the cache plans with, whatever `expires_in` says.
const MAX_LIFETIME_SECS: u64 = 86_400;

type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

/// An in-memory token cache with single-flight refresh.
///
/// However many tasks ask for the same key at once, one fetch runs; the
/// others wait for it and share its token.
#[derive(Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<CacheKey, Slot>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.len())
            .finish()
    }
}

impl TokenCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keys currently held.
    pub fn len(&self) -> usize {
        self.slots.lock().map_or(0, |m| m.len())
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets the token for `key` (for example after the API rejected it).
    pub fn invalidate(&self, key: &CacheKey) {
        if let Ok(mut m) = self.slots.lock() {
            m.remove(key);
        }
    }

    /// The cached token for `key`, or the one `fetch` gets (then cached).
    ///
    /// A token is refreshed at `refresh_in` when the server gave it, else
    /// when a tenth of its lifetime (at most 5 minutes) is left. If a refresh
    /// fails while the old token is still unexpired, the old token is used.
    /// A failure is not shared: callers that were waiting for the failed
    /// fetch each try once more in turn (each bounded by the retry policy
    /// and timeouts).
    pub async fn get_or_fetch<F, Fut>(&self, key: &CacheKey, fetch: F) -> Result<Arc<TokenResponse>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<TokenResponse>>,
    {
        let slot = self.slot(key);
        let mut guard = slot.lock().await;
        let now = Instant::now();
        if let Some(c) = guard.as_ref() {
            if now < c.refresh_at {
                return Ok(c.token.clone());
            }
        }
        match fetch().await {
            Ok(token) => {
                // A server's number is not trusted to be sane: past a day the
                // token is simply refreshed daily (and `Instant` cannot overflow).
                let life = Duration::from_secs(token.expires_in.min(MAX_LIFETIME_SECS));
                let margin = (life / 10).min(Duration::from_secs(300));
                let refresh = token
                    .refresh_in
                    .map(Duration::from_secs)
                    .unwrap_or(life - margin)
                    .min(life - margin);
                let token = Arc::new(token);
                *guard = Some(Cached {
                    token: token.clone(),
                    refresh_at: now + refresh,
                    expires_at: now + life,
                });
                Ok(token)
            }
            Err(e) => match guard.as_ref() {
                Some(c) if now < c.expires_at => Ok(c.token.clone()),
                _ => Err(e),
            },
        }
    }

    fn slot(&self, key: &CacheKey) -> Slot {
        let mut map = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(key) && map.len() >= 64 {
            // Drop slots whose token has expired and that nobody is using.
            let now = Instant::now();
            map.retain(|_, slot| match slot.try_lock() {
                Ok(g) => g.as_ref().is_some_and(|c| c.expires_at > now),
                Err(_) => true,
            });
        }
        map.entry(key.clone()).or_default().clone()
    }
}
