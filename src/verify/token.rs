//! Access-token validation, pluggable: the proof verifiers need the token's
//! claims (its `cnf`) and, usually, assurance that the token is genuine.

use serde_json::{Map, Value};

use super::jose::Jws;
use super::{err, ErrorKind, VerifyError};
use crate::alg::Algorithm;
use crate::jwk::PublicJwk;

/// Validates an access token and returns its claims.
///
/// Implement it for opaque tokens (introspection) or your own JWT library;
/// popkey provides [`JwksValidator`] for JWT access tokens and [`DecodeOnly`]
/// for tokens an upstream component has already validated.
pub trait AccessTokenValidator: Send + Sync {
    /// Checks `token` at time `now` (Unix seconds); returns its claims.
    /// Failures should use [`ErrorKind::InvalidAccessToken`].
    fn validate(&self, token: &str, now: u64) -> Result<Map<String, Value>, VerifyError>;

    /// [`AccessTokenValidator::validate`] for a token whose SHA-256 the
    /// caller already computed (the DPoP verifier does, for `ath`), so a
    /// validator that remembers tokens by that hash need not compute it
    /// again. The default ignores the hash.
    fn validate_hashed(
        &self,
        token: &HashedToken<'_>,
        now: u64,
    ) -> Result<Map<String, Value>, VerifyError> {
        self.validate(token.token(), now)
    }

    /// Whether [`AccessTokenValidator::validate`] checks the token's
    /// signature. Reported next to every verification result, so nobody
    /// mistakes a decoded token for a validated one.
    fn checks_signature(&self) -> bool {
        true
    }
}

/// An access token with its SHA-256, computed at most once, on first use
/// (a DPoP proof's `ath` and a validator's cache share it), and only from
/// the token itself, so the two always belong together.
#[derive(Clone)]
pub struct HashedToken<'a> {
    token: &'a str,
    sha256: std::sync::OnceLock<[u8; 32]>,
}

impl<'a> HashedToken<'a> {
    /// Wraps `token`; the hash is computed when first asked for.
    pub fn new(token: &'a str) -> Self {
        HashedToken {
            token,
            sha256: std::sync::OnceLock::new(),
        }
    }

    /// The token.
    pub fn token(&self) -> &'a str {
        self.token
    }

    /// Its SHA-256.
    pub fn sha256(&self) -> &[u8; 32] {
        self.sha256
            .get_or_init(|| crate::crypto::sha256(self.token.as_bytes()))
    }
}

impl std::fmt::Debug for HashedToken<'_> {
    /// The token is a credential: only its length is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashedToken")
            .field("len", &self.token.len())
            .finish_non_exhaustive()
    }
}

/// Decodes a JWT access token's claims WITHOUT checking its signature,
/// issuer or audience. Use it only behind a gateway that already validated
/// the token, or in tools (the CLI's `verify` without `--jwks`).
#[derive(Debug, Default, Clone, Copy)]
pub struct DecodeOnly;

impl AccessTokenValidator for DecodeOnly {
    fn validate(&self, token: &str, _now: u64) -> Result<Map<String, Value>, VerifyError> {
        decode_claims(token)
    }

    /// Decoding is a pure function of the token, so recently decoded
    /// tokens' claims are reused (a small process-wide memo that compares
    /// whole tokens; failures are never kept).
    fn validate_hashed(
        &self,
        token: &HashedToken<'_>,
        _now: u64,
    ) -> Result<Map<String, Value>, VerifyError> {
        decoded::get_or_decode(token.token())
    }

    fn checks_signature(&self) -> bool {
        false
    }
}

/// Recently decoded tokens for [`DecodeOnly`], bounded in count and size.
///
/// Entries are found by the token's length and last 32 bytes (its
/// signature's end, as good as random for a real token) and used only when
/// the whole token is equal, so no hash of the token is needed; a made-up
/// token that shares a real one's tail merely replaces its entry. The
/// tokens kept are ones this process was just sent.
mod decoded {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    use serde_json::{Map, Value};

