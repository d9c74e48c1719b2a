//! Client certificates as TLS-terminating proxies forward them (RFC 9440
//! `Client-Cert`, nginx's escaped PEM) and as PEM or DER, on arbitrary
//! input: refused or read, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use popkey::verify::mtls::ClientCertificate;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = ClientCertificate::from_der(data) {
        let _ = c.thumbprint();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        for c in [
            ClientCertificate::from_client_cert_header(text),
            ClientCertificate::from_nginx_escaped_pem(text),
            ClientCertificate::from_pem(text),
        ]
        .into_iter()
        .flatten()
        {
            let _ = c.thumbprint();
        }
    }
});
