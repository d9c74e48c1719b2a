//! X.509 certificates and PKCS#10 certificate signing requests for popkey
//! keys (feature `cert`), for mTLS proof-of-possession (RFC 8705).
//!
//! The key signs the to-be-signed bytes itself, in whatever backend holds
//! it (file, PKCS#11, TPM): the private key never leaves the device. The
//! DER comes from the RustCrypto `x509-cert` builder; popkey only supplies
//! the signer (ES256 → `ecdsa-with-SHA256` with a DER `ECDSA-Sig-Value`,
//! RS256 → `sha256WithRSAEncryption`, PS256 → `RSASSA-PSS` with SHA-256,
//! MGF1-SHA-256 and a 32-byte salt).
//!
//! ```
//! use popkey::cert::{CertificateChain, CertificateTemplate};
//! use popkey::PopKey;
//!
//! let key = PopKey::open("mem:")?;
//! let template = CertificateTemplate::new("CN=orders-daemon,O=Example")?
//!     .alt_name("DNS:orders.example.com".parse()?)
//!     .validity_days(30);
//! let csr_pem = template.csr_pem(&key)?; // for a CA
//! assert!(csr_pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
//! let cert = template.self_signed(&key)?; // or self-signed
//! popkey::cert::check_certificate_matches_key(&cert, &key)?;
//! let again = CertificateChain::from_pem(&cert.to_pem(), "PEM input")?;
//! assert_eq!(again.thumbprint_sha256(), cert.thumbprint_sha256());
//! # Ok::<(), popkey::Error>(())
//! ```

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use signature::{Keypair, SignatureEncoding, Signer};
use x509_cert::builder::{Builder, CertificateBuilder, Profile, RequestBuilder};
use x509_cert::der::asn1::{BitString, Ia5String};
use x509_cert::der::oid::db::rfc5912;
use x509_cert::der::{Any, Decode, Encode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{ExtendedKeyUsage, SubjectAltName};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{
    AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, EncodePublicKey,
    SignatureBitStringEncoding,
};
use x509_cert::time::{Time, Validity};
use x509_cert::Certificate;

use crate::alg::Algorithm;
use crate::error::{CertificateError, Error, Result};
use crate::jwk::PublicJwk;
use crate::key::PopKey;
use crate::provider::PopCryptoProvider;

/// The most bytes a certificate file may have (a chain of a few certificates).
const MAX_CERT_FILE: u64 = 1 << 20;

/// How far before "now" a new certificate's validity starts, for clocks
/// that run a little behind.
const BACKDATE: Duration = Duration::from_secs(300);

/// A subject alternative name: `DNS:host`, `IP:addr`, `URI:uri` or
/// `email:addr` (the `openssl` spelling).
///
/// ```
/// use popkey::cert::AltName;
/// let name: AltName = "DNS:orders.example.com".parse()?;
/// assert_eq!(name, AltName::Dns("orders.example.com".into()));
/// assert_eq!(name.to_string(), "DNS:orders.example.com");
/// # Ok::<(), popkey::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AltName {
    /// A DNS name.
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
    /// A URI.
    Uri(String),
    /// An e-mail address (RFC 822 name).
    Email(String),
}

impl FromStr for AltName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::from(CertificateError::InvalidName(format!(
                "subject alternative name `{s}`: {why}"
            )))
        };
        let (kind, value) = s
            .split_once(':')
            .ok_or_else(|| bad("expected TYPE:value with TYPE one of DNS, IP, URI, email"))?;
        if value.is_empty() || !value.is_ascii() || value.chars().any(|c| c.is_ascii_control()) {
            return Err(bad("the value must be non-empty printable ASCII"));
        }
        match kind.to_ascii_lowercase().as_str() {
            "dns" => Ok(AltName::Dns(value.to_owned())),
            "ip" => value
                .parse()
                .map(AltName::Ip)
                .map_err(|_| bad("not an IPv4 or IPv6 address")),
            "uri" => Ok(AltName::Uri(value.to_owned())),
            "email" => Ok(AltName::Email(value.to_owned())),
            _ => Err(bad("TYPE must be DNS, IP, URI or email")),
        }
    }
}

impl fmt::Display for AltName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AltName::Dns(v) => write!(f, "DNS:{v}"),
            AltName::Ip(v) => write!(f, "IP:{v}"),
            AltName::Uri(v) => write!(f, "URI:{v}"),
            AltName::Email(v) => write!(f, "email:{v}"),
        }
    }
}

