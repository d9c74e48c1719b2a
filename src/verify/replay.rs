//! Replay protection: remember each proof for as long as it could be
//! accepted, and refuse it the second time.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{err, ErrorKind, VerifyError};

/// Where seen proof identifiers are kept. Implement it over a shared store
/// (Redis, a database) when several API instances verify proofs.
pub trait ReplayStore: Send + Sync {
    /// Records `id` until `expires_at` (Unix seconds). Fails with
    /// [`ErrorKind::Replay`] when `id` is already recorded and unexpired,
    /// and with [`ErrorKind::ReplayStoreUnavailable`] when the store cannot
    /// record it (it must fail closed).
    fn check_and_record(&self, id: &str, expires_at: u64, now: u64) -> Result<(), VerifyError>;
}

const SHARDS: usize = 16;

/// A bounded in-memory [`ReplayStore`], sharded for concurrency.
///
/// When full of unexpired entries it refuses new proofs rather than forget
/// old ones (forgetting would let a replay through).
///
/// ```
/// use popkey::verify::replay::{MemoryReplayCache, ReplayStore};
/// let cache = MemoryReplayCache::new(10_000);
/// cache.check_and_record("jti-1", 1_000_300, 1_000_000)?;
/// assert!(cache.check_and_record("jti-1", 1_000_300, 1_000_001).is_err());
/// # Ok::<(), popkey::verify::VerifyError>(())
/// ```
pub struct MemoryReplayCache {
    shards: Vec<Mutex<HashMap<String, u64>>>,
    per_shard: usize,
}

impl MemoryReplayCache {
    /// A cache holding at most about `capacity` unexpired entries.
    pub fn new(capacity: usize) -> Self {
        MemoryReplayCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    /// Entries currently held (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |m| m.len()))
            .sum()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, id: &str) -> &Mutex<HashMap<String, u64>> {
        // FNV-1a: shards only spread lock contention, so any stable hash will do.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in id.as_bytes() {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        &self.shards[(h % SHARDS as u64) as usize]
    }
}

impl Default for MemoryReplayCache {
    fn default() -> Self {
        MemoryReplayCache::new(1 << 20)
    }
}

impl ReplayStore for MemoryReplayCache {
    fn check_and_record(&self, id: &str, expires_at: u64, now: u64) -> Result<(), VerifyError> {
        let mut map = self.shard(id).lock().map_err(|_| {
            err(
                ErrorKind::ReplayStoreUnavailable,
                "replay cache lock poisoned",
            )
        })?;
        if let Some(&exp) = map.get(id) {
            if exp >= now {
                return Err(err(
                    ErrorKind::Replay,
                    "this proof was already used; send a fresh one",
                ));
            }
        }
        if map.len() >= self.per_shard && !map.contains_key(id) {
            map.retain(|_, exp| *exp >= now);
            if map.len() >= self.per_shard {
                return Err(err(
                    ErrorKind::ReplayStoreUnavailable,
                    "the replay cache is full of unexpired proofs; refusing rather than forgetting",
                ));
            }
        }
        map.insert(id.to_owned(), expires_at);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_and_bound() {
        let c = MemoryReplayCache::new(SHARDS); // one entry per shard
        c.check_and_record("a", 100, 50).unwrap();
        assert_eq!(
            c.check_and_record("a", 100, 60).unwrap_err().kind(),
            ErrorKind::Replay
        );
        // Expired entries can be recorded again.
        c.check_and_record("a", 200, 101).unwrap();
        // Fill every shard, then one more in a full shard is refused.
        let mut refused = 0;
        for i in 0..SHARDS * 4 {
            if let Err(e) = c.check_and_record(&format!("id{i}"), 1000, 150) {
                assert_eq!(e.kind(), ErrorKind::ReplayStoreUnavailable);
                refused += 1;
            }
        }
        assert!(refused > 0);
        assert!(c.len() <= SHARDS);
        // Once they expire, room returns.
        c.check_and_record("later", 5000, 2000).unwrap();
    }
}
