//! Replay protection: remember each proof for as long as it could be
//! accepted, and refuse it the second time.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
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

/// The future an [`AsyncReplayStore`] answers with.
pub type ReplayFuture<'a> = Pin<Box<dyn Future<Output = Result<(), VerifyError>> + Send + 'a>>;

/// A [`ReplayStore`] that does network I/O (Redis, a database) and so must
/// not block the async runtime's worker threads: the verifiers'
/// `verify_async` entry points call it.
///
/// The contract of [`check_and_record_async`](Self::check_and_record_async)
/// is the one of [`ReplayStore::check_and_record`]: record `id`
/// until `expires_at` (Unix seconds) atomically, fail with
/// [`ErrorKind::Replay`] when it is already recorded and unexpired, and with
/// [`ErrorKind::ReplayStoreUnavailable`] on any fault (timeout, lost
/// connection): fail closed, never accept.
///
/// `id` is always a hash made by the verifier (`dpop:` or `shr:` followed by
/// 43 base64url characters), never bytes the client chose.
pub trait AsyncReplayStore: Send + Sync {
    /// Records `id` until `expires_at`; see the trait documentation.
    fn check_and_record_async<'a>(
        &'a self,
        id: &'a str,
        expires_at: u64,
        now: u64,
    ) -> ReplayFuture<'a>;
}

/// One proof to record, made by a verifier's checks and recorded last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReplayRecord {
    pub(crate) id: String,
    pub(crate) expires_at: u64,
    pub(crate) now: u64,
}

/// Where a verifier records proofs: nowhere, a blocking store, an async
/// store, or the in-memory cache (both).
#[derive(Clone)]
pub(crate) enum ReplaySink {
    Off,
    Sync(std::sync::Arc<dyn ReplayStore>),
    Async(std::sync::Arc<dyn AsyncReplayStore>),
}

impl ReplaySink {
    pub(crate) fn is_on(&self) -> bool {
        !matches!(self, ReplaySink::Off)
    }

    /// Records from a blocking caller. An async-only store cannot be used
    /// here: fail closed.
    pub(crate) fn record(&self, r: Option<ReplayRecord>) -> Result<(), VerifyError> {
        let Some(r) = r else { return Ok(()) };
        match self {
            ReplaySink::Off => Ok(()),
            ReplaySink::Sync(s) => s.check_and_record(&r.id, r.expires_at, r.now),
            ReplaySink::Async(_) => Err(err(
                ErrorKind::ReplayStoreUnavailable,
                "this verifier's replay store is asynchronous; call verify_async",
            )),
        }
    }

    /// Records from an async caller. A blocking store is called in place
    /// (the in-memory cache only takes a short lock).
    pub(crate) async fn record_async(&self, r: Option<ReplayRecord>) -> Result<(), VerifyError> {
        let Some(r) = r else { return Ok(()) };
        match self {
            ReplaySink::Off => Ok(()),
            ReplaySink::Sync(s) => s.check_and_record(&r.id, r.expires_at, r.now),
            ReplaySink::Async(s) => s.check_and_record_async(&r.id, r.expires_at, r.now).await,
        }
    }
}

const SHARDS: usize = 16;

