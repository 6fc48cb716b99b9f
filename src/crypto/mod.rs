//! Cryptographic building blocks: data keys and their RSA wrapping, and the blob formats.

pub mod base64_stream;
pub mod data_key;
pub mod fernet;
pub mod rsa;
pub mod stream;

use thiserror::Error;

/// Everything that can go wrong while sealing or opening keys and blobs.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CryptoError {
    /// The key text is not 32 bytes of base64 (either alphabet).
    #[error("the key is not 32 bytes of base64")]
    MalformedKey,
    /// A Fernet token is structurally invalid (too short, bad base64, bad version, bad length).
    #[error("not a valid Fernet token: {0}")]
    MalformedToken(&'static str),
    /// The key does not authenticate the data: either the wrong key or altered data.
    #[error("the key does not open this data, or the data was altered")]
    AuthenticationFailed,
    /// The key is not the one the data was written for (a key commitment did not match).
    #[error("the key is not the one this data was encrypted with")]
    KeyMismatch,
    /// Authenticated data decrypted to something impossible (bad padding under a valid MAC).
    #[error("the data is corrupt: {0}")]
    Corrupt(&'static str),
    /// A PEM or DER key could not be parsed or is not acceptable.
    #[error("{0}")]
    InvalidRsaKey(String),
    /// RSA-OAEP unwrapping failed.
    #[error("the wrapped key cannot be unwrapped with this proxy's private key")]
    UnwrapFailed,
    /// The underlying library failed in a way that input cannot cause.
    #[error("cryptographic library failure")]
    Internal,
}

impl From<aws_lc_rs::error::Unspecified> for CryptoError {
    fn from(_: aws_lc_rs::error::Unspecified) -> Self {
        CryptoError::Internal
    }
}