    use super::{decode_claims, VerifyError};

    /// Tokens kept at most; longer tokens are decoded every time.
    const MAX_TOKENS: usize = 128;
    const MAX_TOKEN_LEN: usize = 8 * 1024;
    const TAIL: usize = 32;

    type Key = (usize, [u8; TAIL]);
    type Memo = Mutex<HashMap<Key, (Box<str>, Map<String, Value>)>>;

    fn memo() -> &'static Memo {
        static MEMO: OnceLock<Memo> = OnceLock::new();
        MEMO.get_or_init(Memo::default)
    }

    fn key(token: &str) -> Key {
        let bytes = token.as_bytes();
        let tail = &bytes[bytes.len().saturating_sub(TAIL)..];
        let mut k = [0u8; TAIL];
        k[..tail.len()].copy_from_slice(tail);
        (bytes.len(), k)
    }

    pub(super) fn get_or_decode(token: &str) -> Result<Map<String, Value>, VerifyError> {
        if token.len() > MAX_TOKEN_LEN {
            return decode_claims(token);
        }
        let key = key(token);
        if let Some(claims) = memo().lock().ok().and_then(|m| {
            m.get(&key)
                .filter(|(kept, _)| **kept == *token)
                .map(|(_, claims)| claims.clone())
        }) {
            return Ok(claims);
        }
        let claims = decode_claims(token)?;
        if let Ok(mut m) = memo().lock() {
            if m.len() >= MAX_TOKENS {
                m.clear();
            }
            m.insert(key, (token.into(), claims.clone()));
        }
        Ok(claims)
    }
}

