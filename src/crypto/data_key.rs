//! The 256-bit secret that encrypts one blob, and its 44-character text form.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};

use super::CryptoError;

/// Length of a data key in bytes.
pub const DATA_KEY_LEN: usize = 32;

/// A 32-byte symmetric key: a Fernet key (signing half, encryption half) or a stream-format key.
// Equality on key bytes is for tests only: production code that compared secrets would want a
// constant-time comparison.
#[derive(Clone)]
#[cfg_attr(test, derive(PartialEq, Eq))]
pub struct DataKey([u8; DATA_KEY_LEN]);

impl DataKey {
    /// A fresh key from the system's secure random generator.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut bytes = [0u8; DATA_KEY_LEN];
        aws_lc_rs::rand::fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; DATA_KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses the 44-character base64 text of a key, in the URL-safe or the standard alphabet.
    ///
    /// The original key generator wrote the standard alphabet, and Python's Fernet accepts both.
    pub fn from_text(text: &[u8]) -> Result<Self, CryptoError> {
        let text = text.trim_ascii();
        let decoded = URL_SAFE
            .decode(text)
            .or_else(|_| STANDARD.decode(text))
            .map_err(|_| CryptoError::MalformedKey)?;
        let bytes: [u8; DATA_KEY_LEN] =
            decoded.try_into().map_err(|_| CryptoError::MalformedKey)?;
        Ok(Self(bytes))
    }

    /// The URL-safe base64 text of the key, as Fernet specifies.
    pub fn to_text(&self) -> String {
        URL_SAFE.encode(self.0)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; DATA_KEY_LEN] {
        &self.0
    }

    /// The Fernet signing key (first half).
    pub fn fernet_signing_key(&self) -> &[u8] {
        &self.0[..16]
    }

    /// The Fernet encryption key (second half).
    pub fn fernet_encryption_key(&self) -> &[u8] {
        &self.0[16..]
    }
}

impl DataKey {
    /// Overwrites the key bytes with zeros.
    fn wipe(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        // Every copy of a key is wiped when it goes: caches, uploads and downloads alike.
        self.wipe();
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_alphabets_decode_to_the_same_key() {
        let key = DataKey::from_bytes([0xfb; 32]);
        let url_safe = key.to_text();
        let standard = STANDARD.encode(key.as_bytes());
        assert!(url_safe.contains('-') || url_safe.contains('_'));
        assert_ne!(url_safe, standard);
        assert_eq!(DataKey::from_text(url_safe.as_bytes()).unwrap(), key);
        assert_eq!(DataKey::from_text(standard.as_bytes()).unwrap(), key);
    }

    #[test]
    fn fernet_halves_are_the_signing_then_the_encryption_key() {
        let bytes: [u8; 32] = std::array::from_fn(|i| i as u8);
        let key = DataKey::from_bytes(bytes);
        assert_eq!(key.fernet_signing_key(), &bytes[..16]);
        assert_eq!(key.fernet_encryption_key(), &bytes[16..]);
    }

    #[test]
    fn keys_are_wiped_and_never_printed() {
        let mut key = DataKey::from_bytes([0xab; 32]);
        assert_eq!(format!("{key:?}"), "DataKey(..)");
        key.wipe();
        assert_eq!(key.as_bytes(), &[0; 32]);
    }

    #[test]
    fn wrong_lengths_are_rejected() {
        assert_eq!(
            DataKey::from_text(b"c2hvcnQ="),
            Err(CryptoError::MalformedKey)
        );
        assert_eq!(
            DataKey::from_text(b"not base64 at all!"),
            Err(CryptoError::MalformedKey)
        );
    }
}
