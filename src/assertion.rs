//! `private_key_jwt` client assertions (RFC 7523 §2.2, OpenID Connect Core
//! §9), signed by any popkey key — the PoP key itself or another one.
//!
//! ```
//! use popkey::{assertion::ClientAssertion, PopKey};
//! let key = PopKey::open("mem:")?;
//! let jwt = ClientAssertion::new("my-client-id", "https://login.example.com/t/oauth2/v2.0/token")?
//!     .sign(&key)?;
//! // send as client_assertion, with client_assertion_type = ASSERTION_TYPE
//! assert_eq!(jwt.split('.').count(), 3);
//! # Ok::<(), popkey::Error>(())
//! ```

use rand::RngCore;

use crate::b64;
use crate::error::{Error, Result};
use crate::json::ObjectWriter;
use crate::provider::PopCryptoProvider;

/// The `client_assertion_type` value for a JWT client assertion.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A client assertion under construction.
#[derive(Clone, Debug)]
pub struct ClientAssertion {
    client_id: String,
    audience: String,
    lifetime: u64,
    iat: Option<u64>,
    x5t_s256: Option<String>,
    x5c: Option<Vec<String>>,
}

impl ClientAssertion {
    /// An assertion for `client_id` (`iss` and `sub`) addressed to
    /// `audience` (the token endpoint URL).
    pub fn new(client_id: &str, audience: &str) -> Result<Self> {
        if client_id.is_empty() || audience.is_empty() {
            return Err(Error::request(
                "a client assertion needs a client id and an audience",
            ));
        }
        Ok(ClientAssertion {
            client_id: client_id.to_owned(),
            audience: audience.to_owned(),
            lifetime: 300,
            iat: None,
            x5t_s256: None,
            x5c: None,
        })
    }

    /// Seconds until `exp` (default 300).
    pub fn lifetime(mut self, secs: u64) -> Self {
        self.lifetime = secs.max(1);
        self
    }

    /// Sets `iat` instead of now.
    pub fn issued_at(mut self, iat: u64) -> Self {
        self.iat = Some(iat);
        self
    }

    /// Adds `x5t#S256` (and, with `include_chain`, `x5c`) from the key's
    /// certificate chain in PEM (leaf first).
    pub fn certificate_pem(mut self, pem: &str, include_chain: bool) -> Result<Self> {
        let ders = pem_certificates(pem)?;
        self.x5t_s256 = Some(b64::encode(crate::crypto::sha256(&ders[0])));
        if include_chain {
            use base64::Engine;
            self.x5c = Some(
                ders.iter()
                    .map(|d| base64::engine::general_purpose::STANDARD.encode(d))
                    .collect(),
            );
        }
        Ok(self)
    }

    /// Signs the assertion.
    pub fn sign<P: PopCryptoProvider + ?Sized>(&self, key: &P) -> Result<String> {
        let iat = self.iat.unwrap_or_else(crate::now);
        let mut header = ObjectWriter::with_capacity(128);
        header
            .str("alg", key.algorithm().as_str())
            .str("typ", "JWT");
        match &self.x5t_s256 {
            Some(t) => header.str("x5t#S256", t),
            None => header.str("kid", &key.thumbprint()),
        };
        if let Some(chain) = &self.x5c {
            header.value("x5c", &serde_json::json!(chain));
        }
        let mut jti = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut jti);
        let mut claims = ObjectWriter::with_capacity(256);
        claims
            .str("iss", &self.client_id)
            .str("sub", &self.client_id)
            .str("aud", &self.audience)
            .str("jti", &b64::encode(jti))
            .uint("iat", iat)
            .uint("nbf", iat)
            .uint("exp", iat.saturating_add(self.lifetime));
        crate::jws::sign_compact(key, &header.finish(), &claims.finish())
    }
}

/// The DER of every `CERTIFICATE` block in `pem`, in order.
fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>> {
    use base64::Engine;
    let bad = |m: &str| Error::MalformedKey {
        source_name: "certificate PEM".into(),
        reason: m.into(),
    };
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for line in pem.lines().map(str::trim) {
        match (&mut body, line) {
            (None, "-----BEGIN CERTIFICATE-----") => body = Some(String::new()),
            (Some(b), "-----END CERTIFICATE-----") => {
                let der = base64::engine::general_purpose::STANDARD
                    .decode(b.as_bytes())
                    .map_err(|_| bad("a CERTIFICATE block is not valid base64"))?;
                out.push(der);
                body = None;
            }
            (Some(b), l) => b.push_str(l),
            (None, _) => {}
        }
    }
    if body.is_some() {
        return Err(bad("a CERTIFICATE block has no END line"));
    }
    if out.is_empty() {
        return Err(bad("no CERTIFICATE block found"));
    }
    Ok(out)
}
