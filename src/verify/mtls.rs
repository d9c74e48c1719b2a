//! Certificate-bound access tokens (RFC 8705 §3), the API side: the token's
//! `cnf.x5t#S256` must be the SHA-256 thumbprint of the client certificate
//! the request came with.
//!
//! The certificate comes from the TLS connection itself (the DER leaf your
//! TLS server hands you: [`ClientCertificate::from_der`]) or, behind a
//! TLS-terminating proxy, from a header the proxy sets:
//!
//! * RFC 9440 `Client-Cert: :<base64 DER>:` ([`ClientCertificate::from_client_cert_header`]);
//! * nginx's `$ssl_client_escaped_cert`, the URL-escaped PEM
//!   ([`ClientCertificate::from_nginx_escaped_pem`]), e.g.
//!   `proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;` with
//!   `ssl_verify_client optional_no_ca;` (the binding to the token is what
//!   authenticates the certificate; no CA is needed).
//!
//! **Who may set such a header is the caller's decision.** Anyone can send
//! `Client-Cert`; it means something only when the request came from your
//! proxy, and the proxy must overwrite (never pass through) a client's own
//! copy. This module parses and checks; it does not know the peer address.
//! Take the header only from configured proxy addresses, for example with
//! [`TrustedProxies`] — or let the server module that owns the connection
//! do it.
//!
//! ```
//! use popkey::verify::mtls::{check_binding, ClientCertificate};
//! # fn demo(claims: &serde_json::Map<String, serde_json::Value>, header: Option<&str>)
//! #     -> Result<(), popkey::verify::VerifyError> {
//! // `claims`: the access token's claims, already validated (signature,
//! // issuer, audience, expiry) by an AccessTokenValidator.
//! let cert = header.map(ClientCertificate::from_client_cert_header).transpose()?;
//! check_binding(claims, cert.as_ref())?; // KeyNotBound -> 401 invalid_token
//! # Ok(()) }
//! ```
//!
//! Failures are [`VerifyError`]s: [`ErrorKind::KeyNotBound`] when the token
//! is not bound to this certificate (or to none), and
//! [`ErrorKind::ClientCertificateMissing`] /
//! [`ErrorKind::ClientCertificateMalformed`] when there is no usable
//! certificate. All three are token problems (`invalid_token`, RFC 8705
//! §3 and RFC 6750): answer 401 with [`bearer_challenge`].

use std::fmt;
use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{Map, Value};

use super::error::{err, ErrorKind, VerifyError};
use super::token::AccessTokenValidator;

/// The largest DER certificate accepted (16 KiB; real client certificates
/// are 0.5–3 KiB).
pub const MAX_CERTIFICATE_LEN: usize = 16 * 1024;

/// The largest header value accepted before decoding (96 KiB: the PEM of a
/// [`MAX_CERTIFICATE_LEN`] certificate with every character %-escaped).
pub const MAX_HEADER_LEN: usize = 96 * 1024;

/// A client certificate, DER, checked to be one well-formed X.509
/// `Certificate` SEQUENCE (tbsCertificate, signatureAlgorithm,
/// signatureValue) of bounded size. Its signature and validity are not
/// checked: under RFC 8705 the token's binding is what makes it mean
/// something.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    der: Vec<u8>,
}

impl ClientCertificate {
    /// A certificate from its DER bytes (as a TLS server reports the
    /// peer's leaf certificate).
    pub fn from_der(der: &[u8]) -> Result<Self, VerifyError> {
        if der.is_empty() {
            return Err(missing("the client certificate is empty"));
        }
        if der.len() > MAX_CERTIFICATE_LEN {
            return Err(malformed(format!(
                "{} bytes is too large for a client certificate (at most {MAX_CERTIFICATE_LEN})",
                der.len()
            )));
        }
        check_certificate_shape(der)
            .map_err(|m| malformed(format!("not an X.509 certificate: {m}")))?;
        Ok(ClientCertificate { der: der.to_vec() })
    }

