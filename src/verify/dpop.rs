//! Verifying DPoP proofs: every check of RFC 9449 §4.3.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::jose::{check_optional_members, check_time, embedded_key, typ_is, Jws};
use super::replay::ReplayRecord;
use super::request::normalize_path;
use super::token::{check_binding, AccessTokenValidator, Binding, HashedToken};
use super::{common_builders, err, Common, ErrorKind, Request, VerifyError};
use crate::text::clip;

/// Longest `jti` accepted.
const MAX_JTI_LEN: usize = 256;

/// What a verified DPoP proof says.
#[derive(Debug, Clone)]
pub struct VerifiedDpop {
    /// The proof's protected header.
    pub header: Map<String, Value>,
    /// The proof's claims.
    pub claims: Map<String, Value>,
    /// RFC 7638 thumbprint of the proof key (the token's `cnf.jkt`).
    pub jkt: String,
    /// The access token's claims, when one was presented.
    pub access_token_claims: Option<Map<String, Value>>,
    /// Whether the validator checked the access token's signature.
    pub access_token_signature_checked: bool,
}

/// Verifies DPoP proofs (RFC 9449 §4.3).
///
/// ```
/// use std::sync::Arc;
/// use popkey::dpop::DpopProof;
/// use popkey::verify::{dpop::DpopVerifier, token::DecodeOnly, Request};
/// let key = popkey::PopKey::open("mem:")?;
/// let proof = DpopProof::new("POST", "https://as.example.com/token")?.sign(&key)?;
/// let request = Request::new("POST", "https://as.example.com/token").header("DPoP", &proof);
/// let v = DpopVerifier::new(Arc::new(DecodeOnly)).verify(&request).unwrap();
/// assert_eq!(v.jkt, key.kid());
/// # Ok::<(), popkey::Error>(())
/// ```
pub struct DpopVerifier {
    common: Common,
}

common_builders!(DpopVerifier, "iat");

impl DpopVerifier {
    /// A verifier that validates presented access tokens with `validator`.
    /// Defaults: ES256/RS256/PS256, `iat` at most 300 s old and 60 s in the
    /// future, no server nonce, its own in-memory replay cache (see
    /// `without_replay_protection`).
    pub fn new(validator: Arc<dyn AccessTokenValidator>) -> Self {
        DpopVerifier {
            common: Common::new(validator),
        }
    }

    /// Verifies the DPoP proof of `request` now: its `DPoP` header(s) and,
    /// when it carries `Authorization: DPoP <token>`, the access token (then
    /// `ath` and `cnf.jkt` are checked).
    ///
    /// With an [`async_replay_store`](Self::async_replay_store) use
    /// [`verify_async`](Self::verify_async) instead.
    pub fn verify(&self, request: &Request<'_>) -> Result<VerifiedDpop, VerifyError> {
        self.verify_at(request, crate::now())
    }

    /// [`DpopVerifier::verify`] at time `now` (Unix seconds).
    pub fn verify_at(&self, request: &Request<'_>, now: u64) -> Result<VerifiedDpop, VerifyError> {
        let (verified, record) = self.check_at(request, now)?;
        self.common.replay.record(record)?;
        Ok(verified)
    }

    /// [`DpopVerifier::verify`] for async servers: the same checks, then the
    /// replay record through an [`AsyncReplayStore`](super::replay::AsyncReplayStore)
    /// without blocking the runtime.
    pub async fn verify_async(&self, request: &Request<'_>) -> Result<VerifiedDpop, VerifyError> {
        self.verify_async_at(request, crate::now()).await
    }

    /// [`DpopVerifier::verify_async`] at time `now` (Unix seconds).
    pub async fn verify_async_at(
        &self,
        request: &Request<'_>,
        now: u64,
    ) -> Result<VerifiedDpop, VerifyError> {
        let (verified, record) = self.check_at(request, now)?;
        self.common.replay.record_async(record).await?;
        Ok(verified)
    }

