//! One error type for the whole crate, with one nested type per domain.
//!
//! Every variant names something a caller can act on: fix a URI, install a
//! package, pick another algorithm, check a device. Messages never contain
//! secrets (PINs, private keys, access tokens), and they name library
//! options (`CreateOptions::overwrite`, the URI's `pin-source`), never the
//! flags of the `popkey` command line: the CLI adds those itself, by
//! [`Error::kind`].
//!
//! Device errors live in their own feature-gated types, nested in [`Error`]:
//! [`Pkcs11Error`] (feature `pkcs11`), [`TpmError`] (feature `tpm`) and
//! [`ClientError`] (feature `client`). [`Error::kind`] gives a flat,
//! always-available [`ErrorKind`] to match on, in the style of
//! `jsonwebtoken`'s `ErrorKind`.

use std::fmt;
use std::path::PathBuf;

/// The result type used throughout popkey.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in popkey.
///
/// Match on [`Error::kind`] to tell failures apart without depending on
/// which features are on:
///
/// ```
/// use popkey::{ErrorKind, PopKey};
/// let err = PopKey::open("mem:?alg=HS256").unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidUri);
/// assert_eq!(err.kind().as_str(), "invalid_uri");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key URI could not be parsed or names something unsupported.
    #[error("invalid key URI `{uri}`: {reason}")]
    InvalidUri {
        /// The URI as given, with secrets (such as `pin-value`) redacted.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The URI names a backend this build of popkey does not contain.
    #[error("the `{scheme}:` backend is not available in this build of popkey: {hint}")]
    BackendNotBuilt {
        /// The URI scheme (`pkcs11`, `tpm`).
        scheme: &'static str,
        /// What to do about it.
        hint: &'static str,
    },

    /// An algorithm name popkey does not support.
    #[error("unsupported algorithm `{0}`: use ES256, RS256 or PS256")]
    UnsupportedAlgorithm(String),

    /// The key exists but cannot be used with the requested algorithm.
    #[error("key type does not fit the algorithm: {0}")]
    AlgorithmMismatch(String),

    /// `create` was asked to write a key where one already exists.
    #[error("a key already exists at {0}; refusing to overwrite it (set CreateOptions::overwrite to replace it)")]
    KeyExists(String),

    /// No key at the place the URI names.
    #[error("no key found: {0}")]
    KeyNotFound(String),

    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What popkey was doing ("cannot read", "cannot create", ...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: std::io::Error,
    },

    /// A key file exists but is unsafe to use (for example, readable by others).
    #[error("unsafe key file {path}: {reason}")]
    UnsafeKeyFile {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// A PEM or DER key could not be decoded.
    #[error("malformed key in {source_name}: {reason}")]
    MalformedKey {
        /// Where the key came from (a path, or "PEM input").
        source_name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A JSON Web Key is malformed or not acceptable.
    #[error("invalid JWK: {0}")]
    InvalidJwk(String),

    /// An HTTP method, URL, header or claim given for signing is unusable.
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// The public key a backend reports and the key it signs with are not one pair.
    #[error("key pair mismatch: {0}")]
    KeyMismatch(String),

    /// A device key is exportable and the caller did not allow that.
    #[error("refusing to use exportable key {uri}: the device says its private key can leave it; set OpenOptions::allow_exportable if that is acceptable")]
    ExportableKey {
        /// The key's URI (secrets redacted).
        uri: String,
    },

    /// A backend failed to sign or to answer.
    #[error("{backend} backend: {message}")]
    Backend {
        /// Which backend (`mem`, `file`, `pkcs11`, `tpm`, `custom`).
        backend: &'static str,
        /// What went wrong.
        message: String,
    },

    /// A signature did not verify.
    #[error("signature verification failed: {0}")]
    BadSignature(String),

    /// Configuration a client needs is missing or unreadable.
    #[error("client configuration: {0}")]
    Config(String),

    /// A process-wide default key was already installed.
    #[error(
        "a process-wide default key is already installed; rotate it with popkey::rotate_default"
    )]
    DefaultAlreadyInstalled,

    /// A PKCS#11 token, module or call failed.
    #[cfg(feature = "pkcs11")]
    #[cfg_attr(docsrs, doc(cfg(feature = "pkcs11")))]
    #[error(transparent)]
    Pkcs11(#[from] Pkcs11Error),

    /// A TPM could not be reached, or refused a key or its authorization.
    #[cfg(feature = "tpm")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tpm")))]
    #[error(transparent)]
    Tpm(#[from] TpmError),

    /// An HTTP exchange with an authorization server or an API failed.
    #[cfg(feature = "client")]
    #[cfg_attr(docsrs, doc(cfg(feature = "client")))]
    #[error(transparent)]
    Client(#[from] ClientError),

    /// A certificate or certificate request could not be read, made or used.
    #[cfg(feature = "cert")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cert")))]
    #[error(transparent)]
    Certificate(#[from] CertificateError),
}

/// The errors of X.509 certificates and CSRs, nested in [`Error::Certificate`].
#[cfg(feature = "cert")]
#[cfg_attr(docsrs, doc(cfg(feature = "cert")))]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// A certificate (chain) could not be decoded: not PEM `CERTIFICATE`
    /// blocks, or not a valid X.509 certificate.
    #[error("malformed certificate in {source_name}: {reason}")]
    Malformed {
        /// Where the certificate came from (a path, or "PEM input").
        source_name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The certificate's validity period has ended.
    #[error("the certificate `{subject}` expired at {not_after}; make a new one")]
    Expired {
        /// The certificate's subject.
        subject: String,
        /// The end of its validity (RFC 3339, UTC).
        not_after: String,
    },

    /// The certificate's validity period has not begun.
    #[error("the certificate `{subject}` is not valid before {not_before}; check the clock")]
    NotYetValid {
        /// The certificate's subject.
        subject: String,
        /// The start of its validity (RFC 3339, UTC).
        not_before: String,
    },

    /// The certificate holds another public key than the key given to use with it.
    #[error("the certificate (x5t#S256 {certificate_thumbprint}) is for the key with JWK thumbprint {certificate_key_thumbprint}, not for the key {key_thumbprint}")]
    KeyMismatch {
        /// The certificate's SHA-256 thumbprint (`x5t#S256`).
        certificate_thumbprint: String,
        /// The RFC 7638 thumbprint of the public key in the certificate.
        certificate_key_thumbprint: String,
        /// The RFC 7638 thumbprint of the key given.
        key_thumbprint: String,
    },

    /// A subject name or subject alternative name could not be used.
    #[error("invalid certificate name: {0}")]
    InvalidName(String),

    /// The certificate or request could not be encoded or signed.
    #[error("cannot build the certificate: {0}")]
    Build(String),
}

/// The errors of PKCS#11 tokens and modules, nested in [`Error::Pkcs11`].
#[cfg(feature = "pkcs11")]
#[cfg_attr(docsrs, doc(cfg(feature = "pkcs11")))]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs11Error {
    /// A PKCS#11 module (shared library) could not be found, loaded or initialized.
    #[error("PKCS#11 module {path}: {reason}")]
    Module {
        /// The module path (or a description of where popkey looked).
        path: PathBuf,
        /// What is wrong and what to do about it.
        reason: String,
    },

    /// No token, or more than one token, matches the URI's token attributes.
    #[error("PKCS#11 token not found: {0}")]
    TokenNotFound(String),

    /// The token went away (removed, re-initialized, module finalized). popkey
    /// looks for it again on the next call, so this may clear by itself.
    #[error("PKCS#11 token unavailable: {0}")]
    TokenUnavailable(String),

    /// The token rejected the user PIN. popkey never retries a rejected PIN
    /// on its own (retries lock tokens).
    #[error("the token `{token}` rejected the PIN; fix the URI's pin-source / pin-value (popkey does not retry a rejected PIN, to keep the token from locking)")]
    WrongPin {
        /// The token label.
        token: String,
    },

    /// The token's user PIN is locked after too many wrong attempts.
    #[error("the user PIN of token `{token}` is locked; unlock it with the SO PIN (e.g. `pkcs11-tool --init-pin --login --login-type so`)")]
    PinLocked {
        /// The token label.
        token: String,
    },

    /// The PIN could not be obtained (missing or unreadable `pin-source`, or none given).
    #[error("PIN unavailable: {0}")]
    PinUnavailable(String),

    /// More than one key matches the URI.
    #[error("the key URI is ambiguous: {0}")]
    AmbiguousKey(String),

    /// `create` was asked for a PKCS#11 key under a label the token already uses.
    #[error("token `{token}` already holds an object labelled `{label}`; popkey never creates a second key under one label{}", if *replace_asked { " and never deletes keys from a token: delete the old one first (pkcs11-tool --delete-object --type privkey --label ...) or pick another object=" } else { ": pick another object= or open the existing key" })]
    LabelInUse {
        /// The token label.
        token: String,
        /// The `CKA_LABEL` asked for.
        label: String,
        /// True when the caller asked to replace the key
        /// (`CreateOptions::overwrite`).
        replace_asked: bool,
    },

    /// A PKCS#11 call failed.
    #[error("PKCS#11 {function} failed with {code}: {hint}")]
    Call {
        /// The PKCS#11 function (`C_Sign`, `C_GenerateKeyPair`, ...).
        function: String,
        /// The return value (`CKR_...`) or cryptoki error.
        code: String,
        /// What it means here and what to do.
        hint: String,
    },
}

/// The errors of TPMs, nested in [`Error::Tpm`].
#[cfg(feature = "tpm")]
#[cfg_attr(docsrs, doc(cfg(feature = "tpm")))]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    /// A TCTI configuration string (from `tcti=`, `TPM2TOOLS_TCTI` or
    /// `TCTI`) is malformed.
    #[error("invalid TCTI `{tcti}`: {reason}")]
    InvalidTcti {
        /// The TCTI string as given (shortened).
        tcti: String,
        /// What is wrong with it and what is accepted.
        reason: String,
    },

    /// No TPM answered through the TCTI (no device, simulator not running,
    /// connection lost and not regained).
    #[error("cannot reach a TPM through `{tcti}`: {reason}")]
    Unreachable {
        /// The TCTI, in canonical form.
        tcti: String,
        /// What failed, and what to check.
        reason: String,
    },

    /// A TPM key's authorization value is missing or was rejected, or the
    /// TPM is in dictionary-attack lockout.
    #[error("TPM authorization failed for {key}: {reason}")]
    AuthFailed {
        /// The key (its URI, redacted) or the auth file concerned.
        key: String,
        /// What went wrong and what to do.
        reason: String,
    },

    /// A TPM key exists on disk but this TPM cannot load it: made by another
    /// TPM or under another parent, or the owner hierarchy was cleared.
    #[error("the TPM cannot load {key}: {reason}")]
    KeyUnloadable {
        /// The key (its URI, redacted).
        key: String,
        /// Why, and what to do.
        reason: String,
    },
}

/// The errors of HTTP exchanges, nested in [`Error::Client`].
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// An HTTP exchange failed before a usable answer: unreachable host,
    /// TLS failure, timeout.
    #[error("HTTP request to {url} failed: {message}")]
    Http {
        /// The URL (without query).
        url: String,
        /// What failed.
        message: String,
    },

    /// The token endpoint answered with an OAuth error.
    #[error("token endpoint {url} refused the request (HTTP {status}): {error}{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    TokenEndpoint {
        /// The endpoint.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The OAuth `error` code (or a summary when there was none).
        error: String,
        /// The server's `error_description`, if any.
        description: Option<String>,
    },

    /// A server answered with something that is not what the protocol says.
    #[error("unexpected response from {url} (HTTP {status}): {message}")]
    UnexpectedResponse {
        /// The URL (without query).
        url: String,
        /// The HTTP status.
        status: u16,
        /// What was wrong with it.
        message: String,
    },

    /// A certificate-bound (RFC 8705) token the authority returned is not
    /// bound to the client certificate the request was made with: its
    /// `cnf.x5t#S256` is another certificate's thumbprint, or missing.
    #[error("token endpoint {url} returned a token not bound to the client certificate: the certificate's x5t#S256 is {expected}, the token's cnf names {}", actual.as_deref().unwrap_or("no x5t#S256"))]
    TokenNotBound {
        /// The endpoint.
        url: String,
        /// The client certificate's SHA-256 thumbprint (base64url).
        expected: String,
        /// The token's `cnf.x5t#S256`, if it has one.
        actual: Option<String>,
    },
}