impl AltName {
    fn to_general_name(&self) -> Result<GeneralName> {
        let ia5 = |v: &str| {
            Ia5String::new(v).map_err(|e| {
                Error::from(CertificateError::InvalidName(format!(
                    "subject alternative name `{self}`: {e}"
                )))
            })
        };
        Ok(match self {
            AltName::Dns(v) => GeneralName::DnsName(ia5(v)?),
            AltName::Ip(ip) => GeneralName::from(*ip),
            AltName::Uri(v) => GeneralName::UniformResourceIdentifier(ia5(v)?),
            AltName::Email(v) => GeneralName::Rfc822Name(ia5(v)?),
        })
    }
}

/// What goes into a certificate or CSR for a popkey key: the subject, the
/// subject alternative names and (for certificates) the validity.
///
/// Certificates are end-entity certificates (`CA:FALSE`), with key usage
/// `digitalSignature` and extended key usage `clientAuth`, a random 128-bit
/// serial number, and a validity that starts five minutes before now.
#[derive(Clone, Debug)]
pub struct CertificateTemplate {
    subject: Name,
    subject_text: String,
    alt_names: Vec<AltName>,
    validity_days: u32,
}

impl CertificateTemplate {
    /// A template for `subject`, an RFC 4514 distinguished name such as
    /// `CN=orders-daemon,O=Example`. Validity: 365 days.
    pub fn new(subject: &str) -> Result<Self> {
        let subject_text = subject.trim().trim_start_matches('/').to_owned();
        if subject_text.is_empty() {
            return Err(CertificateError::InvalidName("the subject is empty".into()).into());
        }
        let name = Name::from_str(&subject_text).map_err(|e| {
            CertificateError::InvalidName(format!(
                "subject `{subject_text}` is not an RFC 4514 name such as CN=name,O=org: {e}"
            ))
        })?;
        Ok(CertificateTemplate {
            subject: name,
            subject_text,
            alt_names: Vec::new(),
            validity_days: 365,
        })
    }

    /// Adds a subject alternative name.
    pub fn alt_name(mut self, name: AltName) -> Self {
        self.alt_names.push(name);
        self
    }

    /// Sets how many days a certificate is valid (at least 1).
    pub fn validity_days(mut self, days: u32) -> Self {
        self.validity_days = days.max(1);
        self
    }

    /// A PKCS#10 certificate signing request, signed by `key`, as DER.
    pub fn csr_der(&self, key: &PopKey) -> Result<Vec<u8>> {
        let signer = X509Signer::new(key)?;
        let mut builder =
            RequestBuilder::new(self.subject.clone(), &signer).map_err(build_error)?;
        if let Some(san) = self.san()? {
            builder.add_extension(&san).map_err(build_error)?;
        }
        let req = signer.finish(builder.build::<X509Signature>())?;
        req.to_der().map_err(build_error)
    }

    /// A PKCS#10 certificate signing request, signed by `key`, as PEM
    /// (`CERTIFICATE REQUEST`).
    pub fn csr_pem(&self, key: &PopKey) -> Result<String> {
        let der = self.csr_der(key)?;
        Ok(crate::pem::encode("CERTIFICATE REQUEST", &der).to_string())
    }

    /// A self-signed certificate for `key`, signed by `key`.
    pub fn self_signed(&self, key: &PopKey) -> Result<CertificateChain> {
        let signer = X509Signer::new(key)?;
        let now = SystemTime::now();
        let days = Duration::from_secs(u64::from(self.validity_days) * 86_400);
        let time = |t: SystemTime| {
            Time::try_from(t).map_err(|e| {
                Error::from(CertificateError::Build(format!(
                    "validity time out of range: {e}"
                )))
            })
        };
        let validity = Validity {
            not_before: time(now.checked_sub(BACKDATE).unwrap_or(now))?,
            not_after: time(now + days)?,
        };
        let mut serial = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut serial);
        serial[0] &= 0x7f; // positive
        serial[0] |= 0x01; // no leading zero byte
        let serial = SerialNumber::new(&serial).map_err(build_error)?;
        let spki = x509_cert::spki::SubjectPublicKeyInfoOwned::from_der(&signer.spki)
            .map_err(build_error)?;
        let profile = Profile::Leaf {
            issuer: self.subject.clone(),
            enable_key_agreement: false,
            enable_key_encipherment: false,
        };
        let mut builder = CertificateBuilder::new(
            profile,
            serial,
            validity,
            self.subject.clone(),
            spki,
            &signer,
        )
        .map_err(build_error)?;
        builder
            .add_extension(&ExtendedKeyUsage(vec![rfc5912::ID_KP_CLIENT_AUTH]))
            .map_err(build_error)?;
        if let Some(san) = self.san()? {
            builder.add_extension(&san).map_err(build_error)?;
        }
        let cert = signer.finish(builder.build::<X509Signature>())?;
        let der = cert.to_der().map_err(build_error)?;
        CertificateChain::from_der_chain(vec![der], "the new certificate")
    }

    fn san(&self) -> Result<Option<SubjectAltName>> {
        if self.alt_names.is_empty() {
            return Ok(None);
        }
        let names = self
            .alt_names
            .iter()
            .map(AltName::to_general_name)
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(SubjectAltName(names)))
    }

    /// The subject as given.
    pub fn subject(&self) -> &str {
        &self.subject_text
    }
}

