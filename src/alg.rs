//! JWS signature algorithms popkey signs with.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A JWS `alg` value (RFC 7518 §3.1) that popkey can produce and verify.
///
/// Only asymmetric algorithms are here: a proof-of-possession key must be
/// one half of a key pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// ECDSA with P-256 and SHA-256; the signature is raw `r || s`, 64 bytes.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PSS with SHA-256, MGF1 with SHA-256 and a 32-byte salt.
    PS256,
}

impl Algorithm {
    /// All supported algorithms.
    pub const ALL: [Algorithm; 3] = [Algorithm::ES256, Algorithm::RS256, Algorithm::PS256];

    /// The JWS `alg` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::ES256 => "ES256",
            Algorithm::RS256 => "RS256",
            Algorithm::PS256 => "PS256",
        }
    }

    /// True for RS256 and PS256.
    pub fn is_rsa(self) -> bool {
        matches!(self, Algorithm::RS256 | Algorithm::PS256)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = Error;

    /// Parses `ES256`, `RS256` or `PS256` (exact case, as JWS requires).
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "ES256" => Ok(Algorithm::ES256),
            "RS256" => Ok(Algorithm::RS256),
            "PS256" => Ok(Algorithm::PS256),
            other => Err(Error::UnsupportedAlgorithm(
                other.chars().take(32).collect(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.as_str().parse::<Algorithm>().unwrap(), alg);
        }
        for bad in ["es256", "HS256", "none", "", "ES384"] {
            assert!(matches!(
                bad.parse::<Algorithm>(),
                Err(Error::UnsupportedAlgorithm(_))
            ));
        }
    }
}
