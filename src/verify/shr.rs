//! Verifying Signed HTTP Requests (`Authorization: PoP <shr>`).

use std::sync::Arc;

use serde_json::{Map, Value};

use super::jose::{check_optional_members, check_time, embedded_key, typ_is, Jws};
use super::replay::ReplayRecord;
use super::token::{check_binding, AccessTokenValidator, Binding, HashedToken};
use super::{common_builders, err, Common, ErrorKind, Request, VerifyError};
use crate::text::clip;

/// What a verified SHR says.
///
/// `Debug` shows the claims with the access token (`at`) redacted.
#[derive(Clone)]
pub struct VerifiedShr {
    /// The SHR's payload claims.
    pub claims: Map<String, Value>,
    /// RFC 7638 thumbprint of the key that signed it.
    pub thumbprint: String,
    /// The access token's claims, as the validator returned them.
    pub access_token_claims: Map<String, Value>,
    /// Whether the validator checked the access token's signature.
    pub access_token_signature_checked: bool,
}

impl std::fmt::Debug for VerifiedShr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedShr")
            .field("claims", &super::jose::redacted(&self.claims))
            .field("thumbprint", &self.thumbprint)
            .field("access_token_claims", &self.access_token_claims)
            .field(
                "access_token_signature_checked",
                &self.access_token_signature_checked,
            )
            .finish()
    }
}

/// Verifies SHRs: signature by `cnf.jwk`, freshness, binding to the request
/// (`m`, `u`, `p`, `q`, `h`, `b`), nonce, replay, and binding of the access
/// token to the key.
///
/// ```
/// use std::sync::Arc;
/// use popkey::verify::{shr::ShrVerifier, token::DecodeOnly, Request};
/// # let key = popkey::PopKey::open("mem:")?;
/// # let at = "eyJhbGciOiJub25lIn0.eyJjbmYiOnsia2lkIjoiWCJ9fQ.x";
/// let verifier = ShrVerifier::new(Arc::new(DecodeOnly));
/// # let _ = (verifier, key, at);
/// # Ok::<(), popkey::Error>(())
/// ```
pub struct ShrVerifier {
    common: Common,
    require_q: bool,
    require_h: Vec<String>,
    require_b: bool,
    accept_unsigned_query: bool,
    accept_unsigned_headers: bool,
    msal_js: bool,
}

common_builders!(ShrVerifier, "ts");

impl ShrVerifier {
    /// A verifier that validates access tokens with `validator`. Defaults:
    /// ES256/RS256/PS256, `ts` at most 300 s old and 60 s in the future, a
    /// client-chosen nonce, its own in-memory replay cache (see
    /// `without_replay_protection`), `q`/`h`/`b` checked when present.
    pub fn new(validator: Arc<dyn AccessTokenValidator>) -> Self {
        ShrVerifier {
            common: Common::new(validator),
            require_q: false,
            require_h: Vec::new(),
            require_b: false,
            accept_unsigned_query: true,
            accept_unsigned_headers: true,
            msal_js: false,
        }
    }

    /// Accepts SHRs from MSAL.js (`@azure/msal-common`'s `PopTokenGenerator`),
    /// which lower-cases the whole URL before signing it: `p` and a raw `q`
    /// (`[[], "<query>"]`) are compared ASCII-case-insensitively, and a raw
    /// `q` may lack one trailing `/` of the request's query (MSAL.js trims it).
    ///
    /// **The risk:** on a server whose paths or query values are
    /// case-sensitive, `/Users/Alice` and `/users/alice` are different
    /// resources, and with this switch a proof for one is accepted for the
    /// other. Turn it on only for APIs whose routing and parameters ignore
    /// case, or where that difference does not matter. Everything else
    /// (signature, `ts`, `m`, `u`, the token binding) stays strict.
    pub fn msal_js_compat(mut self) -> Self {
        self.msal_js = true;
        self
    }

    /// Requires `q`, and (unless `accept_unsigned`) that it covers every
    /// query parameter.
    pub fn require_query(mut self, accept_unsigned: bool) -> Self {
        self.require_q = true;
        self.accept_unsigned_query = accept_unsigned;
        self
    }