/// A bounded in-memory [`ReplayStore`], sharded for concurrency.
///
/// Verifiers use one by default (one per verifier, so one per process unless
/// you share it); call `without_replay_protection()` on a verifier to opt
/// out, or [`ReplayStore`] over a shared store when several instances
/// verify proofs.
///
/// * Ids are held as 128-bit fingerprints keyed by random secrets made when
///   the cache is created (two SipHash keys), which also choose the shard,
///   so nobody outside can aim proofs at one shard or one bucket. Two ids
///   sharing a fingerprint (odds about n²/2¹²⁹ for n entries) would only
///   make the second be refused as a replay: the cache fails closed.
/// * Entries are dropped when they expire (an expiry wheel swept as the clock
///   moves), so expired entries never take the room of new ones; an insert
///   costs O(1) amortised (each entry is dropped once; the sweep walks at
///   most one slot per elapsed second), never a scan of the shard.
/// * When full of unexpired entries it refuses new proofs rather than forget
///   old ones (forgetting would let a replay through).
///
/// It implements [`AsyncReplayStore`] too, with the same semantics and
/// errors.
///
/// ```
/// use popkey::verify::replay::{MemoryReplayCache, ReplayStore};
/// let cache = MemoryReplayCache::new(10_000);
/// cache.check_and_record("jti-1", 1_000_300, 1_000_000)?;
/// assert!(cache.check_and_record("jti-1", 1_000_300, 1_000_001).is_err());
/// # Ok::<(), popkey::verify::VerifyError>(())
/// ```
pub struct MemoryReplayCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    /// Keyed with random secrets (per cache) that never leave the process:
    /// the two halves of an id's fingerprint.
    keys: (RandomState, RandomState),
}

/// An id's keyed 128-bit fingerprint.
type Fingerprint = u128;

/// Hashes a [`Fingerprint`] map: the fingerprint is already a keyed random
/// value, so its bits are used as they are.
#[derive(Clone, Copy, Default)]
struct FingerprintHasher(u64);

impl std::hash::Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u128 keys are hashed here (`write_u128`); fold anything else.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u128(&mut self, v: u128) {
        self.0 = (v as u64) ^ ((v >> 64) as u64);
    }
}

type FingerprintMap<V> = HashMap<Fingerprint, V, std::hash::BuildHasherDefault<FingerprintHasher>>;

#[derive(Default)]
struct Shard {
    /// id fingerprint -> expiry (Unix seconds).
    entries: FingerprintMap<u64>,
    /// expiry second -> fingerprints recorded with that expiry.
    wheel: HashMap<u64, Vec<Fingerprint>>,
    /// Every wheel slot before this second has been swept.
    swept_to: u64,
    /// Entries and slots examined while sweeping (for work-bound tests).
    examined: u64,
}

impl Shard {
    /// Drops every entry that expired before `now`: each entry is removed
    /// once, and the walk over empty seconds is bounded by the number of
    /// slots (so a clock jump costs no more than the entries it frees).
    fn sweep(&mut self, now: u64) {
        if now <= self.swept_to {
            return;
        }
        let gap = now - self.swept_to;
        if gap > self.wheel.len() as u64 {
            // Fewer slots than seconds to walk: visit the slots instead.
            let expired: Vec<u64> = self.wheel.keys().copied().filter(|&t| t < now).collect();
            self.examined += self.wheel.len() as u64;
            for t in expired {
                self.drop_slot(t);
            }
        } else {
            for t in self.swept_to..now {
                self.examined += 1;
                self.drop_slot(t);
            }
        }
        self.swept_to = now;
    }

    fn drop_slot(&mut self, t: u64) {
        if let Some(ids) = self.wheel.remove(&t) {
            for id in ids {
                self.examined += 1;
                // The id may have been recorded again since with a later expiry.
                if self.entries.get(&id) == Some(&t) {
                    self.entries.remove(&id);
                }
            }
        }
    }
}

impl MemoryReplayCache {
    /// A cache holding at most about `capacity` unexpired entries.
    pub fn new(capacity: usize) -> Self {
        MemoryReplayCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            keys: (RandomState::new(), RandomState::new()),
        }
    }

    fn fingerprint(&self, id: &str) -> Fingerprint {
        (u128::from(self.keys.0.hash_one(id)) << 64) | u128::from(self.keys.1.hash_one(id))
    }

    /// Entries currently held (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |m| m.entries.len()))
            .sum()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[cfg(test)]
    fn shard_index(&self, id: &str) -> usize {
        shard_of(self.fingerprint(id))
    }

    /// Entries and wheel slots examined so far, all shards together.
    #[cfg(test)]
    fn examined(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |m| m.examined))
            .sum()
    }
}

