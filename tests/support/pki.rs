//! A throwaway PKI made with openssl, for TLS tests and benches: a P-256 CA
//! and a server certificate it issued for `localhost` and `127.0.0.1`.

use std::path::Path;
use std::process::Command;

/// Runs `openssl` with `args` in `dir` and returns what it printed (stdout,
/// then stderr); panics with both on failure.
pub fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is needed: apt-get install openssl");
    let printed =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "openssl {args:?}: {printed}");
    printed
}

/// Makes in `dir`: `ca.key` and `ca.pem`, a CA named `ca_name`; and
/// `server.key` and `server.pem`, a certificate it issued for `localhost`
/// and `127.0.0.1` (CN=localhost, `serverAuth` and `clientAuth`, valid two
/// days).
pub fn ca_and_server(dir: &Path, ca_name: &str) {
    const EC: [&str; 5] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let subject = format!("/CN={ca_name}");
    let ca = [
        &["req", "-x509"][..],
        &EC,
        &[
            "-subj",
            &subject,
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    ]
    .concat();
    openssl(dir, &ca);
    let csr = [
        &["req", "-new"][..],
        &EC,
        &[
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    ]
    .concat();
    openssl(dir, &csr);
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("write server.ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "server.pem",
            "-extfile",
            "server.ext",
        ],
    );
}