/// What kind of failure an [`Error`] is: a flat, `Copy` list of every
/// variant (nested ones included), present whatever features are on, with
/// a stable snake_case name ([`ErrorKind::as_str`]) for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`Error::InvalidUri`].
    InvalidUri,
    /// [`Error::BackendNotBuilt`].
    BackendNotBuilt,
    /// [`Error::UnsupportedAlgorithm`].
    UnsupportedAlgorithm,
    /// [`Error::AlgorithmMismatch`].
    AlgorithmMismatch,
    /// [`Error::KeyExists`].
    KeyExists,
    /// [`Error::KeyNotFound`].
    KeyNotFound,
    /// [`Error::Io`].
    Io,
    /// [`Error::UnsafeKeyFile`].
    UnsafeKeyFile,
    /// [`Error::MalformedKey`].
    MalformedKey,
    /// [`Error::InvalidJwk`].
    InvalidJwk,
    /// [`Error::InvalidRequest`].
    InvalidRequest,
    /// [`Error::KeyMismatch`].
    KeyMismatch,
    /// [`Error::ExportableKey`].
    ExportableKey,
    /// [`Error::Backend`].
    Backend,
    /// [`Error::BadSignature`].
    BadSignature,
    /// [`Error::Config`].
    Config,
    /// [`Error::DefaultAlreadyInstalled`].
    DefaultAlreadyInstalled,
    /// `Pkcs11Error::Module`: a PKCS#11 module could not be loaded or initialized.
    Pkcs11Module,
    /// `Pkcs11Error::TokenNotFound`.
    TokenNotFound,
    /// `Pkcs11Error::TokenUnavailable`.
    TokenUnavailable,
    /// `Pkcs11Error::WrongPin`.
    WrongPin,
    /// `Pkcs11Error::PinLocked`.
    PinLocked,
    /// `Pkcs11Error::PinUnavailable`.
    PinUnavailable,
    /// `Pkcs11Error::AmbiguousKey`.
    AmbiguousKey,
    /// `Pkcs11Error::LabelInUse`.
    LabelInUse,
    /// `Pkcs11Error::Call`: a PKCS#11 function failed.
    Pkcs11Call,
    /// `TpmError::InvalidTcti`.
    InvalidTcti,
    /// `TpmError::Unreachable`.
    TpmUnreachable,
    /// `TpmError::AuthFailed`.
    TpmAuthFailed,
    /// `TpmError::KeyUnloadable`.
    TpmKeyUnloadable,
    /// `ClientError::Http`.
    Http,
    /// `ClientError::TokenEndpoint`.
    TokenEndpoint,
    /// `ClientError::UnexpectedResponse`.
    UnexpectedResponse,
    /// `ClientError::TokenNotBound`.
    TokenNotBound,
    /// `CertificateError::Malformed`.
    MalformedCertificate,
    /// `CertificateError::Expired`.
    CertificateExpired,
    /// `CertificateError::NotYetValid`.
    CertificateNotYetValid,
    /// `CertificateError::KeyMismatch`.
    CertificateKeyMismatch,
    /// `CertificateError::InvalidName`.
    InvalidCertificateName,
    /// `CertificateError::Build`.
    CertificateBuild,
}