    /// A certificate from one PEM `CERTIFICATE` block.
    pub fn from_pem(pem: &str) -> Result<Self, VerifyError> {
        if pem.len() > MAX_HEADER_LEN {
            return Err(malformed("the PEM certificate is too large"));
        }
        if pem.trim().is_empty() {
            return Err(missing("the PEM certificate is empty"));
        }
        let (label, der) = crate::pem::decode(pem).map_err(malformed)?;
        if label != "CERTIFICATE" {
            return Err(malformed(format!(
                "the PEM block is `{}`, not `CERTIFICATE`",
                crate::text::clip(&label, 40)
            )));
        }
        Self::from_der(&der)
    }

    /// A certificate from an RFC 9440 `Client-Cert` header value: a
    /// structured-field byte sequence, `:` + base64 DER + `:` (parameters
    /// after it are ignored, as RFC 8941 asks for unknown ones).
    pub fn from_client_cert_header(value: &str) -> Result<Self, VerifyError> {
        if value.len() > MAX_HEADER_LEN {
            return Err(malformed("the Client-Cert header is too large"));
        }
        let value = value.trim_matches(|c| c == ' ' || c == '\t');
        if value.is_empty() {
            return Err(missing("the Client-Cert header is empty"));
        }
        let inner = value
            .strip_prefix(':')
            .and_then(|rest| rest.split_once(':'))
            .and_then(|(b64, params)| (params.is_empty() || params.starts_with(';')).then_some(b64))
            .ok_or_else(|| {
                malformed("the Client-Cert header is not a byte sequence `:base64:` (RFC 9440)")
            })?;
        let der = STANDARD
            .decode(inner)
            .map_err(|e| malformed(format!("bad base64 in the Client-Cert header: {e}")))?;
        Self::from_der(&der)
    }

    /// A certificate from nginx's `$ssl_client_escaped_cert`: the PEM
    /// certificate, URL-escaped (`%0A` for line breaks, `%2B` for `+`, …).
    /// Only `%XX` escapes are decoded; `+` stays `+`.
    pub fn from_nginx_escaped_pem(value: &str) -> Result<Self, VerifyError> {
        if value.len() > MAX_HEADER_LEN {
            return Err(malformed("the escaped certificate header is too large"));
        }
        let value = value.trim();
        if value.is_empty() {
            return Err(missing("the escaped certificate header is empty"));
        }
        let bytes = percent_decode(value.as_bytes())
            .ok_or_else(|| malformed("a bad %-escape in the escaped certificate"))?;
        let pem = std::str::from_utf8(&bytes)
            .map_err(|_| malformed("the unescaped certificate is not text (PEM)"))?;
        Self::from_pem(pem)
    }

    /// The DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The RFC 8705 `x5t#S256` value: base64url(SHA-256(DER)), the same as
    /// `openssl x509 -fingerprint -sha256` in another encoding.
    pub fn thumbprint(&self) -> String {
        certificate_thumbprint(&self.der)
    }
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("x5t#S256", &self.thumbprint())
            .field("len", &self.der.len())
            .finish()
    }
}

/// base64url(SHA-256(`der`)), the RFC 8705 `x5t#S256` of a DER certificate.
pub fn certificate_thumbprint(der: &[u8]) -> String {
    super::token::certificate_thumbprint(der)
}

/// Checks that the access-token claims `claims` (validated already) carry
/// `cnf.x5t#S256` equal to the thumbprint of `certificate`, the client
/// certificate of this request (`None` when it came without one). The
/// comparison is constant-time.
///
/// Errors: [`ErrorKind::ClientCertificateMissing`] without a certificate,
/// [`ErrorKind::KeyNotBound`] when the token has no `cnf.x5t#S256` or names
/// another certificate.
pub fn check_binding(
    claims: &Map<String, Value>,
    certificate: Option<&ClientCertificate>,
) -> Result<(), VerifyError> {
    super::token::bound_certificate_thumbprint(claims)?;
    let certificate = certificate.ok_or_else(|| {
        missing("the access token is certificate-bound and the request came without a client certificate")
    })?;
    super::token::check_thumbprint_binding(claims, &certificate.thumbprint())
}

