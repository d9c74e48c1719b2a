//! Strict compact-JWS parsing and signature checking for received proofs.

use serde_json::{Map, Value};

use super::{err, ErrorKind, VerifyError};
use crate::alg::Algorithm;
use crate::b64::scratch::Scratch;
use crate::jwk::PublicJwk;

/// Largest compact JWS accepted (an SHR carries its access token).
pub(crate) const MAX_JWS_LEN: usize = 64 * 1024;

/// A compact JWS split and decoded, not yet verified.
///
/// `Debug` shows the header and the claims with an SHR's access token
/// (`at`) redacted, and only the lengths of the raw parts.
#[derive(Clone)]
pub struct ParsedJws {
    /// The protected header.
    pub header: Map<String, Value>,
    /// The payload, which must be a JSON object.
    pub claims: Map<String, Value>,
    /// The raw payload bytes (decoded), for content-addressed replay keys.
    pub payload_bytes: Vec<u8>,
    /// The algorithm named in the header, already checked against the
    /// allowed list.
    pub alg: Algorithm,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
}

impl std::fmt::Debug for ParsedJws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedJws")
            .field("header", &self.header)
            .field("claims", &redacted(&self.claims))
            .field("alg", &self.alg)
            .field("payload_len", &self.payload_bytes.len())
            .field("signature_len", &self.signature.len())
            .finish_non_exhaustive()
    }
}

/// Claims for `Debug` output: an SHR's access token (`at`, a credential)
/// replaced by its length.
pub(crate) fn redacted(claims: &Map<String, Value>) -> Map<String, Value> {
    let mut shown = claims.clone();
    if let Some(at) = shown.get_mut("at") {
        let len = at.as_str().map_or(0, str::len);
        *at = Value::String(format!("<access token, {len} bytes>"));
    }
    shown
}

impl ParsedJws {
    /// Splits and decodes `compact`, and checks `alg` against `allowed`.
    ///
    /// Rejects: more or fewer than three parts, empty parts, non-canonical
    /// base64url, headers or payloads that are not JSON objects, duplicate
    /// members, `alg` values outside `allowed` (never `none` or `HS*`), and
    /// any `crit` header (popkey understands no extensions).
    pub fn parse(compact: &str, allowed: &[Algorithm]) -> Result<Self, VerifyError> {
        let jws = Jws::parse(compact, allowed)?;
        Ok(ParsedJws {
            payload_bytes: jws.payload.to_vec(),
            signing_input: jws.signing_input.to_vec(),
            signature: jws.signature.to_vec(),
            header: jws.header,
            claims: jws.claims,
            alg: jws.alg,
        })
    }

    /// Verifies the signature over the parsed JWS's own signing input with `key`.
    pub fn verify_signature(&self, key: &PublicJwk) -> Result<(), VerifyError> {
        let digest = crate::crypto::sha256(&self.signing_input);
        verify_signature(self.alg, key, &digest, &self.signature)
    }

    /// A string claim, required.
    pub fn str_claim(&self, name: &str) -> Result<&str, VerifyError> {
        str_claim(&self.claims, name)
    }

    /// A string claim, optional (present with another type is an error).
    pub fn opt_str_claim(&self, name: &str) -> Result<Option<&str>, VerifyError> {
        opt_str_claim(&self.claims, name)
    }

    /// A non-negative integer claim (seconds), required. For SHR `ts`,
    /// which MSAL and Microsoft.IdentityModel write as an integer.
    pub fn time_claim(&self, name: &str) -> Result<u64, VerifyError> {
        time_claim(&self.claims, name)
    }
}

/// A compact JWS split and decoded for the verifiers, borrowing the compact
/// form (no copy of the signing input) and decoding the payload and
/// signature into this thread's reused buffers. The same checks, in the
/// same order and with the same messages, as [`ParsedJws::parse`], which is
/// built on it.
pub(crate) struct Jws<'a> {
    /// The protected header.
    pub(crate) header: Map<String, Value>,
    /// The payload, a JSON object.
    pub(crate) claims: Map<String, Value>,
    /// The raw payload bytes (decoded).
    pub(crate) payload: Scratch,
    /// The algorithm named in the header, checked against the allowed list.
    pub(crate) alg: Algorithm,
    signing_input: &'a [u8],
    /// SHA-256 of the signing input, computed once for every key tried
    /// and for replay ids.
    digest: std::cell::OnceCell<[u8; 32]>,
    signature: Scratch,
}

