//! Moving plaintext in and out of storage: encrypt while uploading, authenticate and decrypt
//! while downloading. Knows the blob formats and storage, nothing of HTTP.

use thiserror::Error;

use crate::crypto::CryptoError;
use crate::storage::StorageError;

mod opened;
mod segments;
mod upload;
mod writer;

pub use opened::OpenedBlob;
pub use upload::{DataKeyPolicy, Upload, UploadRules, wrap_for_recipients};
use writer::BlobWriter;

/// Failures while moving a blob.
#[derive(Debug, Error)]
pub enum TransferError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The data key does not open this blob (or, for Fernet, the blob was altered).
    #[error("the decryption key does not open this blob (wrong key, or the blob was altered)")]
    WrongKey,
    /// The stored blob is not authentic or not in a format blobprox reads.
    #[error("the stored blob failed authentication: {0}")]
    Corrupt(String),
    /// A cryptographic operation failed in a way input cannot cause.
    #[error("encryption failed: {0}")]
    Crypto(CryptoError),
    /// The plaintext of an upload grew past the size limit.
    #[error("the file is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in plaintext bytes.
        limit: u64,
    },
}

impl TransferError {
    /// Whether stored data failed authentication (rather than storage failing to deliver it).
    pub fn is_integrity_failure(&self) -> bool {
        matches!(self, TransferError::Corrupt(_))
    }
}

impl From<CryptoError> for TransferError {
    fn from(error: CryptoError) -> Self {
        match error {
            CryptoError::KeyMismatch => TransferError::WrongKey,
            CryptoError::AuthenticationFailed => {
                TransferError::Corrupt("a segment failed authentication".into())
            }
            CryptoError::MalformedToken(why) | CryptoError::Corrupt(why) => {
                TransferError::Corrupt(why.into())
            }
            CryptoError::MalformedKey
            | CryptoError::InvalidRsaKey(_)
            | CryptoError::UnwrapFailed
            | CryptoError::Internal => TransferError::Crypto(error),
        }
    }
}

/// The format new blobs are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlobFormat {
    /// blobprox's segmented AES-256-GCM format: range reads, one pass, no base64.
    #[default]
    Stream,
    /// A Fernet token, readable by the Python proxy.
    Fernet,
}

impl BlobFormat {
    /// The format's name, as `BLOB_FORMAT` and the metrics spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            BlobFormat::Stream => "stream",
            BlobFormat::Fernet => "fernet",
        }
    }
}

/// A `BLOB_FORMAT` value that names no format.
#[derive(Debug, Error)]
#[error("unknown blob format {0:?}: use stream or fernet")]
pub struct UnknownBlobFormat(String);

impl std::str::FromStr for BlobFormat {
    type Err = UnknownBlobFormat;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "stream" => Ok(BlobFormat::Stream),
            "fernet" => Ok(BlobFormat::Fernet),
            other => Err(UnknownBlobFormat(other.to_owned())),
        }
    }
}
