//! Reads of local files in large positional reads.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use super::StorageError;

/// Bytes read from a local file at a time; object_store's own file stream reads 8 KiB per
/// blocking task, which caps downloads at a few hundred MB/s.
const LOCAL_READ_CHUNK: u64 = 1024 * 1024;
/// Reads up to this size (a stream header, one segment, a small blob) run on the async thread,
/// as nginx's reads do: from the page cache they take microseconds, less than the round trip to
/// a blocking thread, which was most of the time of small downloads and range requests.
const LOCAL_INLINE_READ_MAX: u64 = 128 * 1024;

/// Streams `range` of a local file in large positional reads.
pub(super) fn read_file(
    file: std::fs::File,
    range: Range<u64>,
) -> BoxStream<'static, Result<Bytes, StorageError>> {
    futures::stream::try_unfold((Arc::new(file), range), |(file, range)| async move {
        if range.is_empty() {
            return Ok(None);
        }
        let len = (range.end - range.start).min(LOCAL_READ_CHUNK);
        let read = move |reader: &std::fs::File| {
            use std::os::unix::fs::FileExt;
            let mut buffer = vec![0u8; len as usize];
            reader
                .read_exact_at(&mut buffer, range.start)
                .map(|()| buffer)
        };
        let bytes = if len <= LOCAL_INLINE_READ_MAX {
            read(&file)
        } else {
            let reader = file.clone();
            tokio::task::spawn_blocking(move || read(&reader))
                .await
                .map_err(|e| StorageError::Unavailable(e.to_string()))?
        }
        .map_err(|e| StorageError::Unavailable(format!("reading the blob failed: {e}")))?;
        Ok(Some((
            Bytes::from(bytes),
            (file, range.start + len..range.end),
        )))
    })
    .boxed()
}
