//! TCTI selection: which transport reaches the TPM.
//!
//! The order is the URI's `tcti=`, then the `TPM2TOOLS_TCTI` and `TCTI`
//! environment variables (as tpm2-tools reads them), then the kernel's
//! resource manager `device:/dev/tpmrm0`. Strings are checked here, before
//! any library sees them, so a typo is reported as such rather than as an
//! unreachable TPM, and two spellings of one TPM share one connection.

use std::path::PathBuf;
use std::str::FromStr;

use tss_esapi::tcti_ldr::TctiNameConf;

use crate::error::{Error, Result, TpmError};
use crate::text::clip;

/// The TCTI used when neither the URI nor the environment names one.
pub(crate) const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

/// A checked TCTI configuration.
#[derive(Clone, Debug)]
pub(crate) struct Tcti {
    /// Canonical spelling, e.g. `swtpm:host=127.0.0.1,port=2321`; the key
    /// of the per-process context registry.
    pub(crate) canonical: String,
    /// What tss-esapi needs to open it.
    pub(crate) conf: TctiNameConf,
    /// The transport kind: `device`, `swtpm`, `mssim` or `tabrmd`.
    pub(crate) kind: &'static str,
}

/// Picks and checks the TCTI for a key: `explicit` (the URI's `tcti=`), else
/// `TPM2TOOLS_TCTI`, else `TCTI`, else [`DEFAULT_TCTI`].
pub(crate) fn resolve(explicit: Option<&str>) -> Result<Tcti> {
    resolve_with(explicit, |var| std::env::var(var).ok())
}

fn resolve_with(explicit: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Result<Tcti> {
    if let Some(t) = explicit {
        return parse(t);
    }
    for var in ["TPM2TOOLS_TCTI", "TCTI"] {
        if let Some(value) = env(var).filter(|v| !v.trim().is_empty()) {
            return parse(value.trim()).map_err(|e| match e {
                Error::Tpm(TpmError::InvalidTcti { tcti, reason }) => {
                    Error::Tpm(TpmError::InvalidTcti {
                        tcti,
                        reason: format!("{reason} (from the {var} environment variable)"),
                    })
                }
                other => other,
            });
        }
    }
    parse(DEFAULT_TCTI)
}

/// Parses `name[:config]` for the TCTIs popkey knows.
pub(crate) fn parse(text: &str) -> Result<Tcti> {
    let bad = |reason: String| {
        Error::Tpm(TpmError::InvalidTcti {
            tcti: clip(text, 80),
            reason,
        })
    };
    let (name, conf) = text.split_once(':').unwrap_or((text, ""));
    let (kind, canonical) = match name {
        "device" => {
            let path = if conf.is_empty() { "/dev/tpm0" } else { conf };
            if !path.starts_with('/') || path.contains(',') {
                return Err(bad(format!(
                    "the device TCTI needs an absolute device path, e.g. {DEFAULT_TCTI}"
                )));
            }
            ("device", format!("device:{path}"))
        }
        "swtpm" | "mssim" => {
            let (host, port) = host_port(conf).map_err(bad)?;
            let kind = if name == "swtpm" { "swtpm" } else { "mssim" };
            (kind, format!("{kind}:host={host},port={port}"))
        }
        "tabrmd" => {
            for item in conf.split(',').filter(|s| !s.is_empty()) {
                let key = item.split_once('=').map_or(item, |(k, _)| k);
                if key != "bus_name" && key != "bus_type" {
                    return Err(bad(format!(
                        "unknown tabrmd option `{}`; known: bus_name, bus_type",
                        clip(key, 80)
                    )));
                }
            }
            ("tabrmd", text.to_owned())
        }
        other => {
            return Err(bad(format!(
                "unknown TCTI `{}`; use device:/dev/tpmrm0, swtpm:host=H,port=P, mssim:host=H,port=P or tabrmd",
                clip(other, 80)
            )))
        }
    };
    let conf =
        TctiNameConf::from_str(&canonical).map_err(|e| bad(format!("rejected by the TSS: {e}")))?;
    Ok(Tcti {
        canonical,
        conf,
        kind,
    })
}

/// `host=H,port=P` in any order, both optional (localhost, 2321).
fn host_port(conf: &str) -> std::result::Result<(String, u16), String> {
    let mut host: Option<String> = None;
    let mut port: Option<u16> = None;
    for item in conf.split(',').filter(|s| !s.is_empty()) {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| format!("`{}` is not key=value", clip(item, 80)))?;
        match key {
            "host" => {
                let ok = !value.is_empty()
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
                if !ok || host.is_some() {
                    return Err(format!("bad or repeated host `{}`", clip(value, 80)));
                }
                host = Some(value.to_owned());
            }
            "port" => {
                let p: u16 = value
                    .parse()
                    .ok()
                    .filter(|p| *p != 0 && *p < u16::MAX)
                    .ok_or_else(|| {
                        format!(
                            "port `{}` is not a TCP port (1-65534; the next one is the control port)",
                            clip(value, 80)
                        )
                    })?;
                if port.is_some() {
                    return Err("port appears more than once".into());
                }
                port = Some(p);
            }
            other => {
                return Err(format!(
                    "unknown option `{}`; known: host, port",
                    clip(other, 80)
                ))
            }
        }
    }
    Ok((
        host.unwrap_or_else(|| "localhost".into()),
        port.unwrap_or(2321),
    ))
}

