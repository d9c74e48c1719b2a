//! TLS for popkey's HTTP clients: which servers to trust, and (feature
//! `mtls`) the client certificate to present.
//!
//! By default a client trusts the platform's certificate store (on Linux
//! the distribution's CA bundle, read through `rustls-native-certs`; the
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` variables are honoured). When the
//! platform store holds no certificate at all (a minimal container without
//! `ca-certificates`), the Mozilla roots built into popkey stand in.
//! [`TlsConfig::add_ca_pem_file`] adds trust anchors for an authority or
//! API behind a private CA. Certificate verification is always on; there
//! is no switch to turn it off.
//!
//! ```no_run
//! use popkey::client::{PopClient, TlsConfig, TokenClient};
//! # fn main() -> popkey::Result<()> {
//! let tls = TlsConfig::new().add_ca_pem_file("/etc/popkey/corp-ca.pem")?;
//! let tokens = TokenClient::with_tls(&tls)?;
//! # let _ = tokens; Ok(()) }
//! ```

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use crate::error::{Error, Result};

/// The most bytes a CA file may have.
const MAX_CA_FILE: u64 = 4 << 20;

/// TLS settings for popkey's clients: trust anchors and, with feature
/// `mtls`, a client identity.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    platform_roots: bool,
    extra_roots: Vec<CertificateDer<'static>>,
    #[cfg(feature = "mtls")]
    identity: Option<crate::tls::ClientIdentity>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl TlsConfig {
    /// Trust the platform's certificate store; no client certificate.
    pub fn new() -> Self {
        TlsConfig {
            platform_roots: true,
            extra_roots: Vec::new(),
            #[cfg(feature = "mtls")]
            identity: None,
        }
    }

    /// Also trust the PEM `CERTIFICATE`s in the file at `path` (a private
    /// or enterprise CA).
    pub fn add_ca_pem_file(self, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |source| Error::Io {
            action: "cannot read the CA file",
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.len() > MAX_CA_FILE {
            return Err(Error::Config(format!(
                "CA file {} is {} bytes, more than the {MAX_CA_FILE} a CA bundle may have",
                path.display(),
                meta.len()
            )));
        }
        let bytes = std::fs::read(path).map_err(io)?;
        self.add_ca_pem(&bytes, &path.display().to_string())
    }

    /// Also trust the PEM `CERTIFICATE`s in `pem`; `source_name` names it
    /// in errors.
    pub fn add_ca_pem(mut self, pem: &[u8], source_name: &str) -> Result<Self> {
        let mut found = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| {
                Error::Config(format!(
                    "CA certificates in {source_name}: not valid PEM: {e}"
                ))
            })?;
            self = self.add_ca_der(cert.as_ref())?;
            found += 1;
        }
        if found == 0 {
            return Err(Error::Config(format!(
                "CA certificates in {source_name}: no PEM `CERTIFICATE` block"
            )));
        }
        Ok(self)
    }

    /// Also trust one DER certificate.
    pub fn add_ca_der(mut self, der: &[u8]) -> Result<Self> {
        let cert = CertificateDer::from(der.to_vec());
        let mut probe = RootCertStore::empty();
        probe.add(cert.clone()).map_err(|e| {
            Error::Config(format!("not a usable CA certificate (trust anchor): {e}"))
        })?;
        self.extra_roots.push(cert);
        Ok(self)
    }

    /// Trust only the anchors added here, not the platform store (for
    /// deployments that pin their private CA). Verification stays on.
    pub fn without_platform_roots(mut self) -> Self {
        self.platform_roots = false;
        self
    }

    /// Present `identity`'s certificate and sign handshakes with its key
    /// (mutual TLS, RFC 8705).
    #[cfg(feature = "mtls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mtls")))]
    pub fn client_identity(mut self, identity: crate::tls::ClientIdentity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The client identity, if any.
    #[cfg(feature = "mtls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mtls")))]
    pub fn identity(&self) -> Option<&crate::tls::ClientIdentity> {
        self.identity.as_ref()
    }

    /// The trust anchors: the platform's (unless turned off) and the added
    /// ones.
    fn root_store(&self) -> Result<RootCertStore> {
        let mut roots = if self.platform_roots {
            platform_roots().as_ref().clone()
        } else {
            RootCertStore::empty()
        };
        for cert in &self.extra_roots {
            roots
                .add(cert.clone())
                .map_err(|e| Error::Config(format!("not a usable CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(Error::Config(
                "no trust anchors: add a CA certificate (TlsConfig::add_ca_pem_file)".into(),
            ));
        }
        Ok(roots)
    }

    /// A rustls client configuration (ring provider; ALPN h2 and
    /// http/1.1), for `reqwest::ClientBuilder::use_preconfigured_tls` or
    /// your own rustls use.
    pub fn rustls_client_config(&self) -> Result<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls_err = |e: rustls::Error| Error::Config(format!("TLS configuration: {e}"));
        #[cfg(feature = "mtls")]
        let versions: &[&rustls::SupportedProtocolVersion] =
            match self.identity.as_ref().map(|i| i.needs_tls12()) {
                Some(true) => &[&rustls::version::TLS12],
                _ => rustls::DEFAULT_VERSIONS,
            };
        #[cfg(not(feature = "mtls"))]
        let versions = rustls::DEFAULT_VERSIONS;
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(tls_err)?
            .with_root_certificates(self.root_store()?);
        #[cfg(feature = "mtls")]
        let mut config = match &self.identity {
            Some(identity) => builder.with_client_cert_resolver(identity.cert_resolver()),
            None => builder.with_no_client_auth(),
        };
        #[cfg(not(feature = "mtls"))]
        let mut config = builder.with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    /// A `reqwest::Client` with these TLS settings and popkey's defaults
    /// (connect and request timeouts, no automatic redirects: a proof is
    /// bound to one URL).
    pub fn http_client(&self) -> Result<reqwest::Client> {
        reqwest::Client::builder()
            .use_preconfigured_tls(self.rustls_client_config()?)
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(super::DEFAULT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("popkey/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))
    }
}

/// The platform's trust anchors, read once per process; the built-in
/// Mozilla roots when the platform has none.
fn platform_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            for e in &loaded.errors {
                tracing::warn!(error = %e, "reading the platform certificate store");
            }
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
            if ignored > 0 {
                tracing::debug!(ignored, "platform certificates rustls cannot use");
            }
            if added == 0 {
                tracing::warn!(
                    "the platform certificate store is empty; trusting popkey's built-in Mozilla roots"
                );
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
            Arc::new(roots)
        })
        .clone()
}