fn build_error(e: impl fmt::Display) -> Error {
    CertificateError::Build(e.to_string()).into()
}

/// A certificate chain, leaf first: the certificate a popkey key presents
/// in TLS, and the `x5t#S256` thumbprint RFC 8705 binds tokens to.
#[derive(Clone)]
pub struct CertificateChain {
    ders: Vec<Vec<u8>>,
    leaf: Certificate,
    thumbprint: String,
    source_name: String,
}

impl fmt::Debug for CertificateChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateChain")
            .field("subject", &self.subject())
            .field("x5t#S256", &self.thumbprint)
            .field("len", &self.ders.len())
            .finish()
    }
}

impl CertificateChain {
    /// Reads PEM `CERTIFICATE` blocks (leaf first) from a file.
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let text = crate::pem::read_file(
            path,
            MAX_CERT_FILE,
            || format!("no certificate file at {name}"),
            |_| Ok(()),
        )
        .map_err(|e| match e {
            Error::MalformedKey {
                source_name,
                reason,
            } => CertificateError::Malformed {
                source_name,
                reason,
            }
            .into(),
            other => other,
        })?;
        Self::from_pem(&text, &name)
    }

    /// Parses PEM `CERTIFICATE` blocks (leaf first). `source_name` names
    /// the input in errors.
    pub fn from_pem(text: &str, source_name: &str) -> Result<Self> {
        let malformed = |reason: String| {
            Error::from(CertificateError::Malformed {
                source_name: source_name.to_owned(),
                reason,
            })
        };
        match crate::pem::first_label(text) {
            Some("CERTIFICATE") => {}
            Some(other) => {
                return Err(malformed(format!(
                    "expected PEM `CERTIFICATE` blocks, found `{other}`{}",
                    if other.contains("KEY") {
                        " (that is a key, not a certificate)"
                    } else {
                        ""
                    }
                )))
            }
            None => {
                return Err(malformed(
                    "no PEM `-----BEGIN CERTIFICATE-----` block (PEM is expected)".into(),
                ))
            }
        }
        let certs = Certificate::load_pem_chain(text.as_bytes())
            .map_err(|e| malformed(format!("not a valid PEM certificate chain: {e}")))?;
        let ders = certs
            .iter()
            .map(|c| c.to_der())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| malformed(e.to_string()))?;
        Self::from_der_chain(ders, source_name)
    }

    /// A chain from DER certificates, leaf first.
    pub fn from_der_chain(ders: Vec<Vec<u8>>, source_name: &str) -> Result<Self> {
        let malformed = |reason: String| {
            Error::from(CertificateError::Malformed {
                source_name: source_name.to_owned(),
                reason,
            })
        };
        let first = ders
            .first()
            .ok_or_else(|| malformed("no certificate".into()))?;
        for (i, der) in ders.iter().enumerate() {
            Certificate::from_der(der)
                .map_err(|e| malformed(format!("certificate {} of the chain: {e}", i + 1)))?;
        }
        let leaf = Certificate::from_der(first)
            .map_err(|e| malformed(format!("not an X.509 certificate: {e}")))?;
        let thumbprint = crate::b64::encode(crate::crypto::sha256(first));
        let chain = CertificateChain {
            leaf,
            thumbprint,
            source_name: source_name.to_owned(),
            ders,
        };
        chain.public_key()?; // refuse certificates for keys popkey cannot use
        Ok(chain)
    }

    /// The DER certificates, leaf first.
    pub fn ders(&self) -> &[Vec<u8>] {
        &self.ders
    }

    /// The leaf certificate, DER.
    pub fn leaf_der(&self) -> &[u8] {
        &self.ders[0]
    }

    /// The chain as PEM `CERTIFICATE` blocks, leaf first.
    pub fn to_pem(&self) -> String {
        self.ders
            .iter()
            .map(|d| crate::pem::encode("CERTIFICATE", d).to_string())
            .collect()
    }

    /// The leaf's SHA-256 thumbprint as in RFC 8705 `cnf.x5t#S256`:
    /// base64url (no padding) of SHA-256 over the certificate's DER.
    pub fn thumbprint_sha256(&self) -> &str {
        &self.thumbprint
    }

    /// The leaf's subject (RFC 4514 string).
    pub fn subject(&self) -> String {
        self.leaf.tbs_certificate.subject.to_string()
    }

    /// Start of the leaf's validity.
    pub fn not_before(&self) -> SystemTime {
        self.leaf
            .tbs_certificate
            .validity
            .not_before
            .to_system_time()
    }

    /// End of the leaf's validity.
    pub fn not_after(&self) -> SystemTime {
        self.leaf
            .tbs_certificate
            .validity
            .not_after
            .to_system_time()
    }

    /// The public key in the leaf certificate, as a JWK.
    pub fn public_key(&self) -> Result<PublicJwk> {
        use p256::pkcs8::DecodePublicKey;
        let spki = self
            .leaf
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| self.malformed(format!("its public key: {e}")))?;
        let oid = self
            .leaf
            .tbs_certificate
            .subject_public_key_info
            .algorithm
            .oid;
        if oid == rfc5912::ID_EC_PUBLIC_KEY {
            let key = p256::ecdsa::VerifyingKey::from_public_key_der(&spki).map_err(|e| {
                self.malformed(format!("its EC public key is not a P-256 key: {e}"))
            })?;
            PublicJwk::from_p256(&key)
        } else if oid == rfc5912::RSA_ENCRYPTION {
            let key = rsa::RsaPublicKey::from_public_key_der(&spki)
                .map_err(|e| self.malformed(format!("its RSA public key: {e}")))?;
            PublicJwk::from_rsa(&key)
        } else {
            Err(self.malformed(format!(
                "its public key algorithm {oid} is neither P-256 nor RSA"
            )))
        }
    }

    /// Checks that the leaf is valid at `now`.
    pub fn check_valid_at(&self, now: SystemTime) -> Result<()> {
        if now > self.not_after() {
            return Err(CertificateError::Expired {
                subject: self.subject(),
                not_after: self.leaf.tbs_certificate.validity.not_after.to_string(),
            }
            .into());
        }
        if now < self.not_before() {
            return Err(CertificateError::NotYetValid {
                subject: self.subject(),
                not_before: self.leaf.tbs_certificate.validity.not_before.to_string(),
            }
            .into());
        }
        Ok(())
    }

    /// Checks that the leaf is valid now.
    pub fn check_valid_now(&self) -> Result<()> {
        self.check_valid_at(SystemTime::now())
    }

    fn malformed(&self, reason: String) -> Error {
        CertificateError::Malformed {
            source_name: self.source_name.clone(),
            reason: format!("the certificate: {reason}"),
        }
        .into()
    }
}

