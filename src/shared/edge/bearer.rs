//! Bearer tokens: parsing `Authorization: Bearer TOKEN` and comparing tokens in constant time.
//!
//! Tokens are compared as SHA-256 digests, so the comparison always covers 32 bytes whatever
//! the lengths of the configured and the presented token: neither a token's length nor the
//! position of its first wrong byte shows in the timing.

use axum::http::{HeaderMap, header};
use ring::digest;

/// Placeholder fragments that mark a token copied from an example, never a real secret.
pub const PLACEHOLDER_MARKERS: &[&str] = &[
    "change-me",
    "changeme",
    "change_me",
    "replace-with",
    "replace_with",
    "replace-me",
    "your-token",
    "placeholder",
    "your-secret",
];

/// Shortest token accepted at start-up.
pub const MIN_TOKEN_LEN: usize = 16;

/// The token presented in `Authorization: Bearer TOKEN`, if any (scheme case-insensitive).
pub fn presented(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A configured token, kept as its digest.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenDigest([u8; 32]);

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenDigest(..)")
    }
}

impl TokenDigest {
    /// The digest of `token`.
    pub fn of(token: &str) -> TokenDigest {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
        TokenDigest(out)
    }

    /// Constant-time equality of two digests.
    pub fn matches(&self, other: &TokenDigest) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// Why a token is refused at start-up. The message never contains the token itself.
pub fn weakness(token: &str) -> Option<String> {
    let trimmed = token.trim();
    if trimmed.len() != token.len() {
        return Some("has leading or trailing whitespace".into());
    }
    if trimmed.chars().count() < MIN_TOKEN_LEN {
        return Some(format!(
            "is shorter than {MIN_TOKEN_LEN} characters (generate one with `openssl rand -hex 32`)"
        ));
    }
    let lower = trimmed.to_ascii_lowercase();
    if let Some(marker) = PLACEHOLDER_MARKERS.iter().find(|m| lower.contains(*m)) {
        return Some(format!(
            "looks like a placeholder (contains {marker:?}); generate a real one with \
             `openssl rand -hex 32`"
        ));
    }
    if trimmed
        .chars()
        .all(|c| c == trimmed.chars().next().unwrap_or(' '))
    {
        return Some("repeats one character".into());
    }
    None
}

/// A fresh random token: 32 bytes from the OS, hex.
pub fn generate() -> Result<String, ring::error::Unspecified> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(header::AUTHORIZATION, value.parse().unwrap());
        map
    }

    #[test]
    fn parses_bearer_scheme_only() {
        assert_eq!(presented(&headers("Bearer abc")), Some("abc"));
        assert_eq!(presented(&headers("bearer  abc ")), Some("abc"));
        assert_eq!(presented(&headers("Basic abc")), None);
        assert_eq!(presented(&headers("Bearer ")), None);
        assert_eq!(presented(&headers("abc")), None);
        assert_eq!(presented(&HeaderMap::new()), None);
    }

    #[test]
    fn digests_compare_whole_tokens() {
        let a = TokenDigest::of("0123456789abcdef");
        assert!(a.matches(&TokenDigest::of("0123456789abcdef")));
        assert!(!a.matches(&TokenDigest::of("0123456789abcdeF")));
        assert!(!a.matches(&TokenDigest::of("0123456789abcdef0")));
        assert!(!a.matches(&TokenDigest::of("")));
    }

    #[test]
    fn weak_tokens_are_named_without_echoing_them() {
        for weak in [
            "t0k3n",
            "change-me-please-now",
            "replace-with-a-long-random-token",
            "aaaaaaaaaaaaaaaaaaaa",
            " 0123456789abcdefgh",
        ] {
            let why = weakness(weak).expect(weak);
            assert!(!why.contains(weak.trim()), "{why}");
        }
        assert_eq!(weakness("b6f0c1d2e3a4958677aa21"), None);
        let generated = generate().unwrap();
        assert_eq!(generated.len(), 64);
        assert_eq!(weakness(&generated), None);
    }
}