/// Validates `access_token` with `validator` (signature, issuer, audience,
/// expiry at `now`, Unix seconds) and then its binding to `certificate`;
/// returns the token's claims.
pub fn verify_bound_token(
    validator: &dyn AccessTokenValidator,
    access_token: &str,
    certificate: Option<&ClientCertificate>,
    now: u64,
) -> Result<Map<String, Value>, VerifyError> {
    let claims = validator.validate(access_token, now)?;
    check_binding(&claims, certificate)?;
    Ok(claims)
}

/// The `WWW-Authenticate` value for a refused certificate-bound request
/// (RFC 6750 §3 with RFC 8705 §3): `Bearer error="invalid_token",
/// error_description="…"` for token problems (every failure this module
/// produces), `Bearer error="invalid_request"` otherwise.
pub fn bearer_challenge(error: &VerifyError) -> String {
    let code = if error.kind().is_token_problem() {
        "invalid_token"
    } else {
        "invalid_request"
    };
    let mut description = String::with_capacity(error.message().len() + 32);
    for c in error.to_string().chars().take(300) {
        match c {
            '"' | '\\' => {
                description.push('\\');
                description.push(c);
            }
            c if c == ' ' || c.is_ascii_graphic() => description.push(c),
            _ => description.push('?'),
        }
    }
    format!("Bearer error=\"{code}\", error_description=\"{description}\"")
}

/// The addresses of the proxies whose certificate header is believed.
///
/// A header from any other peer is ignored (the request then counts as
/// having no certificate), so a client that talks to the API directly
/// cannot claim someone else's certificate. IPv4-mapped IPv6 peers
/// (`::ffff:127.0.0.1`) match their IPv4 address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    addresses: Vec<IpAddr>,
}

/// Which header format a proxy uses for the client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertificateHeader {
    /// RFC 9440 `Client-Cert: :base64-DER:`.
    ClientCert,
    /// nginx's `$ssl_client_escaped_cert` (URL-escaped PEM), in a header
    /// of your choice.
    NginxEscapedPem,
}

impl TrustedProxies {
    /// Trust the header from these addresses only.
    pub fn new(addresses: impl IntoIterator<Item = IpAddr>) -> Self {
        TrustedProxies {
            addresses: addresses.into_iter().map(canonical).collect(),
        }
    }

    /// True when `peer` is one of the proxies.
    pub fn is_trusted(&self, peer: IpAddr) -> bool {
        self.addresses.contains(&canonical(peer))
    }