/// A JWT's payload claims, unverified.
fn decode_claims(token: &str) -> Result<Map<String, Value>, VerifyError> {
    let bad = |m: String| err(ErrorKind::InvalidAccessToken, format!("access token: {m}"));
    if token.len() > super::jose::MAX_JWS_LEN {
        return Err(bad("too large".into()));
    }
    // The payload lies between the first and the last dot; a dot inside it
    // fails its base64 decoding and is reported as the wrong shape.
    let shape = || bad("not a JWT (three dot-separated parts)".into());
    let payload = match super::jose::outer_dots(token) {
        Some((first, last)) => &token[first + 1..last],
        _ => return Err(shape()),
    };
    let mut bytes = crate::b64::scratch::Scratch::take();
    crate::b64::decode_into(payload, &mut bytes).map_err(|e| {
        if payload.contains('.') {
            shape()
        } else {
            bad(e)
        }
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("payload is not UTF-8".into()))?;
    crate::json::parse_object(text).map_err(bad)
}

/// Validates JWT access tokens against a JWKS: signature by one of its keys
/// (ES256, RS256, PS256), `exp` (required), `nbf`, and optionally `iss` and
/// `aud`.
///
/// Set both [`JwksValidator::issuer`] and [`JwksValidator::audience`] in
/// production: a JWKS shared by many tenants or APIs (Entra ID's is) signs
/// tokens meant for others, and without them such a token — bound to its
/// holder's own key — would be accepted here.
///
/// ```
/// use popkey::verify::token::JwksValidator;
/// let jwks = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1",
///   "x":"l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
///   "y":"9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA"}]}"#;
/// let v = JwksValidator::from_jwks(jwks)?
///     .issuer("https://login.example.com/tenant/v2.0")
///     .audience("api://orders");
/// # let _ = v;
/// # Ok::<(), popkey::Error>(())
/// ```
///
/// A token that passes is remembered (by its SHA-256, with its claims and
/// times) so that the same token presented with the next proof is not
/// verified again: a client sends one access token with many proofs, and
/// the proof's signature is the per-request check. On every reuse `exp`
/// and `nbf` are checked again against the current time; the signature,
/// `iss` and `aud` were checked when the token was first accepted, under
/// this validator's keys and settings (changing the settings with a
/// builder method starts an empty cache). Failures are never remembered.
/// The cache holds at most [`JwksValidator::token_cache`] tokens (default
/// 1024); a `server::Issuer` starts a new one whenever it
/// fetches the issuer's keys again.
#[derive(Debug, Clone)]
pub struct JwksValidator {
    keys: Vec<JwksKey>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
    accepted: std::sync::Arc<AcceptedTokens>,
}

/// Default number of accepted tokens a [`JwksValidator`] remembers.
const DEFAULT_TOKEN_CACHE: usize = 1024;

/// What an accepted token needs checked again on reuse.
struct Accepted {
    claims: Map<String, Value>,
    exp: u64,
    nbf: Option<u64>,
}

/// Tokens a [`JwksValidator`] accepted, by SHA-256 of the token.
struct AcceptedTokens {
    capacity: usize,
    tokens: std::sync::RwLock<std::collections::HashMap<[u8; 32], Accepted>>,
}

impl AcceptedTokens {
    fn new(capacity: usize) -> Self {
        AcceptedTokens {
            capacity,
            tokens: std::sync::RwLock::new(std::collections::HashMap::new()),
        }
    }

    fn len(&self) -> usize {
        self.tokens.read().map_or(0, |t| t.len())
    }

    /// The remembered token's claims and times, if any (a poisoned lock
    /// reads as empty: the token is then validated in full).
    fn get(&self, digest: &[u8; 32]) -> Option<(Map<String, Value>, u64, Option<u64>)> {
        let tokens = self.tokens.read().ok()?;
        tokens.get(digest).map(|a| (a.claims.clone(), a.exp, a.nbf))
    }

    /// Remembers an accepted token. When full, forgets the tokens that
    /// expired (with `leeway`) and, if that is not enough, all of them.
    fn insert(&self, digest: [u8; 32], accepted: Accepted, now: u64, leeway: u64) {
        let Ok(mut tokens) = self.tokens.write() else {
            return;
        };
        if tokens.len() >= self.capacity {
            tokens.retain(|_, a| now <= a.exp.saturating_add(leeway));
            if tokens.len() >= self.capacity {
                tokens.clear();
            }
        }
        tokens.insert(digest, accepted);
    }
}

impl std::fmt::Debug for AcceptedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcceptedTokens")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

#[derive(Debug, Clone)]
struct JwksKey {
    kid: Option<String>,
    /// The JWK's `alg` as written: when present, the key verifies that
    /// algorithm and no other (an `alg` popkey does not support makes the
    /// key unusable, never unrestricted).
    alg: Option<String>,
    key: PublicJwk,
}

impl JwksValidator {
    /// Reads a JWKS document (`{"keys":[…]}`); keys of unsupported types or
    /// with `use` other than `sig` are skipped, and at least one must remain.
    pub fn from_jwks(json: &str) -> crate::Result<Self> {
        let doc = crate::json::parse_object(json).map_err(crate::Error::InvalidJwk)?;
        let Some(Value::Array(list)) = doc.get("keys") else {
            return Err(crate::Error::InvalidJwk(
                "a JWKS needs a `keys` array".into(),
            ));
        };
        let keys: Vec<JwksKey> = list
            .iter()
            .filter_map(|k| {
                let key = PublicJwk::from_json_value(k).ok()?;
                Some(JwksKey {
                    kid: k.get("kid").and_then(Value::as_str).map(str::to_owned),
                    alg: match k.get("alg") {
                        None => None,
                        Some(Value::String(a)) => Some(a.clone()),
                        // A non-string `alg` restricts the key to nothing.
                        Some(_) => Some(String::new()),
                    },
                    key,
                })
            })
            .collect();
        if keys.is_empty() {
            return Err(crate::Error::InvalidJwk(
                "the JWKS has no usable EC P-256 or RSA signing key".into(),
            ));
        }
        Ok(JwksValidator {
            keys,
            issuer: None,
            audience: None,
            leeway: 60,
            accepted: std::sync::Arc::new(AcceptedTokens::new(DEFAULT_TOKEN_CACHE)),
        })
    }

    /// Requires `iss` to equal `issuer`.
    pub fn issuer(mut self, issuer: &str) -> Self {
        self.issuer = Some(issuer.to_owned());
        self.fresh_cache(None)
    }

    /// Requires `aud` to be (or contain) `audience`.
    pub fn audience(mut self, audience: &str) -> Self {
        self.audience = Some(audience.to_owned());
        self.fresh_cache(None)
    }

    /// Clock leeway for `exp` / `nbf`, in seconds (default 60).
    pub fn leeway(mut self, secs: u64) -> Self {
        self.leeway = secs;
        self.fresh_cache(None)
    }

    /// How many accepted tokens to remember (default 1024; `0` verifies
    /// every token in full every time). See the type's documentation.
    pub fn token_cache(self, capacity: usize) -> Self {
        self.fresh_cache(Some(capacity))
    }

    /// How many accepted tokens are remembered now.
    pub fn cached_tokens(&self) -> usize {
        self.accepted.len()
    }

    /// An empty cache: remembered tokens were accepted under the old
    /// settings (a clone shares its original's cache until then).
    fn fresh_cache(mut self, capacity: Option<usize>) -> Self {
        let capacity = capacity.unwrap_or(self.accepted.capacity);
        self.accepted = std::sync::Arc::new(AcceptedTokens::new(capacity));
        self
    }

    /// `exp` (required) and `nbf` (optional) against `now`, with leeway.
    fn check_times(&self, exp: u64, nbf: Option<u64>, now: u64) -> Result<(), VerifyError> {
        let bad = |m: String| err(ErrorKind::InvalidAccessToken, m);
        if now > exp.saturating_add(self.leeway) {
            return Err(bad(format!("the access token expired {} s ago", now - exp)));
        }
        if nbf.is_some_and(|nbf| nbf > now.saturating_add(self.leeway)) {
            return Err(bad("the access token is not valid yet (nbf)".into()));
        }
        Ok(())
    }
}

impl AccessTokenValidator for JwksValidator {
    fn validate(&self, token: &str, now: u64) -> Result<Map<String, Value>, VerifyError> {
        // Oversized tokens are refused by the parser, unhashed.
        let digest = (self.accepted.capacity > 0 && token.len() <= super::jose::MAX_JWS_LEN)
            .then(|| crate::crypto::sha256(token.as_bytes()));
        self.validate_with(token, digest, now)
    }

    fn validate_hashed(
        &self,
        token: &HashedToken<'_>,
        now: u64,
    ) -> Result<Map<String, Value>, VerifyError> {
        let digest = (self.accepted.capacity > 0).then(|| *token.sha256());
        self.validate_with(token.token(), digest, now)
    }
}

impl JwksValidator {
    /// Validates `token`; `digest` (its SHA-256) when the cache is on.
    fn validate_with(
        &self,
        token: &str,
        digest: Option<[u8; 32]>,
        now: u64,
    ) -> Result<Map<String, Value>, VerifyError> {
        let bad = |m: String| err(ErrorKind::InvalidAccessToken, m);
        if let Some((claims, exp, nbf)) = digest.as_ref().and_then(|d| self.accepted.get(d)) {
            self.check_times(exp, nbf, now)?;
            return Ok(claims);
        }
        let jws = Jws::parse(token, &Algorithm::ALL)
            .map_err(|e| bad(format!("access token: {}", e.message())))?;
        let kid = jws.header.get("kid").and_then(Value::as_str);
        let candidates: Vec<&JwksKey> = self
            .keys
            .iter()
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
            .filter(|k| {
                k.key.fits(jws.alg) && k.alg.as_deref().is_none_or(|a| a == jws.alg.as_str())
            })
            .collect();
        if candidates.is_empty() {
            return Err(bad(format!(
                "no key in the JWKS matches the token's kid {:?} and alg {}",
                kid.unwrap_or("(none)"),
                jws.alg
            )));
        }
        if !candidates
            .iter()
            .any(|k| jws.verify_signature(&k.key).is_ok())
        {
            return Err(bad(
                "the access token's signature does not verify with the JWKS".into(),
            ));
        }
        let exp = jws
            .numeric_date_claim("exp", false)
            .map_err(|e| bad(format!("access token: {}", e.message())))?;
        let nbf = if jws.claims.contains_key("nbf") {
            Some(
                jws.numeric_date_claim("nbf", true)
                    .map_err(|e| bad(format!("access token: {}", e.message())))?,
            )
        } else {
            None
        };
        self.check_times(exp, nbf, now)?;
        if let Some(iss) = &self.issuer {
            if jws.claims.get("iss").and_then(Value::as_str) != Some(iss) {
                return Err(bad(
                    "the access token's issuer is not the expected one".into()
                ));
            }
        }
        if let Some(aud) = &self.audience {
            let ok = match jws.claims.get("aud") {
                Some(Value::String(a)) => a == aud,
                Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(aud)),
                _ => false,
            };
            if !ok {
                return Err(bad("the access token's audience is not this API".into()));
            }
        }
        if let Some(digest) = digest {
            let accepted = Accepted {
                claims: jws.claims.clone(),
                exp,
                nbf,
            };
            self.accepted.insert(digest, accepted, now, self.leeway);
        }
        Ok(jws.claims)
    }
}

