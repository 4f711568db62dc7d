//! Capabilities: who may follow or rate a request.
//!
//! `POST /rider` and `POST /driver` hand back a token next to the id: an
//! HMAC-SHA256 of the id under a mesh-wide key. Following the id on
//! `/communication` and rating a rider's match need that token. Any node of
//! any region verifies it by recomputing the HMAC, so a token works wherever
//! the client's next request lands, with no lookup and nothing stored: a
//! token exists only in the answer that minted it and in the client.
//!
//! Keys rotate without a flag day: the node takes a list, signs with the
//! first and accepts a token made with any. Deploy the new key second, then
//! first, then drop the old one once every token it signed has expired
//! (`deploy/README.md`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ride_types::api::ErrorCode;
use ring::hmac;
use ring::rand::SystemRandom;
use thiserror::Error;
use uuid::Uuid;

use ride_types::api::AccessToken;

use crate::config::{KeyError, TokenKey};

/// Binds a tag to its use, so that an HMAC made under the same key for
/// anything else can never pass as a request's token.
const CONTEXT: &[u8] = b"ride-request-token-v1:";

/// Why a token was refused. Codes and statuses are the API's (`docs/api.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TokenError {
    #[error("no token: send the token that came with the id")]
    Missing,
    #[error("the token does not belong to this id")]
    Invalid,
}

impl TokenError {
    /// The stable error code clients match on.
    pub fn code(self) -> ErrorCode {
        match self {
            Self::Missing => ErrorCode::MissingToken,
            Self::Invalid => ErrorCode::InvalidToken,
        }
    }
}

/// Mints and checks tokens: signs with the first key, verifies with any.
pub struct TokenKeys {
    keys: Vec<hmac::Key>,
}

impl TokenKeys {
    /// `keys` in order of preference: the first signs.
    pub fn new(keys: &[TokenKey]) -> Option<Self> {
        if keys.is_empty() {
            return None;
        }
        Some(Self {
            keys: keys
                .iter()
                .map(|k| hmac::Key::new(hmac::HMAC_SHA256, k.expose()))
                .collect(),
        })
    }

    /// A key of this process only, for a node that runs alone: its tokens
    /// verify nowhere else and not after a restart.
    pub fn ephemeral() -> Result<Self, KeyError> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .map_err(|_| KeyError::Random)?;
        Ok(Self { keys: vec![key] })
    }

    /// The token for `id`.
    pub fn mint(&self, id: Uuid) -> AccessToken {
        let tag = hmac::sign(&self.keys[0], &message(id));
        AccessToken::new(URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Whether `token` was minted for `id` under any of the keys. The tag is
    /// compared in constant time.
    pub fn verify(&self, id: Uuid, token: Option<&AccessToken>) -> Result<(), TokenError> {
        let token = token.ok_or(TokenError::Missing)?;
        let tag = URL_SAFE_NO_PAD
            .decode(token.expose())
            .map_err(|_| TokenError::Invalid)?;
        let message = message(id);
        if self
            .keys
            .iter()
            .any(|key| hmac::verify(key, &message, &tag).is_ok())
        {
            Ok(())
        } else {
            Err(TokenError::Invalid)
        }
    }
}

fn message(id: Uuid) -> [u8; CONTEXT.len() + 16] {
    let mut message = [0; CONTEXT.len() + 16];
    message[..CONTEXT.len()].copy_from_slice(CONTEXT);
    message[CONTEXT.len()..].copy_from_slice(id.as_bytes());
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{new_key_text, read_key_file};

    fn key(text: &str) -> TokenKey {
        TokenKey::parse(&text.repeat(32)).unwrap()
    }

    #[test]
    fn a_token_verifies_for_its_id_only() {
        let keys = TokenKeys::new(&[key("a")]).unwrap();
        let (id, other) = (Uuid::now_v7(), Uuid::now_v7());
        let token = keys.mint(id);
        assert_eq!(token.expose().len(), AccessToken::LEN);
        assert_eq!(keys.verify(id, Some(&token)), Ok(()));
        assert_eq!(keys.verify(other, Some(&token)), Err(TokenError::Invalid));
        assert_eq!(keys.verify(id, None), Err(TokenError::Missing));
        for junk in ["", "not base64!", "AAAA"] {
            let junk = AccessToken::new(junk.into());
            assert_eq!(keys.verify(id, Some(&junk)), Err(TokenError::Invalid));
        }
    }

    #[test]
    fn every_node_with_the_key_agrees_and_others_do_not() {
        let id = Uuid::now_v7();
        let token = TokenKeys::new(&[key("a")]).unwrap().mint(id);
        let same = TokenKeys::new(&[key("a")]).unwrap();
        assert_eq!(same.verify(id, Some(&token)), Ok(()));
        let stranger = TokenKeys::ephemeral().unwrap();
        assert_eq!(stranger.verify(id, Some(&token)), Err(TokenError::Invalid));
    }

    #[test]
    fn rotation_signs_with_the_first_key_and_accepts_all() {
        let id = Uuid::now_v7();
        let old = TokenKeys::new(&[key("a")]).unwrap().mint(id);
        let rotated = TokenKeys::new(&[key("b"), key("a")]).unwrap();
        assert_eq!(rotated.verify(id, Some(&old)), Ok(()));
        let new = rotated.mint(id);
        assert_ne!(new, old);
        let old_only = TokenKeys::new(&[key("a")]).unwrap();
        assert_eq!(old_only.verify(id, Some(&new)), Err(TokenError::Invalid));
    }

    #[test]
    fn short_keys_are_refused_and_never_printed() {
        assert!(matches!(
            TokenKey::parse("short"),
            Err(KeyError::TooShort { bytes: 5 })
        ));
        let secret = "s".repeat(40);
        assert_eq!(
            format!("{:?}", TokenKey::parse(&secret).unwrap()),
            "TokenKey(..)"
        );
        let token = TokenKeys::ephemeral().unwrap().mint(Uuid::now_v7());
        assert!(!format!("{token:?}").contains(token.expose()));
    }

    #[test]
    fn key_files_skip_comments_and_keep_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let (a, b) = (new_key_text().unwrap(), new_key_text().unwrap());
        std::fs::write(&path, format!("# signing key first\n{b}\n\n{a}\n")).unwrap();
        let keys = read_key_file(&path).unwrap();
        assert_eq!(keys.len(), 2);
        let id = Uuid::now_v7();
        let token = TokenKeys::new(&keys).unwrap().mint(id);
        let by_b = TokenKeys::new(&[TokenKey::parse(&b).unwrap()]).unwrap();
        assert_eq!(by_b.verify(id, Some(&token)), Ok(()));
        std::fs::write(&path, "# nothing\n").unwrap();
        assert!(matches!(
            read_key_file(&path),
            Err(KeyError::EmptyFile { .. })
        ));
    }
}
