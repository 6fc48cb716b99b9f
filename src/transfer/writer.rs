//! Encrypting a plaintext stream into a staged blob.

use bytes::Bytes;

use super::{BlobFormat, TransferError};
use crate::crypto::CryptoError;
use crate::crypto::data_key::DataKey;
use crate::crypto::fernet::FernetWriter;
use crate::crypto::stream::StreamWriter;
use crate::storage::{BlobName, Container, StagedBlob};

/// Ciphertext gathered before it is handed to storage, so parts are not made of tiny pieces.
const FLUSH_BYTES: usize = 512 * 1024;
/// Plaintext given to the encoder at a time, so that one call appends at most [`HEADROOM`].
const ENCODE_SLICE: usize = 64 * 1024;
/// The most ciphertext one [`ENCODE_SLICE`] can add: a stream segment and its tag, or the
/// base64 text of as much Fernet ciphertext (4/3 of it, plus a block).
const HEADROOM: usize = 96 * 1024;
/// The capacity of the ciphertext buffer, which is never outgrown: a flushed buffer carries at
/// most [`HEADROOM`] of spare capacity beyond the length the buffer budget counts.
const PENDING_CAPACITY: usize = FLUSH_BYTES + HEADROOM;

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
        let mut pending = Vec::with_capacity(PENDING_CAPACITY);
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
        for slice in plaintext.chunks(ENCODE_SLICE) {
            self.encoder.update(slice, &mut self.pending)?;
            if self.pending.len() >= FLUSH_BYTES {
                self.flush().await?;
            }
        }
        self.plaintext_len += plaintext.len() as u64;
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
        // Handed over, not copied (the copy was 7% of a large upload's CPU samples): the buffer
        // was never outgrown, so its spare capacity is under HEADROOM.
        let full = std::mem::replace(&mut self.pending, Vec::with_capacity(PENDING_CAPACITY));
        self.staged.write(Bytes::from(full)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_ciphertext_buffer_never_outgrows_its_capacity() {
        let container = crate::storage::memory_container().await;
        let name = BlobName::parse("blob").unwrap();
        let key = DataKey::generate().unwrap();
        for format in [BlobFormat::Stream, BlobFormat::Fernet] {
            let mut writer = BlobWriter::start(&container, &name, &key, format)
                .await
                .unwrap();
            let capacity = writer.pending.capacity();
            for len in [1, 300_000, ENCODE_SLICE, 700_000, 5, 2 * FLUSH_BYTES] {
                writer.write(&vec![1; len]).await.unwrap();
                assert_eq!(
                    writer.pending.capacity(),
                    capacity,
                    "{format:?} after {len}"
                );
            }
        }
    }

    #[test]
    fn no_slice_of_plaintext_adds_more_than_the_headroom() {
        let key = DataKey::generate().unwrap();
        let plaintext = vec![7u8; ENCODE_SLICE];
        for format in [BlobFormat::Stream, BlobFormat::Fernet] {
            let mut out = Vec::new();
            let mut encoder = Encoder::start(format, &key, &mut out).unwrap();
            let mut most = 0;
            for len in [
                ENCODE_SLICE,
                1,
                ENCODE_SLICE,
                ENCODE_SLICE - 1,
                ENCODE_SLICE,
                3,
            ] {
                let before = out.len();
                encoder.update(&plaintext[..len], &mut out).unwrap();
                most = most.max(out.len() - before);
            }
            assert!(most <= HEADROOM, "{format:?} added {most}");
            assert!(most > ENCODE_SLICE, "{format:?} added only {most}");
        }
    }
}