impl ErrorKind {
    /// The stable snake_case name (`invalid_uri`, `wrong_pin`,
    /// `tpm_unreachable`, ...). It does not change between releases.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidUri => "invalid_uri",
            ErrorKind::BackendNotBuilt => "backend_not_built",
            ErrorKind::UnsupportedAlgorithm => "unsupported_algorithm",
            ErrorKind::AlgorithmMismatch => "algorithm_mismatch",
            ErrorKind::KeyExists => "key_exists",
            ErrorKind::KeyNotFound => "key_not_found",
            ErrorKind::Io => "io",
            ErrorKind::UnsafeKeyFile => "unsafe_key_file",
            ErrorKind::MalformedKey => "malformed_key",
            ErrorKind::InvalidJwk => "invalid_jwk",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::KeyMismatch => "key_mismatch",
            ErrorKind::ExportableKey => "exportable_key",
            ErrorKind::Backend => "backend",
            ErrorKind::BadSignature => "bad_signature",
            ErrorKind::Config => "config",
            ErrorKind::DefaultAlreadyInstalled => "default_already_installed",
            ErrorKind::Pkcs11Module => "pkcs11_module",
            ErrorKind::TokenNotFound => "token_not_found",
            ErrorKind::TokenUnavailable => "token_unavailable",
            ErrorKind::WrongPin => "wrong_pin",
            ErrorKind::PinLocked => "pin_locked",
            ErrorKind::PinUnavailable => "pin_unavailable",
            ErrorKind::AmbiguousKey => "ambiguous_key",
            ErrorKind::LabelInUse => "label_in_use",
            ErrorKind::Pkcs11Call => "pkcs11_call",
            ErrorKind::InvalidTcti => "invalid_tcti",
            ErrorKind::TpmUnreachable => "tpm_unreachable",
            ErrorKind::TpmAuthFailed => "tpm_auth_failed",
            ErrorKind::TpmKeyUnloadable => "tpm_key_unloadable",
            ErrorKind::Http => "http",
            ErrorKind::TokenEndpoint => "token_endpoint",
            ErrorKind::UnexpectedResponse => "unexpected_response",
            ErrorKind::TokenNotBound => "token_not_bound",
            ErrorKind::MalformedCertificate => "malformed_certificate",
            ErrorKind::CertificateExpired => "certificate_expired",
            ErrorKind::CertificateNotYetValid => "certificate_not_yet_valid",
            ErrorKind::CertificateKeyMismatch => "certificate_key_mismatch",
            ErrorKind::InvalidCertificateName => "invalid_certificate_name",
            ErrorKind::CertificateBuild => "certificate_build",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidUri { .. } => ErrorKind::InvalidUri,
            Error::BackendNotBuilt { .. } => ErrorKind::BackendNotBuilt,
            Error::UnsupportedAlgorithm(_) => ErrorKind::UnsupportedAlgorithm,
            Error::AlgorithmMismatch(_) => ErrorKind::AlgorithmMismatch,
            Error::KeyExists(_) => ErrorKind::KeyExists,
            Error::KeyNotFound(_) => ErrorKind::KeyNotFound,
            Error::Io { .. } => ErrorKind::Io,
            Error::UnsafeKeyFile { .. } => ErrorKind::UnsafeKeyFile,
            Error::MalformedKey { .. } => ErrorKind::MalformedKey,
            Error::InvalidJwk(_) => ErrorKind::InvalidJwk,
            Error::InvalidRequest(_) => ErrorKind::InvalidRequest,
            Error::KeyMismatch(_) => ErrorKind::KeyMismatch,
            Error::ExportableKey { .. } => ErrorKind::ExportableKey,
            Error::Backend { .. } => ErrorKind::Backend,
            Error::BadSignature(_) => ErrorKind::BadSignature,
            Error::Config(_) => ErrorKind::Config,
            Error::DefaultAlreadyInstalled => ErrorKind::DefaultAlreadyInstalled,
            #[cfg(feature = "pkcs11")]
            Error::Pkcs11(e) => e.kind(),
            #[cfg(feature = "tpm")]
            Error::Tpm(e) => e.kind(),
            #[cfg(feature = "client")]
            Error::Client(e) => e.kind(),
            #[cfg(feature = "cert")]
            Error::Certificate(e) => e.kind(),
        }
    }

    pub(crate) fn uri(uri: &str, reason: impl Into<String>) -> Self {
        Error::InvalidUri {
            uri: crate::text::redact(uri),
            reason: reason.into(),
        }
    }

    pub(crate) fn request(reason: impl Into<String>) -> Self {
        Error::InvalidRequest(reason.into())
    }

    pub(crate) fn jwk(reason: impl Into<String>) -> Self {
        Error::InvalidJwk(reason.into())
    }

    /// [`ClientError::Http`].
    #[cfg(feature = "client")]
    pub(crate) fn http(url: impl Into<String>, message: impl Into<String>) -> Self {
        ClientError::Http {
            url: url.into(),
            message: message.into(),
        }
        .into()
    }

    /// [`ClientError::TokenEndpoint`].
    #[cfg(feature = "client")]
    pub(crate) fn token_endpoint(
        url: impl Into<String>,
        status: u16,
        error: impl Into<String>,
        description: Option<String>,
    ) -> Self {
        ClientError::TokenEndpoint {
            url: url.into(),
            status,
            error: error.into(),
            description,
        }
        .into()
    }

    /// [`ClientError::UnexpectedResponse`].
    #[cfg(feature = "client")]
    pub(crate) fn unexpected_response(
        url: impl Into<String>,
        status: u16,
        message: impl Into<String>,
    ) -> Self {
        ClientError::UnexpectedResponse {
            url: url.into(),
            status,
            message: message.into(),
        }
        .into()
    }
}

