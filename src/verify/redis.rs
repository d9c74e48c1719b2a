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
//!   thumbprint ‖ `jti`, or ‖ the SHA-256 of the SHR's signing input)): 43
//!   characters the client cannot choose. Keys never hold attacker-chosen
//!   bytes. (Earlier builds derived SHR ids from the SHR payload; a fleet
//!   mixing both does not see the other's SHRs during a rolling upgrade.)
//! * The TTL is the proof's remaining acceptance window (`iat`/`ts` +
//!   max age + clock skew − now), so Redis holds about one key per proof
//!   accepted in the last window.
//! * Each call has a timeout (default 250 ms). On a timeout, a lost
//!   connection or any other error the verification **fails closed** with
//!   [`ErrorKind::ReplayStoreUnavailable`] (answer 503): a proof is never
//!   accepted without being recorded. The connection manager reconnects in
//!   the background, so the same store works again once Redis is back.
//! * Single-key commands only, so it works with **Redis Cluster**
//!   ([`RedisReplayStore::cluster`]): each key lives in one hash slot, on
//!   one master, and `SET NX` there is as atomic as on a single server. The
//!   cluster client follows `MOVED`/`ASK` redirections and refreshes its
//!   slot map; a master that is down fails closed for the keys it owns.

use std::path::Path;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

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
/// output or error messages. [`RedisReplayStore::cluster`] connects to a
/// Redis (or Valkey) Cluster instead of one server.
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
    backend: Backend,
    prefix: String,
    timeout: Duration,
    /// Where it connects, without credentials (for Debug).
    shown: String,
}

/// One server, or the seed nodes of a cluster.
enum Backend {
    Single {
        client: redis::Client,
        manager: tokio::sync::OnceCell<ConnectionManager>,
    },
    Cluster {
        /// The seed nodes (all with the same credentials and TLS mode).
        nodes: Vec<ConnectionInfo>,
        connection: tokio::sync::OnceCell<ClusterConnection>,
    },
}

fn unavailable(message: impl Into<String>) -> VerifyError {
    err(ErrorKind::ReplayStoreUnavailable, message)
}

/// Parses a URL without ever echoing it (it may hold a password).
fn parse_url(url: &str) -> Result<ConnectionInfo, VerifyError> {
    url.into_connection_info()
        .map_err(|e| unavailable(format!("the replay store URL is unusable ({:?})", e.kind())))
}

fn cluster_builder(nodes: &[ConnectionInfo]) -> ClusterClientBuilder {
    ClusterClientBuilder::new(nodes.to_vec())
}

impl RedisReplayStore {
    /// A store at `url` (see the type documentation), with the default
    /// prefix and timeout. Fails only on an unusable URL.
    pub fn new(url: &str) -> Result<Self, VerifyError> {
        Self::from_info(parse_url(url)?)
    }

