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

#[cfg(test)]
mod tests {
    #[test]
    fn clips_on_character_boundaries() {
        assert_eq!(super::clip("abc", 5), "abc");
        assert_eq!(super::clip("ééé", 2), "éé…");
    }
}
