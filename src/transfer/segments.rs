//! Cuts the chunks that storage delivers into whole stored segments, copying only a segment that
//! straddles two chunks: with the local backend's 1 MiB reads, one segment in sixteen.

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

use super::TransferError;
use crate::storage::StorageError;

/// Whole stored segments out of a stream of storage chunks of any size.
pub struct SegmentReader<S> {
    chunks: S,
    /// What is left of the last chunk taken from storage.
    pending: Bytes,
}

impl<S> SegmentReader<S>
where
    S: Stream<Item = Result<Bytes, StorageError>> + Unpin,
{
    /// Reads segments from `chunks`.
    pub fn new(chunks: S) -> Self {
        Self {
            chunks,
            pending: Bytes::new(),
        }
    }

    /// The next `len` bytes; a slice of a chunk when one holds them all, else joined from several.
    /// The stored range ending before `len` bytes is corruption: storage reported a longer blob.
    pub async fn next(&mut self, len: usize) -> Result<Bytes, TransferError> {
        while self.pending.is_empty() && len > 0 {
            self.pending = self.next_chunk().await?;
        }
        if self.pending.len() >= len {
            return Ok(self.pending.split_to(len));
        }
        let mut joined = BytesMut::with_capacity(len);
        while joined.len() < len {
            if self.pending.is_empty() {
                self.pending = self.next_chunk().await?;
            }
            let take = (len - joined.len()).min(self.pending.len());
            joined.extend_from_slice(&self.pending.split_to(take));
        }
        Ok(joined.freeze())
    }

    async fn next_chunk(&mut self) -> Result<Bytes, TransferError> {
        match self.chunks.next().await {
            Some(chunk) => Ok(chunk?),
            None => Err(TransferError::Corrupt("the blob ended early".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Chunks = futures::stream::Iter<std::vec::IntoIter<Result<Bytes, StorageError>>>;

    fn reader(chunks: &[&'static [u8]]) -> SegmentReader<Chunks> {
        let chunks: Vec<Result<Bytes, StorageError>> =
            chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
        SegmentReader::new(futures::stream::iter(chunks))
    }

    #[tokio::test]
    async fn segments_come_out_whole_whatever_the_chunking() {
        let mut segments = reader(&[b"abc", b"", b"defgh", b"i", b"jk"]);
        assert_eq!(segments.next(2).await.unwrap(), &b"ab"[..]);
        assert_eq!(segments.next(4).await.unwrap(), &b"cdef"[..]);
        assert_eq!(segments.next(0).await.unwrap(), &b""[..]);
        assert_eq!(segments.next(5).await.unwrap(), &b"ghijk"[..]);
        // Nothing asked of an exhausted stream is nothing, not a short read.
        assert_eq!(segments.next(0).await.unwrap(), &b""[..]);
        assert!(matches!(
            segments.next(1).await,
            Err(TransferError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn a_segment_inside_one_chunk_is_a_slice_of_it() {
        let chunk: &'static [u8] = b"0123456789";
        let mut segments = reader(&[chunk]);
        let first = segments.next(4).await.unwrap();
        let second = segments.next(6).await.unwrap();
        assert_eq!(first.as_ptr(), chunk.as_ptr());
        assert_eq!(second.as_ptr(), chunk[4..].as_ptr());
    }

    #[tokio::test]
    async fn a_short_stream_and_a_storage_failure_are_errors() {
        let mut segments = reader(&[b"abc"]);
        assert!(matches!(
            segments.next(4).await,
            Err(TransferError::Corrupt(_))
        ));
        let failing =
            futures::stream::iter([Ok(Bytes::from_static(b"ab")), Err(StorageError::Changed)]);
        let mut segments = SegmentReader::new(failing);
        assert!(matches!(
            segments.next(3).await,
            Err(TransferError::Storage(StorageError::Changed))
        ));
    }
}
