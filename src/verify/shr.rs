//! Verifying Signed HTTP Requests (`Authorization: PoP <shr>`).

use std::sync::Arc;

use serde_json::{Map, Value};

use super::jose::{check_time, embedded_key, ParsedJws};
use super::token::{check_binding, AccessTokenValidator, Binding};
use super::{common_builders, err, replay_id, Common, ErrorKind, Request, VerifyError};
use crate::text::clip;

/// What a verified SHR says.
#[derive(Debug, Clone)]
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
}

common_builders!(ShrVerifier, "ts");

impl ShrVerifier {
    /// A verifier that validates access tokens with `validator`. Defaults:
    /// ES256/RS256/PS256, `ts` at most 300 s old and 60 s in the future, a
    /// client-chosen nonce, no replay store, `q`/`h`/`b` checked when present.
    pub fn new(validator: Arc<dyn AccessTokenValidator>) -> Self {
        ShrVerifier {
            common: Common::new(validator),
            require_q: false,
            require_h: Vec::new(),
            require_b: false,
            accept_unsigned_query: true,
            accept_unsigned_headers: true,
        }
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
        let target = request.target()?;
        let jws = ParsedJws::parse(shr, &self.common.algs)?;
        match jws.header.get("typ") {
            Some(Value::String(t)) if t.eq_ignore_ascii_case("pop") => {}
            _ => return Err(err(ErrorKind::WrongType, "header `typ` must be \"pop\"")),
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
        if let Some(kid) = jws.header.get("kid") {
            if kid.as_str() != Some(key.thumbprint()) {
                return Err(err(
                    ErrorKind::InvalidKey,
                    "header `kid` is not the thumbprint of `cnf.jwk`",
                ));
            }
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
        check_path(jws.str_claim("p")?, &target)?;
        self.check_query(&jws, &target)?;
        self.check_headers(&jws, request)?;
        self.check_body(&jws, request)?;
        self.common
            .nonce
            .check(jws.opt_str_claim("nonce")?, now, true)?;

        let token_claims = self.common.validator.validate(at, now)?;
        check_binding(&token_claims, key.thumbprint(), Binding::Pop)?;

        if let Some(store) = &self.common.replay {
            let ts = jws.time_claim("ts")?;
            let id = replay_id("shr", &[key.thumbprint().as_bytes(), &jws.payload_bytes]);
            store.check_and_record(
                &id,
                ts.saturating_add(self.common.max_age)
                    .saturating_add(self.common.skew),
                now,
            )?;
        }
        Ok(VerifiedShr {
            thumbprint: key.thumbprint().to_owned(),
            claims: jws.claims,
            access_token_claims: token_claims,
            access_token_signature_checked: self.common.validator.checks_signature(),
        })
    }

    fn check_query(&self, jws: &ParsedJws, target: &crate::HttpTarget) -> Result<(), VerifyError> {
        let mismatch = |m: String| err(ErrorKind::QueryMismatch, m);
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
        // Every parameter, valueless ones (`?debug`) included: they count as
        // occurrences and as unsigned parameters.
        let params: Vec<(&str, Option<&str>)> = target
            .url()
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (p, None),
            })
            .collect();
        let mut canonical = Vec::with_capacity(names.len());
        for name in &names {
            let found: Vec<Option<&str>> = params
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| *v)
                .collect();
            match found.as_slice() {
                [Some(v)] => canonical.push(format!("{name}={v}")),
                [None] => {
                    return Err(mismatch(format!(
                        "signed query parameter `{}` has no value in the request",
                        clip(name, 64)
                    )))
                }
                [] => {
                    return Err(mismatch(format!(
                        "signed query parameter `{}` is not in the request",
                        clip(name, 64)
                    )))
                }
                _ => {
                    return Err(mismatch(format!(
                        "query parameter `{}` appears more than once",
                        clip(name, 64)
                    )))
                }
            }
        }
        if hash != hash_of(canonical.join("&").as_bytes()) {
            return Err(mismatch(
                "the query parameters differ from the signed ones".into(),
            ));
        }
        if !self.accept_unsigned_query {
            if let Some((n, _)) = params.iter().find(|(n, _)| !names.iter().any(|m| m == n)) {
                return Err(mismatch(format!(
                    "query parameter `{}` is not signed",
                    clip(n, 64)
                )));
            }
        }
        Ok(())
    }

    fn check_headers(&self, jws: &ParsedJws, request: &Request<'_>) -> Result<(), VerifyError> {
        let mismatch = |m: String| err(ErrorKind::HeaderMismatch, m);
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
        let mut canonical = Vec::with_capacity(names.len());
        for name in &names {
            let found: Vec<&str> = request
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
                .collect();
            match found.as_slice() {
                [v] => canonical.push(format!("{}: {v}", name.to_ascii_lowercase())),
                [] => {
                    return Err(mismatch(format!(
                        "signed header `{}` is not in the request",
                        clip(name, 64)
                    )))
                }
                _ => {
                    return Err(mismatch(format!(
                        "header `{}` appears more than once",
                        clip(name, 64)
                    )))
                }
            }
        }
        if hash != hash_of(canonical.join("\n").as_bytes()) {
            return Err(mismatch("the headers differ from the signed ones".into()));
        }
        let covered = |n: &str| names.iter().any(|m| m.eq_ignore_ascii_case(n));
        if let Some(missing) = self.require_h.iter().find(|n| !covered(n)) {
            return Err(mismatch(format!("header `{missing}` must be signed")));
        }
        if !self.accept_unsigned_headers {
            if let Some((n, _)) = request
                .headers
                .iter()
                .find(|(n, _)| !n.eq_ignore_ascii_case("authorization") && !covered(n))
            {
                return Err(mismatch(format!("header `{}` is not signed", clip(n, 64))));
            }
        }
        Ok(())
    }

    fn check_body(&self, jws: &ParsedJws, request: &Request<'_>) -> Result<(), VerifyError> {
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
    let explicit_default = target
        .url()
        .port_or_known_default()
        .map(|p| format!("{}:{p}", target.url().host_str().unwrap_or_default()));
    if u.eq_ignore_ascii_case(&expected)
        || explicit_default.is_some_and(|e| u.eq_ignore_ascii_case(&e))
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

/// `p`: the path, compared after the same normalization the request URL had.
fn check_path(p: &str, target: &crate::HttpTarget) -> Result<(), VerifyError> {
    // `p` is a path and nothing else: no URL resolution (which would read
    // `//host/x` or `/\\host/x` as another host, and drop control
    // characters), only the percent-encoding normalization both sides get.
    let plain = p.starts_with('/')
        && !p.contains(['?', '#', '\\'])
        && !p.chars().any(|c| c.is_control() || c == ' ');
    let normalized = plain.then(|| super::dpop::normalize_path(p));
    let actual = super::dpop::normalize_path(target.url().path());
    if normalized.as_deref() == Some(actual.as_str()) {
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