impl<'a> Jws<'a> {
    /// See [`ParsedJws::parse`].
    pub(crate) fn parse(compact: &'a str, allowed: &[Algorithm]) -> Result<Self, VerifyError> {
        if compact.len() > MAX_JWS_LEN {
            return Err(err(
                ErrorKind::Malformed,
                format!(
                    "the JWS is {} bytes; the limit is {MAX_JWS_LEN}",
                    compact.len()
                ),
            ));
        }
        // The header and the signature are short: find their dots from
        // either end instead of scanning the (long) payload; a dot inside
        // the payload fails its base64 decoding, and is reported as the
        // wrong number of parts.
        let not_compact = || {
            err(
                ErrorKind::Malformed,
                "not a compact JWS: expected three base64url parts separated by dots",
            )
        };
        let (h, p, s) = match outer_dots(compact) {
            Some((first, last)) => (
                &compact[..first],
                &compact[first + 1..last],
                &compact[last + 1..],
            ),
            _ => return Err(not_compact()),
        };
        let too_many_parts = || p.contains('.');
        if h.is_empty() || p.is_empty() || s.is_empty() {
            return Err(if too_many_parts() {
                not_compact()
            } else {
                err(ErrorKind::Malformed, "a JWS part is empty")
            });
        }
        let decode = |part: &str, what: &str, out: &mut Vec<u8>| {
            crate::b64::decode_into(part, out).map_err(|e| {
                if too_many_parts() {
                    not_compact()
                } else {
                    err(ErrorKind::Malformed, format!("{what}: {e}"))
                }
            })
        };
        let mut header_bytes = Scratch::take();
        let mut payload = Scratch::take();
        let mut signature = Scratch::take();
        decode(h, "header", &mut header_bytes)?;
        decode(p, "payload", &mut payload)?;
        decode(s, "signature", &mut signature)?;
        let header = object(&header_bytes, "header")?;
        drop(header_bytes);
        let claims = object(&payload, "payload")?;
        let alg = match header.get("alg") {
            Some(Value::String(a)) => a
                .parse::<Algorithm>()
                .ok()
                .filter(|a| allowed.contains(a))
                .ok_or_else(|| {
                    err(
                        ErrorKind::UnsupportedAlgorithm,
                        format!(
                            "alg `{}` is not allowed; allowed: {}",
                            a.chars().take(16).collect::<String>(),
                            allowed
                                .iter()
                                .map(|a| a.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })?,
            Some(_) => return Err(err(ErrorKind::Malformed, "header `alg` must be a string")),
            None => return Err(err(ErrorKind::Malformed, "header has no `alg`")),
        };
        if header.contains_key("crit") {
            return Err(err(
                ErrorKind::Malformed,
                "header has `crit` extensions, which popkey does not understand",
            ));
        }
        Ok(Jws {
            header,
            claims,
            payload,
            alg,
            signing_input: &compact.as_bytes()[..h.len() + 1 + p.len()],
            digest: std::cell::OnceCell::new(),
            signature,
        })
    }

    /// See [`ParsedJws::verify_signature`].
    pub(crate) fn verify_signature(&self, key: &PublicJwk) -> Result<(), VerifyError> {
        verify_signature(self.alg, key, self.signing_input_digest(), &self.signature)
    }

    /// SHA-256 of the signing input (`header.payload` as sent): what the
    /// signature signs, so it names a proof as exactly as its payload does.
    pub(crate) fn signing_input_digest(&self) -> &[u8; 32] {
        self.digest
            .get_or_init(|| crate::crypto::sha256(self.signing_input))
    }

    /// See [`ParsedJws::str_claim`].
    pub(crate) fn str_claim(&self, name: &str) -> Result<&str, VerifyError> {
        str_claim(&self.claims, name)
    }

    /// See [`ParsedJws::opt_str_claim`].
    pub(crate) fn opt_str_claim(&self, name: &str) -> Result<Option<&str>, VerifyError> {
        opt_str_claim(&self.claims, name)
    }

    /// See [`ParsedJws::time_claim`].
    pub(crate) fn time_claim(&self, name: &str) -> Result<u64, VerifyError> {
        time_claim(&self.claims, name)
    }

    /// An RFC 7519 §2 NumericDate claim (`iat`, `exp`, `nbf`), required:
    /// a finite, non-negative number of seconds, fractions allowed, no later
    /// than the year 9999. Returned as whole seconds, rounded down
    /// (`round_up` rounds up: use it for `nbf`, so a fraction never makes
    /// a token valid early).
    pub(crate) fn numeric_date_claim(
        &self,
        name: &str,
        round_up: bool,
    ) -> Result<u64, VerifyError> {
        match self.claims.get(name) {
            Some(Value::Number(n)) => numeric_date(n, round_up).ok_or_else(|| {
                err(
                    ErrorKind::MissingClaim,
                    format!(
                        "claim `{name}` must be a non-negative NumericDate (seconds) before the year 10000"
                    ),
                )
            }),
            Some(_) => Err(err(
                ErrorKind::MissingClaim,
                format!("claim `{name}` must be a number"),
            )),
            None => Err(err(
                ErrorKind::MissingClaim,
                format!("claim `{name}` is missing"),
            )),
        }
    }
}

/// The first and the last dot of a compact JWS, when they differ, searched
/// from either end: the header and the signature are short, so neither
/// search touches the (long) payload.
pub(crate) fn outer_dots(compact: &str) -> Option<(usize, usize)> {
    let bytes = compact.as_bytes();
    let first = memchr::memchr(b'.', bytes)?;
    let last = memchr::memrchr(b'.', bytes)?;
    (first < last).then_some((first, last))
}

fn verify_signature(
    alg: Algorithm,
    key: &PublicJwk,
    digest: &[u8; 32],
    signature: &[u8],
) -> Result<(), VerifyError> {
    if !key.fits(alg) {
        return Err(err(
            ErrorKind::InvalidKey,
            format!("an {} key cannot verify {}", key.kty(), alg),
        ));
    }
    key.verify_digest(alg, digest, signature)
        .map_err(|e| err(ErrorKind::BadSignature, e.to_string()))
}

fn str_claim<'c>(claims: &'c Map<String, Value>, name: &str) -> Result<&'c str, VerifyError> {
    match claims.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(err(
            ErrorKind::MissingClaim,
            format!("claim `{name}` must be a string"),
        )),
        None => Err(err(
            ErrorKind::MissingClaim,
            format!("claim `{name}` is missing"),
        )),
    }
}