/// A hint for an unreachable TPM, by transport.
pub(crate) fn unreachable_hint(tcti: &Tcti) -> String {
    match tcti.kind {
        "device" => {
            let path = tcti
                .canonical
                .strip_prefix("device:")
                .map(PathBuf::from)
                .unwrap_or_default();
            if path.exists() {
                format!(
                    "{} exists but could not be opened; is this user in the `tss` group, or is another process holding it?",
                    path.display()
                )
            } else {
                format!(
                    "{} does not exist; on a machine without a TPM, run swtpm and pass ;tcti=swtpm:host=127.0.0.1,port=2321 (or set TPM2TOOLS_TCTI)",
                    path.display()
                )
            }
        }
        "swtpm" | "mssim" => format!(
            "is a TPM simulator listening at {}? start one with `swtpm socket --tpm2 --server type=tcp,port=P --ctrl type=tcp,port=P+1 --tpmstate dir=DIR --flags not-need-init,startup-clear`",
            tcti.canonical
        ),
        _ => "is tpm2-abrmd running and is its TCTI library (libtss2-tcti-tabrmd) installed?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        assert_eq!(
            parse("swtpm:port=2341,host=127.0.0.1").unwrap().canonical,
            "swtpm:host=127.0.0.1,port=2341"
        );
        assert_eq!(
            parse("swtpm").unwrap().canonical,
            "swtpm:host=localhost,port=2321"
        );
        assert_eq!(parse("device:/dev/tpmrm0").unwrap().kind, "device");
        assert_eq!(parse("device").unwrap().canonical, "device:/dev/tpm0");
    }

    #[test]
    fn resolution_order() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |var: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == var)
                    .map(|(_, v)| v.to_string())
            }
        };
        let both: &[(&str, &str)] = &[
            ("TPM2TOOLS_TCTI", "swtpm:port=1000"),
            ("TCTI", "swtpm:port=2000"),
        ];
        assert_eq!(
            resolve_with(Some("swtpm:port=3000"), env(both))
                .unwrap()
                .canonical,
            "swtpm:host=localhost,port=3000"
        );
        assert_eq!(
            resolve_with(None, env(both)).unwrap().canonical,
            "swtpm:host=localhost,port=1000"
        );
        assert_eq!(
            resolve_with(None, env(&[("TCTI", "mssim:port=2000")]))
                .unwrap()
                .canonical,
            "mssim:host=localhost,port=2000"
        );
        assert_eq!(
            resolve_with(None, env(&[("TPM2TOOLS_TCTI", " ")]))
                .unwrap()
                .canonical,
            DEFAULT_TCTI
        );
        let err = resolve_with(None, env(&[("TCTI", "swtpm:port=x")])).unwrap_err();
        assert!(
            err.to_string().contains("TCTI environment variable"),
            "{err}"
        );
    }

    #[test]
    fn malformed() {
        for bad in [
            "",
            "bogus:x",
            "swtpm:port=abc",
            "swtpm:port=0",
            "swtpm:port=70000",
            "swtpm:host=a b",
            "swtpm:hots=1",
            "swtpm:port=1,port=2",
            "device:relative",
            "tabrmd:foo=bar",
        ] {
            assert!(
                matches!(parse(bad), Err(Error::Tpm(TpmError::InvalidTcti { .. }))),
                "{bad}"
            );
        }
    }
}