/// Checks that `chain`'s leaf certificate is for `key` (same public key)
/// and valid now; call it before any network use of the pair.
///
/// A certificate for another key is [`CertificateError::KeyMismatch`],
/// naming the certificate's `x5t#S256`, the RFC 7638 thumbprint of the key
/// in the certificate and that of `key`. An expired certificate is
/// [`CertificateError::Expired`].
pub fn check_certificate_matches_key(chain: &CertificateChain, key: &PopKey) -> Result<()> {
    let cert_key = chain.public_key()?;
    if cert_key.thumbprint() != key.kid() {
        return Err(CertificateError::KeyMismatch {
            certificate_thumbprint: chain.thumbprint_sha256().to_owned(),
            certificate_key_thumbprint: cert_key.thumbprint().to_owned(),
            key_thumbprint: key.kid().to_owned(),
        }
        .into());
    }
    chain.check_valid_now()
}

/// A `PopKey` as the `x509-cert` builders' signer: the algorithm
/// identifier for the key's algorithm, its SPKI, and X.509 signature
/// encoding (ECDSA as DER). Keeps the popkey error of a failed signature.
struct X509Signer<'a> {
    key: &'a PopKey,
    spki: Vec<u8>,
    failure: Mutex<Option<Error>>,
}

impl<'a> X509Signer<'a> {
    fn new(key: &'a PopKey) -> Result<Self> {
        Ok(X509Signer {
            key,
            spki: key.public_jwk().to_spki_der()?,
            failure: Mutex::new(None),
        })
    }

