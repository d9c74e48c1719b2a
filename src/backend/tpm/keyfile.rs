//! The `TSS2 PRIVATE KEY` PEM file (draft-bottomley-tpm2-keys), the key file
//! tpm2-openssl and tpm2-tss-engine read and write:
//!
//! ```text
//! TPMKey ::= SEQUENCE {
//!     type        OBJECT IDENTIFIER,            -- 2.23.133.10.1.3, a loadable key
//!     emptyAuth   [0] EXPLICIT BOOLEAN OPTIONAL,
//!     policy      [1] EXPLICIT SEQUENCE OF TPMPolicy OPTIONAL,
//!     secret      [2] EXPLICIT OCTET STRING OPTIONAL,
//!     authPolicy  [3] EXPLICIT SEQUENCE OF TPMAuthPolicy OPTIONAL,
//!     description [4] EXPLICIT UTF8String OPTIONAL,
//!     rsaParent   [5] EXPLICIT BOOLEAN OPTIONAL,
//!     parent      INTEGER,                      -- 0x40000001 or 0x81xxxxxx
//!     pubkey      OCTET STRING,                 -- marshalled TPM2B_PUBLIC
//!     privkey     OCTET STRING                  -- marshalled TPM2B_PRIVATE
//! }
//! ```
//!
//! The DER is read and written by the `der` crate (RustCrypto): a strict,
//! well-tested DER codec; nothing here parses ASN.1 by hand.

use std::path::Path;

use der::asn1::{Any, ObjectIdentifier, OctetString};
use der::{Decode, Encode, Sequence, Tag, Tagged};

use crate::error::{Error, Result};

/// The PEM label.
pub(crate) const PEM_LABEL: &str = "TSS2 PRIVATE KEY";
/// `id-loadablekey`: a key blob to TPM2_Load under its parent.
const OID_LOADABLE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.10.1.3");
/// `id-importablekey`: a key wrapped for TPM2_Import.
const OID_IMPORTABLE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.10.1.4");
/// `id-sealedkey`: sealed data, not a signing key.
const OID_SEALED: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.10.1.5");

/// The owner hierarchy; as a parent it means the standard ECC P-256
/// storage primary key.
pub(crate) const OWNER: u32 = 0x4000_0001;

/// Largest key file read (a 4096-bit RSA key file is under 2 KiB).
pub(crate) const MAX_FILE_LEN: u64 = 16 * 1024;

#[derive(Sequence)]
struct TpmKeyAsn1 {
    key_type: ObjectIdentifier,
    /// Read as `Any`: OpenSSL writes TRUE as 0x01, which strict DER (0xFF)
    /// would refuse.
    #[asn1(context_specific = "0", optional = "true")]
    empty_auth: Option<Any>,
    #[asn1(context_specific = "1", optional = "true")]
    policy: Option<Any>,
    #[asn1(context_specific = "2", optional = "true")]
    secret: Option<OctetString>,
    #[asn1(context_specific = "3", optional = "true")]
    auth_policy: Option<Any>,
    #[asn1(context_specific = "4", optional = "true")]
    description: Option<Any>,
    #[asn1(context_specific = "5", optional = "true")]
    rsa_parent: Option<bool>,
    parent: Any,
    pubkey: OctetString,
    privkey: OctetString,
}

/// A decoded loadable key file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyFile {
    /// True when the key's authorization value is empty.
    pub(crate) empty_auth: bool,
    /// The parent: [`OWNER`] or a persistent handle.
    pub(crate) parent: u32,
    /// Marshalled TPM2B_PUBLIC.
    pub(crate) public: Vec<u8>,
    /// Marshalled TPM2B_PRIVATE.
    pub(crate) private: Vec<u8>,
}