#[cfg(feature = "pkcs11")]
impl Pkcs11Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Pkcs11Error::Module { .. } => ErrorKind::Pkcs11Module,
            Pkcs11Error::TokenNotFound(_) => ErrorKind::TokenNotFound,
            Pkcs11Error::TokenUnavailable(_) => ErrorKind::TokenUnavailable,
            Pkcs11Error::WrongPin { .. } => ErrorKind::WrongPin,
            Pkcs11Error::PinLocked { .. } => ErrorKind::PinLocked,
            Pkcs11Error::PinUnavailable(_) => ErrorKind::PinUnavailable,
            Pkcs11Error::AmbiguousKey(_) => ErrorKind::AmbiguousKey,
            Pkcs11Error::LabelInUse { .. } => ErrorKind::LabelInUse,
            Pkcs11Error::Call { .. } => ErrorKind::Pkcs11Call,
        }
    }
}

#[cfg(feature = "tpm")]
impl TpmError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TpmError::InvalidTcti { .. } => ErrorKind::InvalidTcti,
            TpmError::Unreachable { .. } => ErrorKind::TpmUnreachable,
            TpmError::AuthFailed { .. } => ErrorKind::TpmAuthFailed,
            TpmError::KeyUnloadable { .. } => ErrorKind::TpmKeyUnloadable,
        }
    }
}

