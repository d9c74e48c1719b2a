//! `popkey cert`: certificate signing requests and self-signed certificates
//! signed by a popkey key (the key signs; it never leaves its device).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use popkey::cert::{check_certificate_matches_key, AltName, CertificateChain, CertificateTemplate};
use popkey::PopCryptoProvider;
use serde_json::json;

use crate::KeyArg;

#[derive(Subcommand)]
pub(crate) enum CertCommand {
    /// Print a PKCS#10 certificate signing request (PEM) signed by the key.
    Csr(CsrArgs),
    /// Print a self-signed certificate (PEM) for the key, signed by the key.
    SelfSigned(SelfSignedArgs),
    /// Describe a certificate (PEM) as JSON: subject, validity, x5t#S256,
    /// the thumbprint of its key; with --key, check it is for that key.
    Show(ShowArgs),
}

#[derive(Args)]
pub(crate) struct NameArgs {
    /// The subject, an RFC 4514 name: 'CN=orders-daemon,O=Example'.
    #[arg(long)]
    subject: String,
    /// A subject alternative name: DNS:host, IP:addr, URI:uri or
    /// email:addr. Repeatable.
    #[arg(long = "san", value_name = "TYPE:VALUE")]
    sans: Vec<String>,
    /// Write the PEM to this file instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

impl NameArgs {
    fn template(&self) -> popkey::Result<CertificateTemplate> {
        let mut t = CertificateTemplate::new(&self.subject)?;
        for san in &self.sans {
            t = t.alt_name(san.parse::<AltName>()?);
        }
        Ok(t)
    }

    fn emit(&self, pem: String) -> Result<String, String> {
        match &self.out {
            Some(path) => {
                std::fs::write(path, pem)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                Ok(String::new())
            }
            None => Ok(pem.trim_end().to_owned()),
        }
    }
}

#[derive(Args)]
pub(crate) struct CsrArgs {
    #[command(flatten)]
    key: KeyArg,
    #[command(flatten)]
    name: NameArgs,
}

#[derive(Args)]
pub(crate) struct SelfSignedArgs {
    #[command(flatten)]
    key: KeyArg,
    #[command(flatten)]
    name: NameArgs,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36500))]
    days: u32,
}

#[derive(Args)]
pub(crate) struct ShowArgs {
    /// The certificate (chain), PEM.
    #[arg(long)]
    cert: PathBuf,
    /// Check that the certificate is for this key and valid now.
    #[arg(long, env = "POPKEY_KEY", hide_env_values = true)]
    key: Option<String>,
}

pub(crate) fn run(cmd: &CertCommand) -> Result<String, String> {
    let s = |e: popkey::Error| crate::cli_message(&e);
    match cmd {
        CertCommand::Csr(a) => {
            let template = a.name.template().map_err(s)?;
            let key = a.key.open().map_err(s)?;
            a.name.emit(template.csr_pem(&key).map_err(s)?)
        }
        CertCommand::SelfSigned(a) => {
            let template = a.name.template().map_err(s)?.validity_days(a.days);
            let key = a.key.open().map_err(s)?;
            a.name.emit(template.self_signed(&key).map_err(s)?.to_pem())
        }
        CertCommand::Show(a) => {
            let chain = CertificateChain::from_pem_file(&a.cert).map_err(s)?;
            let public = chain.public_key().map_err(s)?;
            let unix = |t: std::time::SystemTime| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            };
            let mut out = json!({
                "subject": chain.subject(),
                "not_before": unix(chain.not_before()),
                "not_after": unix(chain.not_after()),
                "x5t#S256": chain.thumbprint_sha256(),
                "key_thumbprint": public.thumbprint(),
                "chain_length": chain.ders().len(),
            });
            if let Some(uri) = &a.key {
                let key = popkey::PopKey::open(uri).map_err(s)?;
                check_certificate_matches_key(&chain, &key).map_err(s)?;
                out["key"] =
                    json!({ "uri": key.uri(), "alg": key.algorithm().as_str(), "matches": true });
            }
            Ok(out.to_string())
        }
    }
}