    /// The builder's result, with a signing failure reported as popkey's
    /// own error (a TPM or PKCS#11 error stays typed).
    fn finish<T>(&self, r: std::result::Result<T, x509_cert::builder::Error>) -> Result<T> {
        r.map_err(|e| {
            let kept = self.failure.lock().ok().and_then(|mut f| f.take());
            kept.unwrap_or_else(|| build_error(e))
        })
    }
}

/// The key's SPKI, as the builders' verifying key.
#[derive(Clone)]
struct SpkiPublicKey(Vec<u8>);

impl EncodePublicKey for SpkiPublicKey {
    fn to_public_key_der(&self) -> x509_cert::spki::Result<x509_cert::der::Document> {
        Ok(x509_cert::der::Document::try_from(self.0.as_slice())?)
    }
}

impl Keypair for X509Signer<'_> {
    type VerifyingKey = SpkiPublicKey;
    fn verifying_key(&self) -> SpkiPublicKey {
        SpkiPublicKey(self.spki.clone())
    }
}

impl DynSignatureAlgorithmIdentifier for X509Signer<'_> {
    fn signature_algorithm_identifier(&self) -> x509_cert::spki::Result<AlgorithmIdentifierOwned> {
        Ok(match self.key.algorithm() {
            Algorithm::ES256 => AlgorithmIdentifierOwned {
                oid: rfc5912::ECDSA_WITH_SHA_256,
                parameters: None,
            },
            Algorithm::RS256 => AlgorithmIdentifierOwned {
                oid: rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
                parameters: Some(Any::null()),
            },
            Algorithm::PS256 => rsa::pss::get_default_pss_signature_algo_id::<sha2::Sha256>()?,
        })
    }
}

/// An X.509 signature value (ECDSA: DER `ECDSA-Sig-Value`).
#[derive(Clone, Debug)]
struct X509Signature(Vec<u8>);

impl TryFrom<&[u8]> for X509Signature {
    type Error = signature::Error;
    fn try_from(bytes: &[u8]) -> std::result::Result<Self, signature::Error> {
        Ok(X509Signature(bytes.to_vec()))
    }
}

impl From<X509Signature> for Vec<u8> {
    fn from(s: X509Signature) -> Vec<u8> {
        s.0
    }
}

impl SignatureEncoding for X509Signature {
    type Repr = Vec<u8>;
}

impl SignatureBitStringEncoding for X509Signature {
    fn to_bitstring(&self) -> x509_cert::der::Result<BitString> {
        BitString::from_bytes(&self.0)
    }
}

impl Signer<X509Signature> for X509Signer<'_> {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<X509Signature, signature::Error> {
        let keep = |e: Error| {
            let text = e.to_string();
            if let Ok(mut f) = self.failure.lock() {
                *f = Some(e);
            }
            signature::Error::from_source(text)
        };
        let raw = self.key.sign(msg).map_err(keep)?;
        match self.key.algorithm() {
            Algorithm::ES256 => {
                let sig = p256::ecdsa::Signature::from_slice(&raw).map_err(|e| {
                    keep(Error::Backend {
                        backend: "cert",
                        message: format!("the key returned a malformed ECDSA signature: {e}"),
                    })
                })?;
                Ok(X509Signature(sig.to_der().as_bytes().to_vec()))
            }
            Algorithm::RS256 | Algorithm::PS256 => Ok(X509Signature(raw)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alt_names_parse_and_refuse() {
        assert_eq!(
            "IP:127.0.0.1".parse::<AltName>().ok(),
            Some(AltName::Ip("127.0.0.1".parse().unwrap()))
        );
        for bad in ["", "DNS:", "foo:bar", "nocolon", "DNS:\u{e9}"] {
            let e = bad.parse::<AltName>().unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidCertificateName, "{bad}");
        }
    }

    #[test]
    fn subjects_are_checked() {
        assert!(CertificateTemplate::new("").is_err());
        assert!(CertificateTemplate::new("CN").is_err());
        assert!(CertificateTemplate::new("CN=a,O=b").is_ok());
    }

    #[test]
    fn wrong_format_is_typed() {
        let key = PopKey::open("mem:").unwrap();
        let e = CertificateChain::from_pem("not pem", "x").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::MalformedCertificate);
        let csr = CertificateTemplate::new("CN=a")
            .unwrap()
            .csr_pem(&key)
            .unwrap();
        let e = CertificateChain::from_pem(&csr, "x").unwrap_err();
        assert!(e.to_string().contains("CERTIFICATE REQUEST"), "{e}");
    }
}