fn opt_str_claim<'c>(
    claims: &'c Map<String, Value>,
    name: &str,
) -> Result<Option<&'c str>, VerifyError> {
    match claims.get(name) {
        None => Ok(None),
        Some(_) => str_claim(claims, name).map(Some),
    }
}

fn time_claim(claims: &Map<String, Value>, name: &str) -> Result<u64, VerifyError> {
    match claims.get(name) {
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
            err(
                ErrorKind::MissingClaim,
                format!("claim `{name}` must be a non-negative integer number of seconds"),
            )
        }),
        Some(_) => Err(err(
            ErrorKind::MissingClaim,
            format!("claim `{name}` must be a number"),
        )),
        None => Err(err(
            ErrorKind::MissingClaim,
            format!("claim `{name}` is missing"),
        )),
    }
}

/// Latest NumericDate accepted: 9999-12-31T23:59:59Z.
pub(crate) const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

/// A JSON number as whole NumericDate seconds, or `None` when it is
/// negative, not finite or absurdly large.
fn numeric_date(n: &serde_json::Number, round_up: bool) -> Option<u64> {
    if let Some(u) = n.as_u64() {
        return (u <= MAX_NUMERIC_DATE).then_some(u);
    }
    let f = n.as_f64()?;
    if !f.is_finite() || f < 0.0 || f > MAX_NUMERIC_DATE as f64 {
        return None;
    }
    let whole = if round_up { f.ceil() } else { f.floor() };
    // In range and integral, so the cast is exact.
    Some(whole as u64)
}