#[cfg(feature = "client")]
impl ClientError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Http { .. } => ErrorKind::Http,
            ClientError::TokenEndpoint { .. } => ErrorKind::TokenEndpoint,
            ClientError::UnexpectedResponse { .. } => ErrorKind::UnexpectedResponse,
            ClientError::TokenNotBound { .. } => ErrorKind::TokenNotBound,
        }
    }
}

#[cfg(feature = "cert")]
impl CertificateError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CertificateError::Malformed { .. } => ErrorKind::MalformedCertificate,
            CertificateError::Expired { .. } => ErrorKind::CertificateExpired,
            CertificateError::NotYetValid { .. } => ErrorKind::CertificateNotYetValid,
            CertificateError::KeyMismatch { .. } => ErrorKind::CertificateKeyMismatch,
            CertificateError::InvalidName(_) => ErrorKind::InvalidCertificateName,
            CertificateError::Build(_) => ErrorKind::CertificateBuild,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_stable_snake_case_names() {
        let e = Error::KeyExists("/k.pem".into());
        assert_eq!(e.kind(), ErrorKind::KeyExists);
        assert_eq!(e.kind().to_string(), "key_exists");
        assert!(!e.to_string().contains("--"), "{e}");
    }

    #[cfg(feature = "pkcs11")]
    #[test]
    fn nested_errors_keep_their_message_and_kind() {
        let e: Error = Pkcs11Error::WrongPin { token: "t".into() }.into();
        assert_eq!(e.kind(), ErrorKind::WrongPin);
        assert!(e.to_string().starts_with("the token `t` rejected the PIN"));
    }
}