/// How an access token names its key.
#[derive(Clone, Copy)]
pub(crate) enum Binding {
    /// DPoP (RFC 9449 §6): `cnf.jkt` only.
    Dpop,
    /// PoP/SHR: `cnf.kid` (MSAL), `cnf.jkt` or `cnf.jwk`.
    Pop,
}

/// Checks that the token's `cnf` names `thumbprint` in a form `binding`
/// accepts, so a token bound for one scheme is not taken for the other.
pub(crate) fn check_binding(
    claims: &Map<String, Value>,
    thumbprint: &str,
    binding: Binding,
) -> Result<(), VerifyError> {
    let unbound = |m: &str| err(ErrorKind::KeyNotBound, m.to_owned());
    let Some(Value::Object(cnf)) = claims.get("cnf") else {
        return Err(unbound(
            "the access token has no `cnf` claim: it is not bound to a key",
        ));
    };
    let named = if let Some(v) = cnf.get("jkt") {
        v.as_str().map(str::to_owned)
    } else if matches!(binding, Binding::Dpop) {
        None
    } else if let Some(v) = cnf.get("kid") {
        v.as_str().map(str::to_owned)
    } else if let Some(jwk) = cnf.get("jwk") {
        PublicJwk::from_json_value(jwk)
            .ok()
            .map(|k| k.thumbprint().to_owned())
    } else {
        None
    };
    match named {
        Some(t) if t == thumbprint => Ok(()),
        Some(_) => Err(unbound(
            "the access token is bound to a different key than the one that signed the proof",
        )),
        None => Err(unbound(match binding {
            Binding::Dpop => "the access token's `cnf` has no `jkt`: it is not a DPoP-bound token",
            Binding::Pop => "the access token's `cnf` has no usable jkt, kid or jwk",
        })),
    }
}