/// A `typ` header value compared per RFC 7515 §4.1.9: ASCII
/// case-insensitive, the `application/` prefix optional.
pub(crate) fn typ_is(typ: Option<&Value>, want: &str) -> bool {
    let Some(t) = typ.and_then(Value::as_str) else {
        return false;
    };
    let bare = match t.get(..12) {
        Some(p) if p.eq_ignore_ascii_case("application/") => &t[12..],
        _ => t,
    };
    bare.eq_ignore_ascii_case(want)
}

fn object(bytes: &[u8], what: &str) -> Result<Map<String, Value>, VerifyError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| err(ErrorKind::Malformed, format!("{what} is not UTF-8")))?;
    crate::json::parse_object(text).map_err(|e| err(ErrorKind::Malformed, format!("{what}: {e}")))
}

/// Checks a timestamp against `now`: not older than `max_age`, not newer
/// than `now + skew`.
pub(crate) fn check_time(
    name: &str,
    t: u64,
    now: u64,
    max_age: u64,
    skew: u64,
) -> Result<(), VerifyError> {
    if t > now.saturating_add(skew) {
        return Err(err(
            ErrorKind::NotYetValid,
            format!(
                "`{name}` is {} s in the future (allowed skew {skew} s)",
                t - now
            ),
        ));
    }
    if now > t && now - t > max_age {
        return Err(err(
            ErrorKind::Expired,
            format!("`{name}` is {} s old; the limit is {max_age} s", now - t),
        ));
    }
    Ok(())
}

/// The public key embedded in a proof (`jwk` header or `cnf.jwk`).
pub(crate) fn embedded_key(value: Option<&Value>, where_: &str) -> Result<PublicJwk, VerifyError> {
    let v = value.ok_or_else(|| {
        err(
            ErrorKind::InvalidKey,
            format!("no public key in `{where_}`"),
        )
    })?;
    PublicJwk::from_json_value_cached(v)
        .map_err(|e| err(ErrorKind::InvalidKey, format!("`{where_}`: {e}")))
}

/// RFC 7517 optional members of an embedded public JWK must agree with
/// their use here: `alg` (when present) is the JWS's algorithm, `key_ops`
/// (when present) includes `verify`, `ext` is a boolean, `kid` a string.
/// (`use` other than `sig` and private members are refused when the key is
/// read.)
pub(crate) fn check_optional_members(
    jwk: Option<&Value>,
    alg: crate::Algorithm,
    where_: &str,
) -> Result<(), VerifyError> {
    let Some(Value::Object(m)) = jwk else {
        return Ok(());
    };
    let bad = |what: &str| err(ErrorKind::InvalidKey, format!("`{where_}`: {what}"));
    match m.get("alg") {
        None => {}
        Some(Value::String(a)) if a == alg.as_str() => {}
        Some(_) => {
            return Err(bad(&format!(
                "its `alg` is not {alg}, the algorithm the proof is signed with"
            )))
        }
    }
    match m.get("key_ops") {
        None => {}
        Some(Value::Array(ops)) if !ops.iter().all(Value::is_string) => {
            return Err(bad("`key_ops` must be an array of strings"))
        }
        Some(Value::Array(ops)) if ops.iter().any(|o| o.as_str() == Some("verify")) => {}
        Some(_) => return Err(bad("`key_ops` does not allow `verify`")),
    }
    if m.get("ext").is_some_and(|e| !e.is_boolean()) {
        return Err(bad("`ext` must be a boolean"));
    }
    if m.get("kid").is_some_and(|k| !k.is_string()) {
        return Err(bad("`kid` must be a string"));
    }
    Ok(())
}
