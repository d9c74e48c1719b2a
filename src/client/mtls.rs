//! The client certificate a certificate-bound (RFC 8705) token is bound to,
//! and the check that a returned token names it.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::error::{ClientError, Error, Result};

/// The largest certificate chain file accepted (PEM).
const MAX_PEM_LEN: usize = 256 * 1024;

/// The client certificate of an mTLS connection, the one a
/// [`Scheme::Mtls`](super::Scheme::Mtls) token is bound to: its DER leaf and
/// RFC 8705 thumbprint (`x5t#S256`, base64url SHA-256 of the DER).
///
/// It only names the certificate; the TLS handshake is made by the HTTP
/// client's identity (the same certificate with the popkey key behind it).
///
/// ```
/// use popkey::client::BindingCertificate;
/// # #[cfg(feature = "cert")] {
/// let key = popkey::PopKey::open("mem:")?;
/// let chain = popkey::cert::CertificateTemplate::new("CN=orders-daemon")?.self_signed(&key)?;
/// let cert = BindingCertificate::from_pem(&chain.to_pem())?;
/// // The token's cnf.x5t#S256 must be this value.
/// assert_eq!(cert.thumbprint(), chain.thumbprint_sha256());
/// # }
/// # Ok::<(), popkey::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct BindingCertificate {
    der: Arc<[u8]>,
    thumbprint: Arc<str>,
}

impl BindingCertificate {
    /// The leaf certificate (the first `CERTIFICATE` block) of a PEM chain.
    pub fn from_pem(pem: &str) -> Result<Self> {
        let bad = |reason: String| Error::MalformedKey {
            source_name: "client certificate PEM".into(),
            reason,
        };
        if pem.len() > MAX_PEM_LEN {
            return Err(bad(format!(
                "{} bytes is too large for a certificate chain (at most {MAX_PEM_LEN})",
                pem.len()
            )));
        }
        let (label, der) = crate::pem::decode(pem).map_err(bad)?;
        if label != "CERTIFICATE" {
            return Err(bad(format!(
                "the first PEM block is `{}`, not `CERTIFICATE`",
                crate::text::clip(&label, 40)
            )));
        }
        Self::from_der(&der)
    }

    /// A DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        if der.first() != Some(&0x30) || der.len() < 16 {
            return Err(Error::MalformedKey {
                source_name: "client certificate".into(),
                reason: "not a DER certificate (no SEQUENCE)".into(),
            });
        }
        Ok(BindingCertificate {
            thumbprint: crate::b64::encode(crate::crypto::sha256(der)).into(),
            der: der.into(),
        })
    }

    /// The DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// `x5t#S256`: base64url(SHA-256(DER)).
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// Checks a token the authority returned for this certificate: when it
    /// is a JWT, its `cnf.x5t#S256` must be this certificate's thumbprint
    /// (opaque tokens cannot be checked here; the API checks them).
    pub(crate) fn check_token(&self, endpoint: &str, access_token: &str) -> Result<()> {
        let Some(claims) = jwt_claims(access_token) else {
            return Ok(());
        };
        let named = claims
            .get("cnf")
            .and_then(|c| c.get("x5t#S256"))
            .and_then(Value::as_str);
        if named == Some(self.thumbprint()) {
            return Ok(());
        }
        Err(ClientError::TokenNotBound {
            url: endpoint.to_owned(),
            expected: self.thumbprint().to_owned(),
            actual: named.map(|n| crate::text::clip(n, 64)),
        }
        .into())
    }
}

/// The leaf certificate of a TLS client identity: the one its connections
/// present, so the one its tokens are bound to.
#[cfg(feature = "mtls")]
#[cfg_attr(docsrs, doc(cfg(feature = "mtls")))]
impl From<&crate::tls::ClientIdentity> for BindingCertificate {
    fn from(identity: &crate::tls::ClientIdentity) -> Self {
        BindingCertificate {
            der: identity.certificate_chain().leaf_der().into(),
            thumbprint: identity.certificate_thumbprint().into(),
        }
    }
}

impl fmt::Debug for BindingCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BindingCertificate")
            .field("x5t#S256", &self.thumbprint)
            .finish()
    }
}

/// The claims of a JWT (three base64url parts, the middle one a JSON
/// object), without any signature check; `None` for anything else.
fn jwt_claims(token: &str) -> Option<serde_json::Map<String, Value>> {
    if token.len() > 64 * 1024 {
        return None;
    }
    let mut parts = token.split('.');
    let payload = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(p), Some(_), None) => p,
        _ => return None,
    };
    let bytes = crate::b64::decode(payload).ok()?;
    crate::json::parse_object(std::str::from_utf8(&bytes).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &Value) -> String {
        format!(
            "{}.{}.sig",
            crate::b64::encode(br#"{"alg":"ES256"}"#),
            crate::b64::encode(claims.to_string())
        )
    }

    #[test]
    fn token_must_name_the_certificate() {
        let der = [0x30u8; 40];
        let cert = BindingCertificate::from_der(&der).unwrap();
        assert_eq!(
            cert.thumbprint(),
            crate::b64::encode(crate::crypto::sha256(&der))
        );
        let t = cert.thumbprint().to_owned();
        cert.check_token(
            "https://as",
            &jwt(&serde_json::json!({"cnf": {"x5t#S256": t}})),
        )
        .unwrap();
        // Opaque tokens pass (the API checks them).
        cert.check_token("https://as", "opaque-token").unwrap();
        for bad in [
            serde_json::json!({"cnf": {"x5t#S256": "other"}}),
            serde_json::json!({"cnf": {"jkt": t}}),
            serde_json::json!({}),
        ] {
            let e = cert.check_token("https://as", &jwt(&bad)).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::TokenNotBound);
            assert!(e.to_string().contains(&t), "{e}");
        }
        assert!(BindingCertificate::from_der(b"").is_err());
        for name in ["mtls", "MTLS", "mtls_pop", "mtls-pop"] {
            assert_eq!(
                name.parse::<super::super::Scheme>().unwrap(),
                super::super::Scheme::Mtls
            );
        }
        let mtls = super::super::Scheme::Mtls;
        assert!(mtls.accepts_token_type("Bearer") && mtls.accepts_token_type("bearer"));
        assert!(mtls.accepts_token_type("mtls_pop") && !mtls.accepts_token_type("DPoP"));
        assert!(!super::super::Scheme::Bearer.accepts_token_type("mtls_pop"));
        assert!(BindingCertificate::from_pem(
            "-----BEGIN PRIVATE KEY-----\nMDA=\n-----END PRIVATE KEY-----\n"
        )
        .is_err());
    }
}
