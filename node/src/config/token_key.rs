//! Token keys as the node is given them: on the command line, in the
//! environment or in a file. A key's `Debug` never shows it, so printing the
//! configuration cannot leak it. What the keys sign is
//! [`crate::runtime::access`]'s business.

use std::fmt;
use std::path::Path;

use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use thiserror::Error;

/// Shortest key accepted, in bytes: HMAC-SHA256's own output size, below
/// which a key is easier to guess than the tag it makes.
pub const MIN_KEY_BYTES: usize = 32;

/// A key as given on the command line or in a file. Its `Debug` never shows
/// it, so that printing the configuration cannot leak it.
#[derive(Clone)]
pub struct TokenKey(Vec<u8>);

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// The key itself, to sign with; never to log.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// A key's text (e.g. 32 random bytes in base64); its bytes are the key.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        if text.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort { bytes: text.len() });
        }
        Ok(Self(text.as_bytes().to_vec()))
    }
}

#[derive(Debug, Error)]
pub enum KeyError {
    #[error(
        "a token key must be at least {MIN_KEY_BYTES} bytes, got {bytes} \
         (`node token-key` makes one)"
    )]
    TooShort { bytes: usize },
    #[error("no token key in {path}")]
    EmptyFile { path: String },
    #[error("cannot read token keys from {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the system random source failed")]
    Random,
}

/// Keys from a file: one per line, the signing key first; blank lines and
/// `#` comments are skipped.
pub fn read_key_file(path: &Path) -> Result<Vec<TokenKey>, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let keys = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(TokenKey::parse)
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err(KeyError::EmptyFile {
            path: path.display().to_string(),
        });
    }
    Ok(keys)
}

/// A fresh key's text: 32 random bytes in base64 (for `node token-key` and
/// tests).
pub fn new_key_text() -> Result<String, KeyError> {
    let mut bytes = [0; MIN_KEY_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| KeyError::Random)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}