/// The shard of a fingerprint: its top bits (the bucket within the shard
/// comes from all of them).
fn shard_of(fp: Fingerprint) -> usize {
    (fp >> 124) as usize % SHARDS
}

impl Default for MemoryReplayCache {
    fn default() -> Self {
        MemoryReplayCache::new(1 << 20)
    }
}

impl ReplayStore for MemoryReplayCache {
    fn check_and_record(&self, id: &str, expires_at: u64, now: u64) -> Result<(), VerifyError> {
        let fp = self.fingerprint(id);
        let mut shard = self.shards[shard_of(fp)].lock().map_err(|_| {
            err(
                ErrorKind::ReplayStoreUnavailable,
                "replay cache lock poisoned",
            )
        })?;
        shard.sweep(now);
        let known = match shard.entries.get(&fp) {
            Some(&exp) if exp >= now => {
                return Err(err(
                    ErrorKind::Replay,
                    "this proof was already used; send a fresh one",
                ))
            }
            Some(_) => true,
            None => false,
        };
        if expires_at < now {
            // Already expired: nothing to remember.
            return Ok(());
        }
        if !known && shard.entries.len() >= self.per_shard {
            return Err(err(
                ErrorKind::ReplayStoreUnavailable,
                "the replay cache is full of unexpired proofs; refusing rather than forgetting",
            ));
        }
        shard.entries.insert(fp, expires_at);
        shard.wheel.entry(expires_at).or_default().push(fp);
        Ok(())
    }
}

impl AsyncReplayStore for MemoryReplayCache {
    /// The same check as the blocking [`ReplayStore`] implementation (one
    /// short lock, no I/O), with the same errors.
    fn check_and_record_async<'a>(
        &'a self,
        id: &'a str,
        expires_at: u64,
        now: u64,
    ) -> ReplayFuture<'a> {
        let r = ReplayStore::check_and_record(self, id, expires_at, now);
        Box::pin(std::future::ready(r))
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
        // Still unexpired at its expiry second.
        assert_eq!(
            c.check_and_record("a", 100, 100).unwrap_err().kind(),
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

    /// The regression: a cache full of expired entries must take new ones,
    /// and inserting must not scan the shard (the work per insert stays
    /// constant however full the cache is).
    #[test]
    fn expired_entries_never_block_and_inserts_do_not_scan() {
        let n = 20_000;
        let c = MemoryReplayCache::new(n);
        let mut accepted = 0;
        for i in 0..n * 2 {
            if c.check_and_record(&format!("old{i}"), 1_000 + (i % 300) as u64, 700)
                .is_ok()
            {
                accepted += 1;
            }
        }
        assert!(accepted >= n * 9 / 10, "{accepted}");
        let before = c.examined();
        // Everything above has expired at 2_000: new ids fit again (half the
        // capacity, so no shard overflows by chance).
        for i in 0..n / 2 {
            c.check_and_record(&format!("new{i}"), 2_300, 2_000)
                .unwrap();
        }
        // One sweep per shard freed the old entries (each examined once,
        // plus the slots), and the inserts themselves examined nothing.
        let swept = c.examined() - before;
        assert!(
            swept <= (accepted + SHARDS * 300 + SHARDS) as u64,
            "{swept} examined for {accepted} entries"
        );
        let before = c.examined();
        for i in 0..n / 2 {
            let _ = c.check_and_record(&format!("more{i}"), 2_300, 2_000);
        }
        assert_eq!(
            c.examined(),
            before,
            "inserts at the same second scan nothing"
        );
    }

    #[test]
    fn shard_choice_is_keyed_per_cache() {
        // Two caches spread the same ids differently: the shard index is
        // not a function an outsider can compute.
        let a = MemoryReplayCache::new(1000);
        let b = MemoryReplayCache::new(1000);
        let differ = (0..64)
            .filter(|i| {
                let id = format!("jti-{i}");
                a.shard_index(&id) != b.shard_index(&id)
            })
            .count();
        assert!(differ > 16, "{differ} of 64 ids moved");
    }
}