    /// A store in a Redis Cluster (or Valkey cluster), reached through
    /// `seed_urls`: one or more of its nodes, `redis://[user:password@]host:port`
    /// or `rediss://…` (TLS), all with the same credentials and scheme. The
    /// client learns the whole cluster from any seed that answers, sends
    /// each key to the master owning its hash slot, and follows `MOVED` and
    /// `ASK` redirections. A cluster has one database: a URL naming another
    /// than `/0` is refused, and so are `unix://` URLs (cluster nodes are
    /// announced by IP and port).
    ///
    /// The masters must be reachable at the addresses they announce
    /// (`cluster-announce-ip`/`-hostname`); with `rediss://` the certificate
    /// must name those addresses.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), popkey::verify::VerifyError> {
    /// use popkey::verify::redis::RedisReplayStore;
    /// let store = RedisReplayStore::cluster(&[
    ///     "redis://10.0.0.1:6379",
    ///     "redis://10.0.0.2:6379",
    ///     "redis://10.0.0.3:6379",
    /// ])?
    /// .password_file("/run/secrets/redis-password")?;
    /// # Ok(()) }
    /// ```
    pub fn cluster<S: AsRef<str>>(seed_urls: &[S]) -> Result<Self, VerifyError> {
        let nodes = seed_urls
            .iter()
            .map(|u| parse_url(u.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_cluster_nodes(nodes)
    }

    fn from_cluster_nodes(nodes: Vec<ConnectionInfo>) -> Result<Self, VerifyError> {
        if nodes.is_empty() {
            return Err(unavailable(
                "a replay store cluster needs at least one node URL",
            ));
        }
        for n in &nodes {
            if matches!(n.addr, ConnectionAddr::Unix(_)) {
                return Err(unavailable(
                    "a replay store cluster is reached over TCP: unix:// URLs cannot name its nodes",
                ));
            }
            if n.redis.db != 0 {
                return Err(unavailable(
                    "a Redis Cluster has only database 0: leave the /db out of the cluster URLs",
                ));
            }
        }
        // One TLS mode and one set of credentials for every node (the
        // client would otherwise take the first node's for all).
        let first = &nodes[0];
        let tls_mode = |n: &ConnectionInfo| matches!(n.addr, ConnectionAddr::TcpTls { .. });
        if nodes.iter().any(|n| tls_mode(n) != tls_mode(first)) {
            return Err(unavailable(
                "the replay store cluster URLs mix redis:// and rediss://: use one scheme",
            ));
        }
        if nodes.iter().any(|n| {
            n.redis.username != first.redis.username || n.redis.password != first.redis.password
        }) {
            return Err(unavailable(
                "the replay store cluster URLs carry different credentials: use the same for every node",
            ));
        }
        // The checks the client makes when connecting, done now so a bad
        // list fails early.
        cluster_builder(&nodes).build().map_err(|e| {
            unavailable(format!(
                "the replay store cluster URLs are unusable ({:?}: {})",
                e.kind(),
                // The crate's message names the rule broken, never a secret.
                e.detail().unwrap_or("")
            ))
        })?;
        let shown = format!(
            "cluster {}",
            nodes
                .iter()
                .map(|n| n.addr.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(RedisReplayStore {
            backend: Backend::Cluster {
                nodes,
                connection: tokio::sync::OnceCell::new(),
            },
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            shown,
        })
    }

    fn from_info(info: ConnectionInfo) -> Result<Self, VerifyError> {
        let shown = format!("{} db {}", info.addr, info.redis.db);
        let client = redis::Client::open(info).map_err(|e| {
            unavailable(format!("the replay store URL is unusable ({:?})", e.kind()))
        })?;
        Ok(RedisReplayStore {
            backend: Backend::Single {
                client,
                manager: tokio::sync::OnceCell::new(),
            },
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            shown,
        })
    }

    /// Reads the password from `path` (one line; surrounding whitespace is
    /// dropped), replacing any in the URL(s). Call before the first use.
    pub fn password_file(self, path: impl AsRef<Path>) -> Result<Self, VerifyError> {
        let path = path.as_ref();
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            unavailable(format!(
                "cannot read the replay store password file {}: {e}",
                path.display()
            ))
        })?);
        let password = text.trim();
        let mut store = match &self.backend {
            Backend::Single { client, .. } => {
                let mut info = client.get_connection_info().clone();
                info.redis.password = Some(password.to_owned());
                Self::from_info(info)?
            }
            Backend::Cluster { nodes, .. } => {
                let mut nodes = nodes.clone();
                for n in &mut nodes {
                    n.redis.password = Some(password.to_owned());
                }
                Self::from_cluster_nodes(nodes)?
            }
        };
        store.prefix = self.prefix;
        store.timeout = self.timeout;
        Ok(store)
    }

    /// Prefixes every key with `prefix` (default `popkey:replay:`), to share
    /// one Redis between APIs or environments. In a cluster, keep `{` and
    /// `}` out of it: a hash tag would put every key in one slot.
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

    /// Whether this store talks to a Redis Cluster
    /// ([`RedisReplayStore::cluster`]) rather than one server.
    pub fn is_cluster(&self) -> bool {
        matches!(self.backend, Backend::Cluster { .. })
    }

    /// The Redis key a replay id is recorded under.
    pub fn key_for(&self, id: &str) -> String {
        format!("{}{}", self.prefix, id)
    }

    fn connect_error(&self, e: redis::RedisError) -> VerifyError {
        unavailable(format!(
            "cannot connect to the replay store at {} ({:?})",
            self.shown,
            e.kind()
        ))
    }

    /// `SET key 1 NX PX ttl_ms`: true when this call recorded it.
    async fn set_nx(&self, key: &str, ttl_ms: u64) -> Result<bool, VerifyError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(1).arg("NX").arg("PX").arg(ttl_ms);
        let answer: Result<Option<String>, redis::RedisError> = match &self.backend {
            Backend::Single { client, manager } => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(self.timeout)
                    .set_response_timeout(self.timeout)
                    .set_number_of_retries(1)
                    .set_factor(10)
                    .set_max_delay(100);
                let manager = manager
                    .get_or_try_init(|| ConnectionManager::new_with_config(client.clone(), config))
                    .await
                    .map_err(|e| self.connect_error(e))?;
                cmd.query_async(&mut manager.clone()).await
            }
            Backend::Cluster { nodes, connection } => {
                let connection = connection
                    .get_or_try_init(|| async {
                        cluster_builder(nodes)
                            .connection_timeout(self.timeout)
                            .response_timeout(self.timeout)
                            // Enough to follow a MOVED/ASK and refresh the
                            // slot map; the call's timeout bounds the rest.
                            .retries(3)
                            .min_retry_wait(10)
                            .max_retry_wait(100)
                            .build()?
                            .get_async_connection()
                            .await
                    })
                    .await
                    .map_err(|e| self.connect_error(e))?;
                cmd.query_async(&mut connection.clone()).await
            }
        };
        let answer = answer.map_err(|e| {
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

    #[test]
    fn cluster_urls_are_checked_and_never_shown() {
        let s = RedisReplayStore::cluster(&[
            "redis://:hunter2secret@127.0.0.1:7000",
            "redis://:hunter2secret@127.0.0.1:7001",
        ])
        .unwrap();
        assert!(s.is_cluster());
        let d = format!("{s:?}");
        assert!(!d.contains("hunter2secret"), "{d}");
        assert!(d.contains("127.0.0.1:7001"), "{d}");
        let kind = |urls: &[&str]| RedisReplayStore::cluster(urls).unwrap_err().kind();
        let none: &[&str] = &[];
        assert_eq!(kind(none), ErrorKind::ReplayStoreUnavailable);
        // One database, TCP only, one set of credentials, one scheme.
        for bad in [
            &["redis://127.0.0.1:7000/2"][..],
            &["unix:///tmp/x.sock"][..],
            &["redis://:a@127.0.0.1:7000", "redis://:b@127.0.0.1:7001"][..],
            &["redis://127.0.0.1:7000", "rediss://127.0.0.1:7001"][..],
        ] {
            let e = RedisReplayStore::cluster(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ReplayStoreUnavailable, "{bad:?}");
        }
        let e = RedisReplayStore::cluster(&[
            "redis://:x@127.0.0.1:7000",
            "redis://:hunter2secret@[::1/x",
        ])
        .unwrap_err();
        assert!(!e.to_string().contains("hunter2secret"));
    }

    #[tokio::test]
    async fn unreachable_cluster_fails_closed() {
        let s = RedisReplayStore::cluster(&["redis://127.0.0.1:1"]).unwrap();
        let e = s
            .check_and_record_async("dpop:x", 2_000, 1_000)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ReplayStoreUnavailable);
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