    /// The client certificate a trusted proxy forwarded: `values` are all
    /// values of the certificate header in the request from `peer`.
    ///
    /// `Ok(None)` when `peer` is not a trusted proxy (the header is
    /// ignored) or when the proxy sent no (or an empty) header: the client
    /// presented no certificate. Several values are refused as malformed.
    pub fn client_certificate(
        &self,
        peer: IpAddr,
        format: CertificateHeader,
        values: &[&str],
    ) -> Result<Option<ClientCertificate>, VerifyError> {
        if !self.is_trusted(peer) {
            return Ok(None);
        }
        let value = match values {
            [] => return Ok(None),
            [v] if v.trim().is_empty() => return Ok(None),
            [v] => *v,
            _ => {
                return Err(malformed(
                    "the proxy sent the client certificate header more than once",
                ))
            }
        };
        match format {
            CertificateHeader::ClientCert => ClientCertificate::from_client_cert_header(value),
            CertificateHeader::NginxEscapedPem => ClientCertificate::from_nginx_escaped_pem(value),
        }
        .map(Some)
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn missing(message: impl Into<String>) -> VerifyError {
    err(ErrorKind::ClientCertificateMissing, message)
}

fn malformed(message: impl Into<String>) -> VerifyError {
    err(ErrorKind::ClientCertificateMalformed, message)
}

/// `%XX` escapes decoded; anything else passed through.
fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let hex = input.get(i + 1..i + 3)?;
            let hi = (hex[0] as char).to_digit(16)?;
            let lo = (hex[1] as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    Some(out)
}

/// One DER TLV at the start of `input`: (tag, contents, rest).
fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let (&tag, rest) = input.split_first().ok_or("truncated")?;
    if tag & 0x1f == 0x1f {
        return Err("multi-byte tags are not expected here".into());
    }
    let (&first, rest) = rest.split_first().ok_or("truncated length")?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 3 || rest.len() < n {
            return Err("unsupported or truncated length".into());
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | b as usize;
        }
        // DER: the shortest length form.
        if len < 0x80 || rest[0] == 0 {
            return Err("a length not in DER's shortest form".into());
        }
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err("a length past the end of the input".into());
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm
/// SEQUENCE, signatureValue BIT STRING }` and nothing after it.
fn check_certificate_shape(der: &[u8]) -> Result<(), String> {
    let (tag, body, rest) = tlv(der)?;
    if tag != 0x30 || !rest.is_empty() {
        return Err("not one DER SEQUENCE".into());
    }
    let (t1, _, body) = tlv(body)?;
    let (t2, _, body) = tlv(body)?;
    let (t3, _, body) = tlv(body)?;
    if (t1, t2, t3) != (0x30, 0x30, 0x03) || !body.is_empty() {
        return Err("not tbsCertificate, signatureAlgorithm, signatureValue".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A self-signed certificate made by openssl; (DER, PEM, openssl's
    /// SHA-256 fingerprint as raw bytes).
    fn openssl_certificate(dir: &std::path::Path, name: &str) -> (Vec<u8>, String, Vec<u8>) {
        let key = dir.join(format!("{name}.key"));
        let pem = dir.join(format!("{name}.pem"));
        let der = dir.join(format!("{name}.der"));
        let run = |args: &[&str]| {
            let out = Command::new("openssl").args(args).output().unwrap();
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            pem.to_str().unwrap(),
            "-subj",
            &format!("/CN={name}"),
            "-days",
            "1",
        ]);
        run(&[
            "x509",
            "-in",
            pem.to_str().unwrap(),
            "-outform",
            "DER",
            "-out",
            der.to_str().unwrap(),
        ]);
        let fp = run(&[
            "x509",
            "-in",
            pem.to_str().unwrap(),
            "-noout",
            "-fingerprint",
            "-sha256",
        ]);
        // "sha256 Fingerprint=AB:CD:…"
        let hex = fp.trim().rsplit('=').next().unwrap().replace(':', "");
        let raw = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        (
            std::fs::read(der).unwrap(),
            std::fs::read_to_string(pem).unwrap(),
            raw,
        )
    }

    fn nginx_escape(pem: &str) -> String {
        // What nginx's $ssl_client_escaped_cert does (ngx_escape_uri,
        // NGX_ESCAPE_URI_COMPONENT): everything but unreserved characters.
        let mut out = String::new();
        for b in pem.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn thumbprint_matches_openssl_and_binding_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (der, pem, fingerprint) = openssl_certificate(dir.path(), "client");
        let (other_der, _, _) = openssl_certificate(dir.path(), "other");
        let cert = ClientCertificate::from_der(&der).unwrap();
        assert_eq!(cert.thumbprint(), crate::b64::encode(&fingerprint));
        assert_eq!(ClientCertificate::from_pem(&pem).unwrap(), cert);

        let header = format!(":{}:", STANDARD.encode(&der));
        assert_eq!(
            ClientCertificate::from_client_cert_header(&header).unwrap(),
            cert
        );
        let with_params = format!(" {header};foo=1 ");
        assert_eq!(
            ClientCertificate::from_client_cert_header(&with_params).unwrap(),
            cert
        );
        assert_eq!(
            ClientCertificate::from_nginx_escaped_pem(&nginx_escape(&pem)).unwrap(),
            cert
        );

        let bound = claims(serde_json::json!({"cnf": {"x5t#S256": cert.thumbprint()}}));
        check_binding(&bound, Some(&cert)).unwrap();
        let other = ClientCertificate::from_der(&other_der).unwrap();
        assert_eq!(
            check_binding(&bound, Some(&other)).unwrap_err().kind(),
            ErrorKind::KeyNotBound
        );
        let e = check_binding(&bound, None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ClientCertificateMissing);
        assert!(
            bearer_challenge(&e).starts_with("Bearer error=\"invalid_token\""),
            "{}",
            bearer_challenge(&e)
        );
        for unbound in [
            serde_json::json!({"cnf": {"jkt": cert.thumbprint()}}),
            serde_json::json!({"cnf": "x"}),
            serde_json::json!({"cnf": {"x5t#S256": 5}}),
            serde_json::json!({}),
        ] {
            assert_eq!(
                check_binding(&claims(unbound), Some(&cert))
                    .unwrap_err()
                    .kind(),
                ErrorKind::KeyNotBound
            );
        }
    }

    #[test]
    fn bad_certificates_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (der, pem, _) = openssl_certificate(dir.path(), "client");
        let kind = |r: Result<ClientCertificate, VerifyError>| r.unwrap_err().kind();
        use ErrorKind::{ClientCertificateMalformed as Bad, ClientCertificateMissing as Missing};
        assert_eq!(kind(ClientCertificate::from_der(&[])), Missing);
        assert_eq!(
            kind(ClientCertificate::from_client_cert_header("  ")),
            Missing
        );
        assert_eq!(kind(ClientCertificate::from_nginx_escaped_pem("")), Missing);
        let mut trailing = der.clone();
        trailing.push(0);
        for bad in [
            &der[..der.len() - 1],
            &trailing[..],
            &[0x30, 0x00],
            &[0x30, 0x84, 0, 0, 0, 1],
        ] {
            assert_eq!(kind(ClientCertificate::from_der(bad)), Bad);
        }
        assert_eq!(
            kind(ClientCertificate::from_der(&vec![
                0x30;
                MAX_CERTIFICATE_LEN + 1
            ])),
            Bad
        );
        let b64 = STANDARD.encode(&der);
        for bad in [
            b64.clone(),
            format!(":{b64}"),
            format!(":{b64}:x"),
            format!(":{}:", &b64[1..]),
            "::".into(),
        ] {
            assert!(
                ClientCertificate::from_client_cert_header(&bad).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            kind(ClientCertificate::from_client_cert_header(
                &"A".repeat(MAX_HEADER_LEN + 1)
            )),
            Bad
        );
        for bad in ["%", "%0", "%GG", "-----BEGIN%20CERTIFICATE-----", "%FF%FE"] {
            assert_eq!(
                kind(ClientCertificate::from_nginx_escaped_pem(bad)),
                Bad,
                "{bad}"
            );
        }
        let key_pem = std::fs::read_to_string(dir.path().join("client.key")).unwrap();
        assert_eq!(kind(ClientCertificate::from_pem(&key_pem)), Bad);
        assert_eq!(
            kind(ClientCertificate::from_pem(&pem.replace('M', "*"))),
            Bad
        );
    }

    #[test]
    fn proxy_headers_only_from_trusted_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let (der, _, _) = openssl_certificate(dir.path(), "client");
        let header = format!(":{}:", STANDARD.encode(&der));
        let proxies = TrustedProxies::new(["127.0.0.1".parse().unwrap()]);
        let fmt = CertificateHeader::ClientCert;
        let got = proxies
            .client_certificate("::ffff:127.0.0.1".parse().unwrap(), fmt, &[&header])
            .unwrap();
        assert_eq!(got.unwrap().der(), &der[..]);
        assert_eq!(
            proxies
                .client_certificate("127.0.0.2".parse().unwrap(), fmt, &[&header])
                .unwrap(),
            None
        );
        assert_eq!(
            proxies
                .client_certificate("127.0.0.1".parse().unwrap(), fmt, &[])
                .unwrap(),
            None
        );
        assert_eq!(
            proxies
                .client_certificate("127.0.0.1".parse().unwrap(), fmt, &[&header, &header])
                .unwrap_err()
                .kind(),
            ErrorKind::ClientCertificateMalformed
        );
        assert!(!TrustedProxies::default().is_trusted("127.0.0.1".parse().unwrap()));
    }
}