/// Checks that an access token's claims (from a JWT or an introspection
/// answer) bind it to the TLS client certificate `cert_der` (RFC 8705 §3:
/// `cnf.x5t#S256` is the base64url SHA-256 of the DER certificate), for APIs
/// that take mTLS-bound tokens.
///
/// ```
/// use popkey::verify::token::check_certificate_binding;
/// let claims = serde_json::json!({"cnf": {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}});
/// assert!(check_certificate_binding(claims.as_object().unwrap(), b"not this certificate").is_err());
/// ```
pub fn check_certificate_binding(
    claims: &Map<String, Value>,
    cert_der: &[u8],
) -> Result<(), VerifyError> {
    check_thumbprint_binding(claims, &certificate_thumbprint(cert_der))
}

/// The token's `cnf.x5t#S256`, or `KeyNotBound` when it has none.
pub(crate) fn bound_certificate_thumbprint(
    claims: &Map<String, Value>,
) -> Result<&str, VerifyError> {
    claims
        .get("cnf")
        .and_then(Value::as_object)
        .and_then(|c| c.get("x5t#S256"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            err(
                ErrorKind::KeyNotBound,
                "the access token's `cnf` has no `x5t#S256`: it is not bound to a certificate",
            )
        })
}

/// Compares (constant-time) the token's `cnf.x5t#S256` with `actual`, the
/// client certificate's thumbprint. One check for `check_certificate_binding`
/// and `verify::mtls`.
pub(crate) fn check_thumbprint_binding(
    claims: &Map<String, Value>,
    actual: &str,
) -> Result<(), VerifyError> {
    let named = bound_certificate_thumbprint(claims)?;
    if crate::crypto::constant_time_eq(named.as_bytes(), actual.as_bytes()) {
        Ok(())
    } else {
        Err(err(
            ErrorKind::KeyNotBound,
            format!(
                "the access token is bound to another certificate than the client's (client certificate x5t#S256 {actual})"
            ),
        ))
    }
}

