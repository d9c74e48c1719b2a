//! Small text helpers for messages.

/// At most `max_chars` characters of `s` (never cut inside a character),
/// with `…` when something was cut: for quoting input in error messages.
pub(crate) fn clip(s: &str, max_chars: usize) -> String {
    let mut out: String = s.chars().take(max_chars).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// Replaces the value of any `pin-value` attribute with `<redacted>`.
pub fn redact(uri: &str) -> String {
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(pos) = rest.find("pin-value=") {
        let start = pos + "pin-value=".len();
        out.push_str(&rest[..start]);
        out.push_str("<redacted>");
        let after = &rest[start..];
        let end = after.find(['&', ';', '?']).unwrap_or(after.len());
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn clips_on_character_boundaries() {
        assert_eq!(super::clip("abc", 5), "abc");
        assert_eq!(super::clip("ééé", 2), "éé…");
    }
}