    /// Requires `h` to cover these headers (case-insensitive), and (unless
    /// `accept_unsigned`) every header the request has except `Authorization`.
    pub fn require_headers(mut self, names: &[&str], accept_unsigned: bool) -> Self {
        self.require_h = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        self.accept_unsigned_headers = accept_unsigned;
        self
    }

    /// Requires `b`.
    pub fn require_body(mut self) -> Self {
        self.require_b = true;
        self
    }

    /// Verifies `shr` for `request` now.
    ///
    /// With an [`async_replay_store`](Self::async_replay_store) use
    /// [`verify_async`](Self::verify_async) instead.
    pub fn verify(&self, shr: &str, request: &Request<'_>) -> Result<VerifiedShr, VerifyError> {
        self.verify_at(shr, request, crate::now())
    }

    /// Verifies `shr` for `request` at time `now` (Unix seconds).
    pub fn verify_at(
        &self,
        shr: &str,
        request: &Request<'_>,
        now: u64,
    ) -> Result<VerifiedShr, VerifyError> {
        let (verified, record) = self.check_at(shr, request, now)?;
        self.common.replay.record(record)?;
        Ok(verified)
    }

    /// [`ShrVerifier::verify`] for async servers: the same checks, then the
    /// replay record through an [`AsyncReplayStore`](super::replay::AsyncReplayStore)
    /// without blocking the runtime.
    pub async fn verify_async(
        &self,
        shr: &str,
        request: &Request<'_>,
    ) -> Result<VerifiedShr, VerifyError> {
        self.verify_async_at(shr, request, crate::now()).await
    }

    /// [`ShrVerifier::verify_async`] at time `now` (Unix seconds).
    pub async fn verify_async_at(
        &self,
        shr: &str,
        request: &Request<'_>,
        now: u64,
    ) -> Result<VerifiedShr, VerifyError> {
        let (verified, record) = self.check_at(shr, request, now)?;
        self.common.replay.record_async(record).await?;
        Ok(verified)
    }

    /// Every check but replay; returns what to record.
    fn check_at(
        &self,
        shr: &str,
        request: &Request<'_>,
        now: u64,
    ) -> Result<(VerifiedShr, Option<ReplayRecord>), VerifyError> {
        let target = request.target()?;
        let jws = Jws::parse(shr, &self.common.algs)?;
        if !typ_is(jws.header.get("typ"), "pop") {
            return Err(err(ErrorKind::WrongType, "header `typ` must be \"pop\""));
        }
        let cnf = match jws.claims.get("cnf") {
            Some(Value::Object(c)) => c,
            _ => {
                return Err(err(
                    ErrorKind::InvalidKey,
                    "claim `cnf` with the signing key is missing",
                ))
            }
        };
        let key = embedded_key(cnf.get("jwk"), "cnf.jwk")?;
        check_optional_members(cnf.get("jwk"), jws.alg, "cnf.jwk")?;
        if let Some(kid) = jws.header.get("kid") {
            check_header_kid(kid, key.thumbprint())?;
        }
        jws.verify_signature(&key)?;

        let at = jws.str_claim("at")?;
        check_time(
            "ts",
            jws.time_claim("ts")?,
            now,
            self.common.max_age,
            self.common.skew,
        )?;
        let m = jws.str_claim("m")?;
        if m != target.method() {
            return Err(err(
                ErrorKind::MethodMismatch,
                format!(
                    "signed for {} but the request is {}",
                    clip(m, 64),
                    target.method()
                ),
            ));
        }
        check_host(jws.str_claim("u")?, &target)?;
        check_path(jws.str_claim("p")?, &target, self.msal_js)?;
        self.check_query(&jws, &target, request.url)?;
        self.check_headers(&jws, request)?;
        self.check_body(&jws, request)?;
        self.common
            .nonce
            .check(jws.opt_str_claim("nonce")?, now, true)?;

        let token_claims = self
            .common
            .validator
            .validate_hashed(&HashedToken::new(at), now)?;
        check_binding(&token_claims, key.thumbprint(), Binding::Pop)?;

        // Replay, last (by the caller). An SHR has no `jti`: it is named by
        // its key and the hash of what it signs (computed for the signature
        // check), so the same proof is the same id however it is re-sent,
        // and ECDSA's second valid signature over it is no new proof.
        let record = self.common.replay_record(
            "shr",
            &[key.thumbprint().as_bytes(), jws.signing_input_digest()],
            jws.time_claim("ts")?,
            now,
        );
        let verified = VerifiedShr {
            thumbprint: key.thumbprint().to_owned(),
            claims: jws.claims,
            access_token_claims: token_claims,
            access_token_signature_checked: self.common.validator.checks_signature(),
        };
        Ok((verified, record))
    }