    /// Every check but replay; returns what to record.
    fn check_at(
        &self,
        request: &Request<'_>,
        now: u64,
    ) -> Result<(VerifiedDpop, Option<ReplayRecord>), VerifyError> {
        let dpop_headers: Vec<&str> = request
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("dpop"))
            .map(|(_, v)| *v)
            .collect();
        let access_token = dpop_access_token(request)?;
        let target = request.target()?;
        // §4.3 (1): exactly one DPoP header.
        let proof = match dpop_headers.as_slice() {
            [one] => *one,
            [] => {
                return Err(err(
                    ErrorKind::HeaderCount,
                    "the request has no DPoP header",
                ))
            }
            _ => {
                return Err(err(
                    ErrorKind::HeaderCount,
                    "the request has more than one DPoP header",
                ))
            }
        };
        // (2)-(4): a well-formed JWT with the required members.
        let jws = Jws::parse(proof, &self.common.algs)?;
        // (5): typ.
        // RFC 7515 §4.1.9: case-insensitive, `application/` optional.
        if !typ_is(jws.header.get("typ"), "dpop+jwt") {
            return Err(err(
                ErrorKind::WrongType,
                "header `typ` must be \"dpop+jwt\"",
            ));
        }
        // (6)-(8): allowed alg (checked in parse), a public jwk, its signature.
        let key = embedded_key(jws.header.get("jwk"), "jwk")?;
        check_optional_members(jws.header.get("jwk"), jws.alg, "jwk")?;
        jws.verify_signature(&key)?;

        let jti = jws.str_claim("jti")?;
        if jti.is_empty() || jti.len() > MAX_JTI_LEN {
            return Err(err(
                ErrorKind::MissingClaim,
                format!("`jti` must be 1 to {MAX_JTI_LEN} characters"),
            ));
        }
        // (9): htm.
        let htm = jws.str_claim("htm")?;
        if htm != target.method() {
            return Err(err(
                ErrorKind::MethodMismatch,
                format!(
                    "proof is for {} but the request is {}",
                    clip(htm, 96),
                    target.method()
                ),
            ));
        }
        // (10): htu, compared after RFC 3986 normalization, without query and fragment.
        let htu = jws.str_claim("htu")?;
        let expected = expected_htu(target.url());
        // The exact normalized form needs no second parse; anything else is
        // normalized first.
        if htu != expected && normalize_htu(htu).as_deref() != Some(&*expected) {
            return Err(err(
                ErrorKind::UrlMismatch,
                format!(
                    "proof is for `{}` but the request is for `{expected}`",
                    clip(htu, 96)
                ),
            ));
        }
        // (11): nonce, when the server requires one.
        self.common
            .nonce
            .check(jws.opt_str_claim("nonce")?, now, false)?;
        // (12): iat within the window.
        let iat = jws.numeric_date_claim("iat", false)?;
        check_time("iat", iat, now, self.common.max_age, self.common.skew)?;
        // (13): ath and the key binding, when an access token is presented.
        let ath = jws.opt_str_claim("ath")?;
        let mut token_claims = None;
        match (access_token, ath) {
            (Some(token), Some(ath)) => {
                // One SHA-256 of the token serves `ath` and the validator.
                let hashed = HashedToken::new(token);
                if ath.as_bytes() != crate::b64::encode_digest(hashed.sha256()) {
                    return Err(err(
                        ErrorKind::AccessTokenHashMismatch,
                        "`ath` is not the hash of the presented access token",
                    ));
                }
                let claims = self.common.validator.validate_hashed(&hashed, now)?;
                check_binding(&claims, key.thumbprint(), Binding::Dpop)?;
                token_claims = Some(claims);
            }
            (Some(_), None) => {
                return Err(err(
                    ErrorKind::AccessTokenHashMismatch,
                    "an access token is presented but the proof has no `ath`",
                ))
            }
            (None, Some(_)) => {
                return Err(err(
                    ErrorKind::AccessTokenHashMismatch,
                    "the proof has `ath` but no access token was presented",
                ))
            }
            (None, None) => {}
        }
        // Replay, last (by the caller): only proofs that passed every other
        // check are recorded.
        let record = self.common.replay_record(
            "dpop",
            &[key.thumbprint().as_bytes(), jti.as_bytes()],
            iat,
            now,
        );
        let verified = VerifiedDpop {
            jkt: key.thumbprint().to_owned(),
            header: jws.header,
            claims: jws.claims,
            access_token_claims: token_claims,
            access_token_signature_checked: access_token.is_some()
                && self.common.validator.checks_signature(),
        };
        Ok((verified, record))
    }
}

