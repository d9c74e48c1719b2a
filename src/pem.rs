//! One reader for PEM key files (software keys and TPM key files): a
//! size-bounded read that keeps the bytes in zeroized memory, and a strict
//! RFC 7468 decoder and encoder.

use std::fs;
use std::io::Read;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Reads the PEM file at `path` as text, refusing files over `max_len`
/// bytes. `not_found` words the error for a missing file; `check` sees the
/// file's metadata first (the software backend checks its mode there). The
/// size is checked on the open file and the read is bounded too, so a file
/// that grows between the check and the read cannot make it larger.
pub(crate) fn read_file(
    path: &Path,
    max_len: u64,
    not_found: impl FnOnce() -> String,
    check: impl FnOnce(&fs::Metadata) -> Result<()>,
) -> Result<Zeroizing<String>> {
    let io = |source| Error::Io {
        action: "cannot read",
        path: path.to_path_buf(),
        source,
    };
    let too_large = |len: u64| Error::MalformedKey {
        source_name: path.display().to_string(),
        reason: format!("{len} bytes is too large for a PEM key file (at most {max_len})"),
    };
    let file = fs::File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::KeyNotFound(not_found())
        } else {
            io(e)
        }
    })?;
    let meta = file.metadata().map_err(io)?;
    check(&meta)?;
    if meta.len() > max_len {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    file.take(max_len + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > max_len {
        return Err(too_large(bytes.len() as u64));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| Error::MalformedKey {
        source_name: path.display().to_string(),
        reason: "not a text (PEM) file".into(),
    })?;
    Ok(Zeroizing::new(text.to_owned()))
}

/// The label of the first `-----BEGIN <label>-----` line, if any.
pub(crate) fn first_label(text: &str) -> Option<&str> {
    text.lines().map(str::trim).find_map(begin_label)
}

fn begin_label(line: &str) -> Option<&str> {
    line.strip_prefix("-----BEGIN ")?.strip_suffix("-----")
}

/// Decodes the first PEM block in `text`: its label and DER contents
/// (zeroized on drop). Text before the block is ignored (RFC 7468 allows
/// explanatory text); headers (legacy encrypted PEM) are refused.
pub(crate) fn decode(text: &str) -> std::result::Result<(String, Zeroizing<Vec<u8>>), String> {
    let mut lines = text.lines().map(str::trim);
    let label = lines
        .by_ref()
        .find_map(begin_label)
        .ok_or("no PEM `-----BEGIN ...-----` line found")?
        .to_owned();
    let end = format!("-----END {label}-----");
    let mut body = Zeroizing::new(String::new());
    let mut ended = false;
    for line in lines {
        if line == end {
            ended = true;
            break;
        }
        if line.starts_with("-----") {
            return Err(format!(
                "PEM block `{}` ends with a different label",
                clip(&label)
            ));
        }
        if line.contains(':') {
            return Err(
                "PEM headers (legacy encrypted PEM) are not supported; use unencrypted PKCS#8"
                    .into(),
            );
        }
        body.push_str(line);
    }
    if !ended {
        return Err(format!("no `-----END {}-----` line", clip(&label)));
    }
    let der = STANDARD
        .decode(body.as_bytes())
        .map_err(|e| format!("bad base64 in the PEM block: {e}"))?;
    if der.is_empty() {
        return Err("the PEM block is empty".into());
    }
    Ok((label, Zeroizing::new(der)))
}

/// Encodes `der` as one PEM block: 64-character lines, LF line endings.
pub(crate) fn encode(label: &str, der: &[u8]) -> Zeroizing<String> {
    let b64 = Zeroizing::new(STANDARD.encode(der));
    let mut out = Zeroizing::new(String::with_capacity(b64.len() + b64.len() / 64 + 64));
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

fn clip(label: &str) -> String {
    label.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        let der: Vec<u8> = (0..=255u8).collect();
        let pem = encode("PRIVATE KEY", &der);
        assert!(pem.lines().all(|l| l.len() <= 64));
        let text = format!("explanatory text\n{}", pem.as_str());
        assert_eq!(first_label(&text), Some("PRIVATE KEY"));
        let (label, back) = decode(&text).unwrap();
        assert_eq!((label.as_str(), back.as_slice()), ("PRIVATE KEY", &der[..]));
        // CRLF and indentation are fine.
        assert!(decode(&pem.replace('\n', "\r\n  ")).is_ok());

        let body = pem.lines().nth(1).unwrap();
        for bad in [
            String::new(),
            format!("-----BEGIN A-----\n{body}\n"),
            format!("-----BEGIN A-----\n{body}\n-----END B-----\n"),
            format!("-----BEGIN A-----\nProc-Type: 4,ENCRYPTED\n{body}\n-----END A-----\n"),
            "-----BEGIN A-----\n!!!!\n-----END A-----\n".to_string(),
            "-----BEGIN A-----\n-----END A-----\n".to_string(),
        ] {
            assert!(decode(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        fs::write(&path, "x".repeat(100)).unwrap();
        let ok = read_file(&path, 100, String::new, |_| Ok(())).unwrap();
        assert_eq!(ok.len(), 100);
        assert!(matches!(
            read_file(&path, 99, String::new, |_| Ok(())),
            Err(Error::MalformedKey { .. })
        ));
        assert!(matches!(
            read_file(&dir.path().join("none"), 99, || "gone".into(), |_| Ok(())),
            Err(Error::KeyNotFound(m)) if m == "gone"
        ));
        fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(read_file(&path, 100, String::new, |_| Ok(())).is_err());
    }
}