    fn check_query(
        &self,
        jws: &Jws<'_>,
        target: &crate::HttpTarget,
        raw_url: &str,
    ) -> Result<(), VerifyError> {
        let Some(q) = jws.claims.get("q") else {
            return if self.require_q {
                Err(err(
                    ErrorKind::MissingClaim,
                    "claim `q` (signed query) is required",
                ))
            } else {
                Ok(())
            };
        };
        let (names, hash) = names_and_hash(q, "q")?;
        let query = target.url().query().unwrap_or("");
        if names.is_empty() && hash != hash_of(b"") {
            // MSAL.js: `[[], "<the raw query>"]` signs the whole query.
            let raw = raw_query(raw_url);
            let same = |a: &str, b: &str| {
                if self.msal_js {
                    a.eq_ignore_ascii_case(b)
                } else {
                    a == b
                }
            };
            let trimmed = if self.msal_js {
                raw.strip_suffix('/')
            } else {
                None
            };
            return if same(&hash, raw) || trimmed.is_some_and(|t| same(&hash, t)) {
                Ok(())
            } else {
                Err(err(
                    ErrorKind::QueryMismatch,
                    "the query differs from the signed one",
                ))
            };
        }
        let mut work = 0;
        match_query(&names, &hash, query, !self.accept_unsigned_query, &mut work)
    }

    fn check_headers(&self, jws: &Jws<'_>, request: &Request<'_>) -> Result<(), VerifyError> {
        let Some(h) = jws.claims.get("h") else {
            return if self.require_h.is_empty() {
                Ok(())
            } else {
                Err(err(
                    ErrorKind::MissingClaim,
                    "claim `h` (signed headers) is required",
                ))
            };
        };
        let (names, hash) = names_and_hash(h, "h")?;
        let mut work = 0;
        let signed = match_headers(
            &names,
            &hash,
            &request.headers,
            !self.accept_unsigned_headers,
            &mut work,
        )?;
        if let Some(missing) = self
            .require_h
            .iter()
            .find(|n| !signed.contains(&header_key(n)))
        {
            return Err(err(
                ErrorKind::HeaderMismatch,
                format!("header `{}` must be signed", clip(missing, 64)),
            ));
        }
        Ok(())
    }

    fn check_body(&self, jws: &Jws<'_>, request: &Request<'_>) -> Result<(), VerifyError> {
        match (jws.opt_str_claim("b")?, request.body) {
            (None, _) if self.require_b => Err(err(
                ErrorKind::MissingClaim,
                "claim `b` (signed body) is required",
            )),
            (None, _) => Ok(()),
            (Some(_), None) => Err(err(
                ErrorKind::BodyMismatch,
                "the proof signs the body; give the body to the verifier",
            )),
            (Some(b), Some(body)) if b == hash_of(body) => Ok(()),
            (Some(_), Some(_)) => Err(err(
                ErrorKind::BodyMismatch,
                "the body differs from the signed one",
            )),
        }
    }
}

fn hash_of(bytes: &[u8]) -> String {
    crate::b64::encode(crate::crypto::sha256(bytes))
}

/// Percent-decodes a query component the way form parsers do (`+` is a
/// space); invalid escapes stay as written, invalid UTF-8 is replaced.
fn decode_query_component(s: &str) -> String {
    let plus = s.replace('+', " ");
    let b = plus.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(d: u8) -> Option<u8> {
    match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        b'A'..=b'F' => Some(d - b'A' + 10),
        _ => None,
    }
}

