//! Encrypting a plaintext stream into a staged blob.

use bytes::Bytes;

use super::{BlobFormat, TransferError};
use crate::crypto::CryptoError;
use crate::crypto::data_key::DataKey;
use crate::crypto::fernet::FernetWriter;
use crate::crypto::stream::StreamWriter;
use crate::storage::{BlobName, Container, StagedBlob};

/// Ciphertext gathered before it is handed to storage, so parts are not made of tiny pieces.
const FLUSH_BYTES: usize = 256 * 1024;

/// The encryption of one blob being written.
enum Encoder {
    Fernet(Box<FernetWriter>),
    Stream(StreamWriter),
}

impl Encoder {
    fn start(format: BlobFormat, key: &DataKey, out: &mut Vec<u8>) -> Result<Self, CryptoError> {
        Ok(match format {
            BlobFormat::Fernet => Encoder::Fernet(Box::new(FernetWriter::start(key, out)?)),
            BlobFormat::Stream => Encoder::Stream(StreamWriter::start(key, out)?),
        })
    }

    fn update(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        match self {
            Encoder::Fernet(writer) => writer.update(plaintext, out),
            Encoder::Stream(writer) => writer.update(plaintext, out),
        }
    }

    fn finish(self, out: &mut Vec<u8>) -> Result<(), CryptoError> {
        match self {
            Encoder::Fernet(writer) => writer.finish(out),
            Encoder::Stream(writer) => writer.finish(out),
        }
    }
}

/// Encrypts a plaintext stream into a staged blob.
pub struct BlobWriter {
    staged: StagedBlob,
    encoder: Encoder,
    pending: Vec<u8>,
    plaintext_len: u64,
}

impl BlobWriter {
    /// Starts a staged upload of `blob`, encrypted under `key` in `format`.
    pub async fn start(
        container: &Container,
        blob: &BlobName,
        key: &DataKey,
        format: BlobFormat,
    ) -> Result<Self, TransferError> {
        let staged = container.stage(blob).await?;
        let mut pending = Vec::with_capacity(FLUSH_BYTES * 2);
        let encoder = Encoder::start(format, key, &mut pending)?;
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
        // Copied out at their length, because they stay buffered until their part is stored and
        // the buffer budget counts that length: handing over `pending` itself would keep its
        // spare capacity (up to as much again) alive with them. `pending` is reused.
        let full = Bytes::copy_from_slice(&self.pending);
        self.pending.clear();
        self.staged.write(full).await?;
        Ok(())
    }
}