/// base64url(SHA-256(DER certificate)).
pub(crate) fn certificate_thumbprint(cert_der: &[u8]) -> String {
    crate::b64::encode(crate::crypto::sha256(cert_der))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PopCryptoProvider;

    /// A JWKS with `authority`'s key as `as`, and an ES256 JWT it signed.
    fn jwks_and_token(authority: &crate::PopKey, claims: Value) -> (String, String) {
        let mut jwk: Value = serde_json::from_str(authority.canonical_public_key_jwk()).unwrap();
        jwk["kid"] = "as".into();
        let input = format!(
            "{}.{}",
            crate::b64::encode(br#"{"alg":"ES256","kid":"as"}"#),
            crate::b64::encode(claims.to_string().as_bytes())
        );
        let sig = authority.sign(input.as_bytes()).unwrap();
        (
            serde_json::json!({"keys": [jwk]}).to_string(),
            format!("{input}.{}", crate::b64::encode(sig)),
        )
    }

    #[test]
    fn accepted_tokens_are_remembered_and_rechecked() {
        let authority = crate::PopKey::open("mem:").unwrap();
        let claims = serde_json::json!({"iss": "https://as", "aud": "api", "exp": 1_000, "nbf": 500, "sub": "s"});
        let (jwks, token) = jwks_and_token(&authority, claims);
        let v = JwksValidator::from_jwks(&jwks)
            .unwrap()
            .issuer("https://as")
            .audience("api")
            .leeway(0);
        // Not valid yet: refused and not remembered.
        assert!(v.validate(&token, 400).is_err());
        assert_eq!(v.cached_tokens(), 0);
        let first = v.validate(&token, 600).unwrap();
        assert_eq!(v.cached_tokens(), 1);
        // Reused: the same claims; times are checked again each time.
        assert_eq!(v.validate(&token, 700).unwrap(), first);
        let before = v.validate(&token, 499).unwrap_err();
        assert_eq!(before.kind(), ErrorKind::InvalidAccessToken);
        assert!(before.message().contains("not valid yet"));
        let expired = v.validate(&token, 1_001).unwrap_err();
        assert_eq!(expired.message(), "the access token expired 1 s ago");
        // Another signature over the same claims is not the remembered token.
        let (head, sig) = token.rsplit_once('.').unwrap();
        let mut bytes = crate::b64::decode(sig).unwrap();
        bytes[40] ^= 1;
        let forged = format!("{head}.{}", crate::b64::encode(bytes));
        assert!(v
            .validate(&forged, 700)
            .unwrap_err()
            .message()
            .contains("signature does not verify"));
        assert_eq!(v.cached_tokens(), 1);
    }

    #[test]
    fn other_settings_do_not_inherit_accepted_tokens() {
        let authority = crate::PopKey::open("mem:").unwrap();
        let claims = serde_json::json!({"iss": "https://as", "aud": "api", "exp": u32::MAX});
        let (jwks, token) = jwks_and_token(&authority, claims);
        let v = JwksValidator::from_jwks(&jwks).unwrap().audience("api");
        v.validate(&token, 100).unwrap();
        assert_eq!(v.cached_tokens(), 1);
        // A clone set up for another API starts empty and refuses the token.
        let other = v.clone().audience("other-api");
        assert_eq!(other.cached_tokens(), 0);
        assert!(other
            .validate(&token, 100)
            .unwrap_err()
            .message()
            .contains("audience"));
        let other = v.clone().issuer("https://elsewhere");
        assert!(other.validate(&token, 100).is_err());
        // Off: nothing is remembered.
        let off = v.clone().token_cache(0);
        off.validate(&token, 100).unwrap();
        assert_eq!(off.cached_tokens(), 0);
    }

    #[test]
    fn hashed_tokens_give_the_same_answers() {
        let authority = crate::PopKey::open("mem:").unwrap();
        let (jwks, token) = jwks_and_token(
            &authority,
            serde_json::json!({"exp": 1_000, "sub": "hashed"}),
        );
        // DecodeOnly: the memo answers as decoding does, every time.
        let plain = DecodeOnly.validate(&token, 0).unwrap();
        for _ in 0..2 {
            assert_eq!(
                DecodeOnly
                    .validate_hashed(&HashedToken::new(&token), 0)
                    .unwrap(),
                plain
            );
        }
        for bad in ["a.b", "a.!!!.c", "a.b.c.d", "e30.e30"] {
            let want = DecodeOnly.validate(bad, 0).unwrap_err();
            for _ in 0..2 {
                assert_eq!(
                    DecodeOnly
                        .validate_hashed(&HashedToken::new(bad), 0)
                        .unwrap_err(),
                    want
                );
            }
        }
        // JwksValidator: the hash the verifier computed keys the cache.
        let v = JwksValidator::from_jwks(&jwks).unwrap();
        let hashed = HashedToken::new(&token);
        assert_eq!(v.validate_hashed(&hashed, 100).unwrap(), plain);
        assert_eq!(v.cached_tokens(), 1);
        assert_eq!(v.validate(&token, 100).unwrap(), plain);
        assert_eq!(v.cached_tokens(), 1);
        assert_eq!(
            v.validate_hashed(&hashed, 2_000).unwrap_err().kind(),
            ErrorKind::InvalidAccessToken
        );
        assert!(!format!("{hashed:?}").contains(&token[..20]));
    }

    #[test]
    fn the_token_cache_is_bounded() {
        let authority = crate::PopKey::open("mem:").unwrap();
        let (jwks, _) = jwks_and_token(&authority, serde_json::json!({}));
        let v = JwksValidator::from_jwks(&jwks)
            .unwrap()
            .leeway(0)
            .token_cache(3);
        let token = |n: u32, exp: u64| {
            jwks_and_token(&authority, serde_json::json!({"exp": exp, "n": n})).1
        };
        for (n, exp) in [(0, 150), (1, 10_000), (2, 10_000)] {
            v.validate(&token(n, exp), 100).unwrap();
        }
        assert_eq!(v.cached_tokens(), 3);
        // Full: the token that expired by now is forgotten first…
        v.validate(&token(3, 10_000), 200).unwrap();
        assert_eq!(v.cached_tokens(), 3);
        // …and when none has expired, all are.
        v.validate(&token(4, 10_000), 200).unwrap();
        assert_eq!(v.cached_tokens(), 1);
    }

    #[test]
    fn certificate_binding() {
        let cert = b"a DER certificate";
        let t = certificate_thumbprint(cert);
        let claims = |v: Value| v.as_object().unwrap().clone();
        check_certificate_binding(&claims(serde_json::json!({"cnf": {"x5t#S256": t}})), cert)
            .unwrap();
        for bad in [
            serde_json::json!({"cnf": {"x5t#S256": "other"}}),
            serde_json::json!({"cnf": {"jkt": t}}),
            serde_json::json!({}),
        ] {
            assert_eq!(
                check_certificate_binding(&claims(bad), cert)
                    .unwrap_err()
                    .kind(),
                ErrorKind::KeyNotBound
            );
        }
    }
}