/// How header names are compared: case-insensitive, and `_` equal to `-`
/// (CGI-style servers and some proxies turn one into the other).
fn header_key(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// Checks `q` = `[[names…], hash]` against the request's raw `query`.
///
/// Linear: the query is indexed once, by percent-decoded name, and each
/// signed name is looked up once; a name signed twice is refused. A
/// parameter whose decoded name equals a signed one counts as another
/// occurrence of it (`a=1&%61=2` is two `a`s to any framework). `work` counts
/// parameters and names examined.
pub(crate) fn match_query(
    names: &[String],
    hash: &str,
    query: &str,
    refuse_unsigned: bool,
    work: &mut usize,
) -> Result<(), VerifyError> {
    use std::collections::hash_map::{Entry, HashMap};
    let mismatch = |m: String| err(ErrorKind::QueryMismatch, m);
    // decoded name -> (occurrences, raw value of the first one)
    let mut index: HashMap<String, (usize, Option<&str>)> = HashMap::new();
    for p in query.split('&').filter(|p| !p.is_empty()) {
        *work += 1;
        let (n, v) = match p.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (p, None),
        };
        index
            .entry(decode_query_component(n))
            .and_modify(|e| e.0 += 1)
            .or_insert((1, v));
    }
    let mut signed: HashMap<String, ()> = HashMap::with_capacity(names.len());
    let mut canonical = String::new();
    for name in names {
        *work += 1;
        let key = decode_query_component(name);
        match signed.entry(key.clone()) {
            Entry::Occupied(_) => {
                return Err(mismatch(format!(
                    "`q` names query parameter `{}` more than once",
                    clip(name, 64)
                )))
            }
            Entry::Vacant(e) => {
                e.insert(());
            }
        }
        match index.get(&key) {
            Some((1, Some(v))) => {
                if !canonical.is_empty() {
                    canonical.push('&');
                }
                canonical.push_str(name);
                canonical.push('=');
                canonical.push_str(v);
            }
            Some((1, None)) => {
                return Err(mismatch(format!(
                    "signed query parameter `{}` has no value in the request",
                    clip(name, 64)
                )))
            }
            None => {
                return Err(mismatch(format!(
                    "signed query parameter `{}` is not in the request",
                    clip(name, 64)
                )))
            }
            Some(_) => {
                return Err(mismatch(format!(
                    "query parameter `{}` appears more than once",
                    clip(name, 64)
                )))
            }
        }
    }
    if hash != hash_of(canonical.as_bytes()) {
        return Err(mismatch(
            "the query parameters differ from the signed ones".into(),
        ));
    }
    if refuse_unsigned {
        for n in index.keys() {
            *work += 1;
            if !signed.contains_key(n) {
                return Err(mismatch(format!(
                    "query parameter `{}` is not signed",
                    clip(n, 64)
                )));
            }
        }
    }
    Ok(())
}

/// Checks `h` = `[[names…], hash]` against the request's headers, in linear
/// time (headers indexed once by [`header_key`], each name looked up once, a
/// name signed twice refused). Returns the signed names' keys. `work`
/// counts headers and names examined.
pub(crate) fn match_headers(
    names: &[String],
    hash: &str,
    headers: &[(&str, &str)],
    refuse_unsigned: bool,
    work: &mut usize,
) -> Result<std::collections::HashSet<String>, VerifyError> {
    use std::collections::{HashMap, HashSet};
    let mismatch = |m: String| err(ErrorKind::HeaderMismatch, m);
    let mut index: HashMap<String, (usize, &str)> = HashMap::new();
    for (n, v) in headers {
        *work += 1;
        index
            .entry(header_key(n))
            .and_modify(|e| e.0 += 1)
            .or_insert((1, v));
    }
    let mut signed = HashSet::with_capacity(names.len());
    let mut canonical = String::new();
    for name in names {
        *work += 1;
        let key = header_key(name);
        if !signed.insert(key.clone()) {
            return Err(mismatch(format!(
                "`h` names header `{}` more than once",
                clip(name, 64)
            )));
        }
        match index.get(&key) {
            Some((1, v)) => {
                if !canonical.is_empty() {
                    canonical.push('\n');
                }
                canonical.push_str(&name.to_ascii_lowercase());
                canonical.push_str(": ");
                canonical.push_str(v);
            }
            None => {
                return Err(mismatch(format!(
                    "signed header `{}` is not in the request",
                    clip(name, 64)
                )))
            }
            Some(_) => {
                return Err(mismatch(format!(
                    "header `{}` appears more than once",
                    clip(name, 64)
                )))
            }
        }
    }
    if hash != hash_of(canonical.as_bytes()) {
        return Err(mismatch("the headers differ from the signed ones".into()));
    }
    if refuse_unsigned {
        for n in index.keys() {
            *work += 1;
            if n != "authorization" && !signed.contains(n) {
                return Err(mismatch(format!("header `{}` is not signed", clip(n, 64))));
            }
        }
    }
    Ok(signed)
}

