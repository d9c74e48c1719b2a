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

    /// Whether [`AccessTokenValidator::validate`] checks the token's
    /// signature. Reported next to every verification result, so nobody
    /// mistakes a decoded token for a validated one.
    fn checks_signature(&self) -> bool {
        true
    }
}

/// Decodes a JWT access token's claims WITHOUT checking its signature,
/// issuer or audience. Use it only behind a gateway that already validated
/// the token, or in tools (the CLI's `verify` without `--jwks`).
#[derive(Debug, Default, Clone, Copy)]
pub struct DecodeOnly;

impl AccessTokenValidator for DecodeOnly {
    fn validate(&self, token: &str, _now: u64) -> Result<Map<String, Value>, VerifyError> {
        let bad = |m: String| err(ErrorKind::InvalidAccessToken, format!("access token: {m}"));
        if token.len() > super::jose::MAX_JWS_LEN {
            return Err(bad("too large".into()));
        }
        let mut parts = token.split('.');
        let payload = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(_), Some(p), Some(_), None) => p,
            _ => return Err(bad("not a JWT (three dot-separated parts)".into())),
        };
        let mut bytes = crate::b64::scratch::Scratch::take();
        crate::b64::decode_into(payload, &mut bytes).map_err(bad)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| bad("payload is not UTF-8".into()))?;
        crate::json::parse_object(text).map_err(bad)
    }

    fn checks_signature(&self) -> bool {
        false
    }
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
#[derive(Debug, Clone)]
pub struct JwksValidator {
    keys: Vec<JwksKey>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
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
        })
    }

    /// Requires `iss` to equal `issuer`.
    pub fn issuer(mut self, issuer: &str) -> Self {
        self.issuer = Some(issuer.to_owned());
        self
    }

    /// Requires `aud` to be (or contain) `audience`.
    pub fn audience(mut self, audience: &str) -> Self {
        self.audience = Some(audience.to_owned());
        self
    }

    /// Clock leeway for `exp` / `nbf`, in seconds (default 60).
    pub fn leeway(mut self, secs: u64) -> Self {
        self.leeway = secs;
        self
    }
}

impl AccessTokenValidator for JwksValidator {
    fn validate(&self, token: &str, now: u64) -> Result<Map<String, Value>, VerifyError> {
        let bad = |m: String| err(ErrorKind::InvalidAccessToken, m);
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
        if now > exp.saturating_add(self.leeway) {
            return Err(bad(format!("the access token expired {} s ago", now - exp)));
        }
        if jws.claims.contains_key("nbf") {
            let nbf = jws
                .numeric_date_claim("nbf", true)
                .map_err(|e| bad(format!("access token: {}", e.message())))?;
            if nbf > now.saturating_add(self.leeway) {
                return Err(bad("the access token is not valid yet (nbf)".into()));
            }
        }
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
