//! One error type for the whole crate.
//!
//! Every variant names something a caller can act on: fix a URI, install a
//! package, pick another algorithm, check a device. Messages never contain
//! secrets (PINs, private keys, access tokens).

use std::path::PathBuf;

/// The result type used throughout popkey.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in popkey.
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
    #[error("a key already exists at {0}; refusing to overwrite it (pass --force / CreateOptions::overwrite to replace it)")]
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

    /// A hardware key is exportable and the caller did not allow that.
    #[error("refusing to use exportable key {uri}: the device says its private key can leave it; pass --allow-exportable (OpenOptions::allow_exportable) if that is acceptable")]
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

    /// Configuration a client needs is missing or unreadable.
    #[error("client configuration: {0}")]
    Config(String),

    /// A process-wide default key was already installed.
    #[error(
        "a process-wide default key is already installed; rotate it with popkey::rotate_default"
    )]
    DefaultAlreadyInstalled,

    /// A PKCS#11 module (shared library) could not be found, loaded or initialized.
    #[error("PKCS#11 module {path}: {reason}")]
    Pkcs11Module {
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
    #[error("the token `{token}` rejected the PIN; fix pin-source / pin-value (popkey does not retry a rejected PIN, to keep the token from locking)")]
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
        /// True when the caller asked to replace the key (`--force`).
        replace_asked: bool,
    },

    /// A PKCS#11 call failed.
    #[error("PKCS#11 {function} failed with {code}: {hint}")]
    Pkcs11 {
        /// The PKCS#11 function (`C_Sign`, `C_GenerateKeyPair`, ...).
        function: String,
        /// The return value (`CKR_...`) or cryptoki error.
        code: String,
        /// What it means here and what to do.
        hint: String,
    },

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
    TpmUnreachable {
        /// The TCTI, in canonical form.
        tcti: String,
        /// What failed, and what to check.
        reason: String,
    },

    /// A TPM key's authorization value is missing or was rejected, or the
    /// TPM is in dictionary-attack lockout.
    #[error("TPM authorization failed for {key}: {reason}")]
    TpmAuthFailed {
        /// The key (its URI, redacted) or the auth file concerned.
        key: String,
        /// What went wrong and what to do.
        reason: String,
    },

    /// A TPM key exists on disk but this TPM cannot load it: made by another
    /// TPM or under another parent, or the owner hierarchy was cleared.
    #[error("the TPM cannot load {key}: {reason}")]
    TpmKeyUnloadable {
        /// The key (its URI, redacted).
        key: String,
        /// Why, and what to do.
        reason: String,
    },
}

impl Error {
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
}