/// Reads `[[names…], "hash"]`.
fn names_and_hash(v: &Value, claim: &str) -> Result<(Vec<String>, String), VerifyError> {
    let bad = || {
        err(
            ErrorKind::MissingClaim,
            format!("claim `{claim}` must be [[names…], \"hash\"]"),
        )
    };
    let Value::Array(parts) = v else {
        return Err(bad());
    };
    let [Value::Array(names), Value::String(hash)] = parts.as_slice() else {
        return Err(bad());
    };
    let names = names
        .iter()
        .map(|n| n.as_str().map(str::to_owned).ok_or_else(bad))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((names, hash.clone()))
}

/// `u`: host, with `:port` when the port is not the default (an explicit
/// default port is accepted too); hosts compare case-insensitively.
fn check_host(u: &str, target: &crate::HttpTarget) -> Result<(), VerifyError> {
    let expected = target.host_and_port();
    // The explicit default port is only spelled out when the plain form
    // did not match.
    let explicit_default = || {
        target
            .url()
            .port_or_known_default()
            .map(|p| format!("{}:{p}", target.url().host_str().unwrap_or_default()))
    };
    if u.eq_ignore_ascii_case(&expected)
        || explicit_default().is_some_and(|e| u.eq_ignore_ascii_case(&e))
    {
        Ok(())
    } else {
        Err(err(
            ErrorKind::UrlMismatch,
            format!(
                "signed for host `{}` but the request is for `{expected}`",
                clip(u, 64)
            ),
        ))
    }
}

