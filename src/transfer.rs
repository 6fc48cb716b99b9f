//! Moving plaintext in and out of storage: encrypt while uploading, authenticate and decrypt
//! while downloading. Knows the blob formats and storage, nothing of HTTP.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use thiserror::Error;
use tokio::sync::mpsc;

use crate::crypto::CryptoError;
use crate::crypto::data_key::DataKey;
use crate::crypto::fernet::{self, FernetDecryptor, FernetVerifier, FernetWriter, VerifiedToken};
use crate::storage::{BlobInfo, BlobName, Container, StagedBlob, StorageError};

/// Ciphertext gathered before it is handed to storage, so parts are not made of tiny pieces.
const FLUSH_BYTES: usize = 256 * 1024;
/// Plaintext chunks queued between decryption and the client.
const DOWNLOAD_QUEUE: usize = 4;

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
}

impl From<CryptoError> for TransferError {
    fn from(error: CryptoError) -> Self {
        match error {
            CryptoError::AuthenticationFailed => TransferError::WrongKey,
            CryptoError::MalformedToken(why) | CryptoError::Corrupt(why) => {
                TransferError::Corrupt(why.into())
            }
            other => TransferError::Crypto(other),
        }
    }
}

/// Encrypts a plaintext stream into a staged blob.
pub struct BlobWriter {
    staged: StagedBlob,
    encoder: FernetWriter,
    pending: Vec<u8>,
    plaintext_len: u64,
}

impl BlobWriter {
    /// Starts a staged upload of `blob`, encrypted under `key`.
    pub async fn start(
        container: &Container,
        blob: &BlobName,
        key: &DataKey,
    ) -> Result<Self, TransferError> {
        let staged = container.stage(blob).await?;
        let mut pending = Vec::with_capacity(FLUSH_BYTES * 2);
        let encoder = FernetWriter::start(key, &mut pending)?;
        Ok(Self {
            staged,
            encoder,
            pending,
            plaintext_len: 0,
        })
    }

    /// Encrypts and stores the next piece of plaintext.
    pub async fn write(&mut self, plaintext: &[u8]) -> Result<(), TransferError> {
        self.encoder.update(plaintext, &mut self.pending)?;
        self.plaintext_len += plaintext.len() as u64;
        if self.pending.len() >= FLUSH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Plaintext bytes written so far.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// Finishes the encryption and publishes the blob (only if its name is free, unless
    /// `overwrite`).
    pub async fn commit(self, overwrite: bool) -> Result<(), TransferError> {
        let Self {
            mut staged,
            encoder,
            mut pending,
            ..
        } = self;
        encoder.finish(&mut pending)?;
        staged.write(Bytes::from(pending)).await?;
        staged.commit(overwrite).await?;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), TransferError> {
        let full = std::mem::replace(&mut self.pending, Vec::with_capacity(FLUSH_BYTES * 2));
        self.staged.write(Bytes::from(full)).await?;
        Ok(())
    }
}

/// How an opened blob is laid out.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// A Fernet token whose MAC has been checked.
    Fernet(VerifiedToken),
}

/// A stored blob whose key has been checked, ready to stream its plaintext.
pub struct OpenedBlob {
    container: Container,
    blob: BlobName,
    info: BlobInfo,
    key: DataKey,
    layout: Layout,
}

impl OpenedBlob {
    /// Finds the blob, recognises its format and checks that `key` opens it.
    ///
    /// For a Fernet token this reads the whole blob once to check its MAC, so that no
    /// unauthenticated byte is ever released.
    pub async fn open(
        container: Container,
        blob: BlobName,
        key: DataKey,
    ) -> Result<Self, TransferError> {
        let info = container.head(&blob).await?;
        let prefix_len = info.size.min(fernet::TOKEN_TEXT_PREFIX.len() as u64);
        let prefix = read_all(&container, &blob, &info, Some(0..prefix_len)).await?;
        let layout = if prefix == fernet::TOKEN_TEXT_PREFIX {
            Layout::Fernet(verify_fernet(&container, &blob, &info, &key).await?)
        } else {
            return Err(TransferError::Corrupt(
                "it is neither a blobprox stream nor a Fernet token".into(),
            ));
        };
        Ok(Self {
            container,
            blob,
            info,
            key,
            layout,
        })
    }

    /// Length of the plaintext.
    pub fn plaintext_len(&self) -> u64 {
        match self.layout {
            Layout::Fernet(verified) => verified.plaintext_len,
        }
    }

    /// Streams the plaintext. A failure after the first chunk arrives as an error item, so the
    /// consumer can abort rather than end cleanly.
    pub fn into_plaintext(self) -> impl Stream<Item = Result<Bytes, TransferError>> + Send {
        let (sender, receiver) = mpsc::channel(DOWNLOAD_QUEUE);
        tokio::spawn(async move {
            if let Err(error) = self.pump(&sender).await {
                let _ = sender.send(Err(error)).await;
            }
        });
        futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        })
    }

    async fn pump(
        &self,
        sender: &mpsc::Sender<Result<Bytes, TransferError>>,
    ) -> Result<(), TransferError> {
        match self.layout {
            Layout::Fernet(verified) => {
                let mut decryptor = FernetDecryptor::new(&self.key, &verified)?;
                let mut chunks = self.container.read(&self.blob, &self.info, None).await?;
                while let Some(chunk) = chunks.next().await {
                    let mut plaintext = Vec::new();
                    decryptor.update(&chunk?, &mut plaintext)?;
                    if sender.send(Ok(Bytes::from(plaintext))).await.is_err() {
                        return Ok(());
                    }
                }
                let mut plaintext = Vec::new();
                decryptor.finish(&mut plaintext)?;
                let _ = sender.send(Ok(Bytes::from(plaintext))).await;
                Ok(())
            }
        }
    }
}

async fn verify_fernet(
    container: &Container,
    blob: &BlobName,
    info: &BlobInfo,
    key: &DataKey,
) -> Result<VerifiedToken, TransferError> {
    let mut verifier = FernetVerifier::new(key);
    let mut chunks = container.read(blob, info, None).await?;
    while let Some(chunk) = chunks.next().await {
        verifier.update(&chunk?)?;
    }
    Ok(verifier.finish()?)
}

async fn read_all(
    container: &Container,
    blob: &BlobName,
    info: &BlobInfo,
    range: Option<std::ops::Range<u64>>,
) -> Result<Vec<u8>, TransferError> {
    let mut chunks = container.read(blob, info, range).await?;
    let mut out = Vec::new();
    while let Some(chunk) = chunks.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}