/// The token of `Authorization: DPoP <token>`, if the request has one. A
/// `Bearer` (or other) scheme is not a DPoP-bound presentation: no token.
fn dpop_access_token<'a>(request: &Request<'a>) -> Result<Option<&'a str>, VerifyError> {
    let mut found = None;
    for (name, value) in &request.headers {
        if !name.eq_ignore_ascii_case("authorization") {
            continue;
        }
        if found.is_some() {
            return Err(err(
                ErrorKind::HeaderCount,
                "the request has more than one Authorization header",
            ));
        }
        let value: &'a str = value;
        found = Some(value);
    }
    Ok(found.and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        if scheme.eq_ignore_ascii_case("dpop") {
            Some(token.trim())
        } else {
            None
        }
    }))
}

/// RFC 3986 §6.2.2 normalization of an absolute http(s) URL, without its
/// query and fragment: scheme and host lowercase, default port dropped, dot
/// segments removed (the `url` crate's parser), percent-encoded unreserved
/// characters decoded and other escapes uppercased (here). Works on the
/// parsed URL: no second parse of its serialization.
fn normalize_target(mut u: url::Url) -> String {
    u.set_query(None);
    u.set_fragment(None);
    let path = normalize_path(u.path());
    u.set_path(&path);
    u.into()
}

/// The request URL as `htu` must match it: [`normalize_target`]'s result,
/// borrowed from the parsed URL's own serialization when its path has no
/// percent-escapes (then normalizing changes nothing).
fn expected_htu(u: &url::Url) -> std::borrow::Cow<'_, str> {
    if u.path().contains('%') {
        std::borrow::Cow::Owned(normalize_target(u.clone()))
    } else {
        std::borrow::Cow::Borrowed(&u[..url::Position::AfterPath])
    }
}

fn normalize_htu(htu: &str) -> Option<String> {
    let u = url::Url::parse(htu).ok()?;
    if !matches!(u.scheme(), "http" | "https") {
        return None;
    }
    Some(normalize_target(u))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization() {
        assert_eq!(normalize_path("/a%7eb/%2f%41"), "/a~b/%2FA");
        assert_eq!(normalize_path("/x%"), "/x%");
        assert_eq!(normalize_path("/x%4"), "/x%4");
        assert_eq!(normalize_path("/x%+1/é"), "/x%+1/é");
        assert_eq!(
            normalize_htu("HTTPS://Server.Example.COM:443/a/../token?x=1#f").unwrap(),
            "https://server.example.com/token"
        );
        assert!(normalize_htu("ftp://h/x").is_none());
    }

    /// The borrowed form is what normalizing the parsed URL gives.
    #[test]
    fn expected_htu_borrows_only_what_normalizing_keeps() {
        for url in [
            "https://api.example.com/v1/items?page=2#top",
            "HTTPS://API.Example.com:443/a/./b/../c?x",
            "http://u:p@h:8080/x/y/",
            "https://h",
            "https://h/a%7eb/%2f?q=%41",
            "https://[::1]:8443/p;m=1",
        ] {
            let u = url::Url::parse(url).unwrap();
            assert_eq!(expected_htu(&u), normalize_target(u.clone()), "{url}");
        }
        let plain = url::Url::parse("https://h/x?y").unwrap();
        assert!(matches!(
            expected_htu(&plain),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