/// `p`: the path, compared after the same normalization the request URL
/// had, ignoring one trailing `/` on either side (Microsoft.IdentityModel's
/// validator trims slashes; MSAL.js adds one). `ignore_case` compares ASCII
/// case-insensitively (MSAL.js lower-cases URLs).
fn check_path(p: &str, target: &crate::HttpTarget, ignore_case: bool) -> Result<(), VerifyError> {
    // `p` is a path and nothing else: no URL resolution (which would read
    // `//host/x` or `/\\host/x` as another host, and drop control
    // characters), only the percent-encoding normalization both sides get.
    let plain = p.starts_with('/')
        && !p.contains(['?', '#', '\\'])
        && !p.chars().any(|c| c.is_control() || c == ' ');
    let normalized = plain.then(|| super::request::normalize_path(p));
    let actual = super::request::normalize_path(target.url().path());
    fn trim(s: &str) -> &str {
        s.strip_suffix('/').unwrap_or(s)
    }
    let same = normalized.as_deref().is_some_and(|n| {
        let (a, b) = (trim(n), trim(&actual));
        if ignore_case {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    });
    if same {
        Ok(())
    } else {
        Err(err(
            ErrorKind::UrlMismatch,
            format!(
                "signed for path `{}` but the request is for `{actual}`",
                clip(p, 64)
            ),
        ))
    }
}

/// The query of `url` exactly as received (after `?`, before `#`).
fn raw_query(url: &str) -> &str {
    let no_fragment = url.split('#').next().unwrap_or("");
    no_fragment.split_once('?').map_or("", |(_, q)| q)
}

/// A header `kid` is accepted when it is the key's thumbprint (MSAL.NET) or
/// base64url of a JSON object whose `kid` is the thumbprint (MSAL.js); when
/// absent (Microsoft.IdentityModel) the caller does not call this.
fn check_header_kid(kid: &Value, thumbprint: &str) -> Result<(), VerifyError> {
    let bad = || {
        err(
            ErrorKind::InvalidKey,
            "header `kid` is neither the thumbprint of `cnf.jwk` nor base64url({\"kid\":thumbprint})",
        )
    };
    let Some(kid) = kid.as_str() else {
        return Err(bad());
    };
    if kid == thumbprint {
        return Ok(());
    }
    // Thumbprints are 43 characters; a wrapper object stays small.
    if kid.len() > 1024 {
        return Err(bad());
    }
    let wrapped = crate::b64::decode(kid)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| crate::json::parse_object(&t).ok());
    match wrapped.as_ref().and_then(|o| o.get("kid")) {
        Some(Value::String(k)) if k == thumbprint => Ok(()),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q_hash(pairs: &[(&str, &str)]) -> String {
        let c: Vec<String> = pairs.iter().map(|(n, v)| format!("{n}={v}")).collect();
        hash_of(c.join("&").as_bytes())
    }

    /// The regression for the CPU amplification: 11,000 repeated names
    /// against a URL with thousands of parameters is refused after looking
    /// at two names, and an honest `q` of n names against n parameters
    /// costs a linear number of steps.
    #[test]
    fn query_matching_work_is_linear() {
        let params = 5_000;
        let query: String = (0..params)
            .map(|i| format!("p{i}=v"))
            .collect::<Vec<_>>()
            .join("&");
        let repeated = vec!["p1".to_owned(); 11_000];
        let mut work = 0;
        let e = match_query(&repeated, "x", &query, false, &mut work).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::QueryMismatch);
        assert!(e.message().contains("more than once"), "{e}");
        assert!(work <= params + 2, "{work} steps");

        let names: Vec<String> = (0..params).map(|i| format!("p{i}")).collect();
        let pairs: Vec<(String, &str)> = names.iter().map(|n| (n.clone(), "v")).collect();
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        let mut work = 0;
        match_query(&names, &q_hash(&pairs), &query, true, &mut work).unwrap();
        assert!(work <= 3 * params, "{work} steps for {params} parameters");
    }

    #[test]
    fn header_matching_work_is_linear() {
        let n = 3_000;
        let names: Vec<String> = (0..n).map(|i| format!("x-h{i}")).collect();
        let headers: Vec<(&str, &str)> = names.iter().map(|h| (h.as_str(), "v")).collect();
        let repeated = vec!["X-H1".to_owned(); 11_000];
        let mut work = 0;
        let e = match_headers(&repeated, "x", &headers, false, &mut work).unwrap_err();
        assert!(e.message().contains("more than once"), "{e}");
        assert!(work <= n + 2, "{work} steps");
        let canonical: Vec<String> = names.iter().map(|h| format!("{h}: v")).collect();
        let mut work = 0;
        match_headers(
            &names,
            &hash_of(canonical.join("\n").as_bytes()),
            &headers,
            true,
            &mut work,
        )
        .unwrap();
        assert!(work <= 3 * n, "{work} steps for {n} headers");
    }

    /// A signed `a=1` is not good for `?a=1&%61=2`, `?%61=2&a=1` or
    /// `?a=1&a+=2`-style look-alikes: names compare after decoding.
    #[test]
    fn encoded_duplicates_are_refused() {
        let names = vec!["a".to_owned()];
        let h = q_hash(&[("a", "1")]);
        let mut w = 0;
        match_query(&names, &h, "a=1&b=2", false, &mut w).unwrap();
        for q in ["a=1&%61=2", "%61=2&a=1", "a=1&%61", "a=1&a=2"] {
            let e = match_query(&names, &h, q, false, &mut w).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::QueryMismatch, "{q}");
        }
        let names = vec!["a b".to_owned()];
        let h = q_hash(&[("a b", "1")]);
        let e = match_query(&names, &h, "a b=1&a+b=2", false, &mut w).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::QueryMismatch);
        // Unsigned parameters are refused by decoded name too.
        let names = vec!["a".to_owned()];
        let h = q_hash(&[("a", "1")]);
        let e = match_query(&names, &h, "a=1&%62=2", true, &mut w).unwrap_err();
        assert!(e.message().contains("not signed"), "{e}");

        // Headers differing only by `_`/`-` or case are the same header.
        let names = vec!["x-user".to_owned()];
        let h = hash_of(b"x-user: alice");
        match_headers(&names, &h, &[("X-User", "alice")], false, &mut w).unwrap();
        for other in ["x_user", "X-USER", "X_User"] {
            let e = match_headers(
                &names,
                &h,
                &[("X-User", "alice"), (other, "bob")],
                false,
                &mut w,
            )
            .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::HeaderMismatch, "{other}");
        }
        let names = vec!["x-user".to_owned(), "X_USER".to_owned()];
        let e = match_headers(&names, &h, &[("X-User", "alice")], false, &mut w).unwrap_err();
        assert!(e.message().contains("more than once"), "{e}");
    }
}