impl KeyFile {
    /// Decodes PEM text; `source` names the file in errors.
    pub(crate) fn from_pem(text: &str, source: &Path) -> Result<Self> {
        let malformed = |reason: String| Error::MalformedKey {
            source_name: source.display().to_string(),
            reason,
        };
        let start = text
            .find("-----BEGIN ")
            .ok_or_else(|| malformed("no PEM `-----BEGIN ...-----` line found".into()))?;
        let block = &text[start..];
        let label = block
            .lines()
            .next()
            .and_then(|l| l.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
            .unwrap_or("");
        match label {
            PEM_LABEL => {}
            "TSS KEY BLOB" | "TPM KEY" => {
                return Err(malformed(format!(
                    "`{label}` is a TPM 1.2 key (openssl_tpm_engine); popkey reads TPM 2.0 `{PEM_LABEL}` files"
                )))
            }
            "PRIVATE KEY" | "EC PRIVATE KEY" | "RSA PRIVATE KEY" => {
                return Err(malformed(format!(
                    "`{label}` is a software key, not a TPM key; open it with a `file:` URI"
                )))
            }
            other => {
                return Err(malformed(format!(
                    "PEM label `{}` is not `{PEM_LABEL}`",
                    other.chars().take(40).collect::<String>()
                )))
            }
        }
        let (_, der) =
            crate::pem::decode(block).map_err(|e| malformed(format!("bad PEM encoding: {e}")))?;
        Self::from_der(&der).map_err(malformed)
    }

    fn from_der(der: &[u8]) -> std::result::Result<Self, String> {
        let k = TpmKeyAsn1::from_der(der).map_err(|e| format!("not a TPM key structure: {e}"))?;
        if k.key_type == OID_IMPORTABLE {
            return Err("an importable key (2.23.133.10.1.4) must be imported with TPM2_Import first; popkey loads loadable keys (2.23.133.10.1.3)".into());
        }
        if k.key_type == OID_SEALED {
            return Err("this file holds sealed data (2.23.133.10.1.5), not a signing key".into());
        }
        if k.key_type != OID_LOADABLE {
            return Err(format!(
                "key type {} is not a loadable TPM 2.0 key (2.23.133.10.1.3)",
                k.key_type
            ));
        }
        if k.policy.is_some() || k.auth_policy.is_some() {
            return Err("the key carries an authorization policy, which popkey does not satisfy; create the key without a policy".into());
        }
        if k.secret.is_some() {
            return Err("a loadable key must not carry an import secret".into());
        }
        if k.rsa_parent == Some(true) {
            return Err("the key's parent is the RSA storage primary (rsaParent); popkey uses the ECC P-256 storage primary".into());
        }
        let parent = parse_parent(&k.parent)?;
        let empty_auth = match &k.empty_auth {
            None => false,
            Some(b) if b.tag() == Tag::Boolean && b.value().len() == 1 => b.value()[0] != 0,
            Some(_) => return Err("emptyAuth is not a BOOLEAN".into()),
        };
        Ok(KeyFile {
            empty_auth,
            parent,
            public: k.pubkey.into_bytes(),
            private: k.privkey.into_bytes(),
        })
    }

    /// Encodes as PEM (LF line endings), as tpm2-openssl writes it.
    pub(crate) fn to_pem(&self) -> Result<String> {
        let fail = |e: der::Error| Error::Backend {
            backend: "tpm",
            message: format!("cannot encode the key file: {e}"),
        };
        let value = TpmKeyAsn1 {
            key_type: OID_LOADABLE,
            empty_auth: if self.empty_auth {
                Some(Any::new(Tag::Boolean, [0xffu8]).map_err(fail)?)
            } else {
                None
            },
            policy: None,
            secret: None,
            auth_policy: None,
            description: None,
            rsa_parent: None,
            parent: Any::new(Tag::Integer, integer_bytes(self.parent)).map_err(fail)?,
            pubkey: OctetString::new(self.public.clone()).map_err(fail)?,
            privkey: OctetString::new(self.private.clone()).map_err(fail)?,
        };
        let der = value.to_der().map_err(fail)?;
        der::pem::encode_string(PEM_LABEL, der::pem::LineEnding::LF, &der).map_err(|e| {
            Error::Backend {
                backend: "tpm",
                message: format!("cannot encode the key file as PEM: {e}"),
            }
        })
    }
}

/// Reads the parent INTEGER. Positive values are the rule; a 32-bit
/// handle written as a negative number by a 32-bit writer is accepted too.
fn parse_parent(any: &Any) -> std::result::Result<u32, String> {
    if any.tag() != Tag::Integer {
        return Err("the parent is not an INTEGER".into());
    }
    let bytes = any.value();
    let bytes = match bytes {
        [0, rest @ ..] if !rest.is_empty() => rest,
        b => b,
    };
    if bytes.is_empty() || bytes.len() > 4 {
        return Err("the parent is not a 32-bit TPM handle".into());
    }
    let parent = bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
    match parent {
        // tpm2-openssl writes 0 for "no parent given" and reads it as owner.
        0 | OWNER => Ok(OWNER),
        p if p >> 24 == 0x81 => Ok(p),
        p => Err(format!(
            "parent {p:#010x} is not supported; popkey loads keys under the owner storage primary (0x40000001) or a persistent key (0x81xxxxxx)"
        )),
    }
}

/// Minimal two's-complement big-endian encoding of a non-negative integer.
fn integer_bytes(v: u32) -> Vec<u8> {
    let raw = v.to_be_bytes();
    let first = raw.iter().position(|b| *b != 0).unwrap_or(3);
    let mut out = Vec::with_capacity(5);
    if raw[first] & 0x80 != 0 {
        out.push(0);
    }
    out.extend_from_slice(&raw[first..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written by `openssl genpkey -provider tpm2 -algorithm EC -pkeyopt group:P-256`.
    const OPENSSL_EC: &str = "-----BEGIN TSS2 PRIVATE KEY-----
MIHwBgZngQUKAQOgAwEBAQIEQAAAAQRYAFYAIwALAAYAcgAAABAAEAADABAAIOoJ
KZWeTYvrH9DMFBlLObzVmajgKAJmd6NETrtfPlBhACAVA+rM+jRNKZwGYPyZzSSA
Mlb9m1O4gOH3grupOYV4kASBgAB+ACB40ZcjWvDwHZftsbiG78atuZ1tykCQ7NyN
J73c+OuCPQAQNrr/myeNUx447wVkqPVd9EUmSmj1PPwZ/NyvBTdRYxpJkOhndPoR
PQ3DOQ9kB+YYd+KAnxXVdfx+JFAvq2EjC+SMC3QGtwup66hyYFrvPR6RZc3ZqHNz
2m17
-----END TSS2 PRIVATE KEY-----
";

    #[test]
    fn reads_and_rewrites_tpm2_openssl_files() {
        let k = KeyFile::from_pem(OPENSSL_EC, Path::new("k.pem")).unwrap();
        assert!(k.empty_auth);
        assert_eq!(k.parent, OWNER);
        assert_eq!(k.public.len(), 88);
        assert_eq!(k.private.len(), 128);
        let ours = k.to_pem().unwrap();
        assert_eq!(KeyFile::from_pem(&ours, Path::new("k.pem")).unwrap(), k);
        // The same file but for emptyAuth, which we write as DER TRUE (0xff)
        // where OpenSSL writes 0x01.
        let (_, theirs) = der::pem::decode_vec(OPENSSL_EC.as_bytes()).unwrap();
        let (_, mut mine) = der::pem::decode_vec(ours.as_bytes()).unwrap();
        assert_eq!(mine[15], 0xff);
        mine[15] = 1;
        assert_eq!(mine, theirs);
    }

    #[test]
    fn persistent_parent_round_trips() {
        let k = KeyFile {
            empty_auth: false,
            parent: 0x8100_0001,
            public: vec![0, 1, 2],
            private: vec![0, 1, 3],
        };
        let back = KeyFile::from_pem(&k.to_pem().unwrap(), Path::new("k")).unwrap();
        assert_eq!(back, k);
        assert_eq!(integer_bytes(0x8100_0001), [0, 0x81, 0, 0, 1]);
        assert_eq!(integer_bytes(0x4000_0001), [0x40, 0, 0, 1]);
        assert_eq!(integer_bytes(0), [0]);
    }

    #[test]
    fn foreign_and_malformed_files_are_typed_errors() {
        let importable = OPENSSL_EC.replace("MIHwBgZngQUKAQOg", "MIHwBgZngQUKAQSg");
        for bad in [
            "",
            "hello",
            "-----BEGIN TSS KEY BLOB-----\nAAAA\n-----END TSS KEY BLOB-----\n",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "-----BEGIN TSS2 PRIVATE KEY-----\n!!!!\n-----END TSS2 PRIVATE KEY-----\n",
            "-----BEGIN TSS2 PRIVATE KEY-----\nMAA=\n-----END TSS2 PRIVATE KEY-----\n",
            &importable,
            &OPENSSL_EC[..200],
        ] {
            match KeyFile::from_pem(bad, Path::new("k.pem")) {
                Err(Error::MalformedKey { .. }) => {}
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
