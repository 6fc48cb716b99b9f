//! Reads of the local backend, done with the file system directly instead of through
//! `object_store`, whose every call is a round trip to a blocking thread: for a small download
//! or a range read those round trips were most of the time. Opens, stats and small reads from
//! the page cache take microseconds on the async thread, as they do in nginx.

use std::fs::{File, Metadata};
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use super::{BlobInfo, StorageError};

/// Bytes read from a local file at a time; object_store's own file stream reads 8 KiB per
/// blocking task, which caps downloads at a few hundred MB/s.
const READ_CHUNK: u64 = 1024 * 1024;
/// Reads up to this size (a stream header, one segment, a small blob) run on the async thread:
/// from the page cache they take microseconds, less than the round trip to a blocking thread.
const INLINE_READ_MAX: u64 = 128 * 1024;

/// Size and version of the file at `path`, without opening it.
pub(super) fn head(path: &std::path::Path) -> Result<BlobInfo, StorageError> {
    let meta = std::fs::metadata(path).map_err(|e| open_error(&e))?;
    blob_info(&meta)
}

/// Opens the file at `path` and tells its size and version.
pub(super) fn open(path: &std::path::Path) -> Result<(File, BlobInfo), StorageError> {
    let file = File::open(path).map_err(|e| open_error(&e))?;
    let meta = file.metadata().map_err(|e| open_error(&e))?;
    let info = blob_info(&meta)?;
    Ok((file, info))
}

/// Opens the file at `path` for reading `range` of the version `expected`; a file replaced
/// since is [`StorageError::Changed`]. The open file keeps that version readable to the end,
/// even if a new one is published meanwhile.
pub(super) fn open_version(
    path: &std::path::Path,
    expected: &BlobInfo,
) -> Result<File, StorageError> {
    // The blob was there when `expected` was taken: gone now means replaced or deleted.
    let (file, info) = open(path).map_err(|error| match error {
        StorageError::BlobNotFound => StorageError::Changed,
        other => other,
    })?;
    match (&expected.etag, &info.etag) {
        (Some(expected), Some(found)) if expected != found => Err(StorageError::Changed),
        _ => Ok(file),
    }
}

/// The first `len` bytes of `file` (all of it when shorter than `len`).
pub(super) fn read_prefix(file: &File, info: &BlobInfo, len: u64) -> Result<Bytes, StorageError> {
    read_at(file, 0..len.min(info.size))
}

fn read_at(file: &File, range: Range<u64>) -> Result<Bytes, StorageError> {
    let mut buffer = vec![0u8; (range.end - range.start) as usize];
    file.read_exact_at(&mut buffer, range.start)
        .map_err(|e| StorageError::from_io(&e))?;
    Ok(Bytes::from(buffer))
}

/// Streams `range` of a local file in large positional reads; small ones on the async thread.
pub(super) fn read(
    file: File,
    range: Range<u64>,
) -> BoxStream<'static, Result<Bytes, StorageError>> {
    futures::stream::try_unfold((Arc::new(file), range), |(file, range)| async move {
        if range.is_empty() {
            return Ok(None);
        }
        let piece = range.start..range.end.min(range.start + READ_CHUNK);
        let rest = piece.end..range.end;
        let bytes = if piece.end - piece.start <= INLINE_READ_MAX {
            read_at(&file, piece)?
        } else {
            let reader = file.clone();
            tokio::task::spawn_blocking(move || read_at(&reader, piece))
                .await
                .map_err(|e| StorageError::Unavailable(e.to_string()))??
        };
        Ok(Some((bytes, (file, rest))))
    })
    .boxed()
}

/// Size and version of a file; a directory is no blob.
fn blob_info(meta: &Metadata) -> Result<BlobInfo, StorageError> {
    if meta.is_dir() {
        return Err(StorageError::BlobNotFound);
    }
    Ok(BlobInfo {
        size: meta.len(),
        etag: Some(etag(meta)),
    })
}

/// The version tag of a file, in object_store's scheme (inode, modification time in
/// microseconds and size, in hex), so that tags from either path compare equal.
fn etag(meta: &Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|mtime| mtime.duration_since(SystemTime::UNIX_EPOCH).ok())
        .unwrap_or_default()
        .as_micros();
    format!("\"{:x}-{mtime:x}-{:x}\"", meta.ino(), meta.len())
}

/// A failure to open or stat a blob's file, classified by its OS error as object_store's would be.
fn open_error(error: &std::io::Error) -> StorageError {
    match error.kind() {
        std::io::ErrorKind::NotFound => StorageError::BlobNotFound,
        _ => StorageError::from_io(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::{ObjectStoreExt, PutPayload};

    #[tokio::test]
    async fn versions_match_object_store_and_change_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let location = object_store::path::Path::from("a.bin");
        store
            .put(&location, PutPayload::from_static(b"first"))
            .await
            .unwrap();
        let path = dir.path().join("a.bin");
        let ours = head(&path).unwrap();
        assert_eq!(ours.size, 5);
        assert_eq!(ours.etag, store.head(&location).await.unwrap().e_tag);
        assert!(open_version(&path, &ours).is_ok());

        store
            .put(&location, PutPayload::from_static(b"second"))
            .await
            .unwrap();
        assert!(matches!(
            open_version(&path, &ours),
            Err(StorageError::Changed)
        ));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            open_version(&path, &ours),
            Err(StorageError::Changed)
        ));
        assert!(matches!(head(&path), Err(StorageError::BlobNotFound)));
    }

    #[test]
    fn directories_are_not_blobs_and_paths_through_files_conflict() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        assert!(matches!(
            head(&dir.path().join("sub")),
            Err(StorageError::BlobNotFound)
        ));
        assert!(matches!(
            open(&dir.path().join("sub")),
            Err(StorageError::BlobNotFound)
        ));
        assert!(matches!(
            open(&dir.path().join("file/below")),
            Err(StorageError::NameConflict)
        ));
    }

    #[tokio::test]
    async fn prefixes_and_ranges_read_exactly_the_bytes_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let content: Vec<u8> = (0..3 * READ_CHUNK as usize + 5).map(|i| i as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let (file, info) = open(&path).unwrap();
        assert_eq!(read_prefix(&file, &info, 10).unwrap(), &content[..10]);
        assert_eq!(read_prefix(&file, &info, u64::MAX).unwrap(), &content[..]);
        for range in [0..0, 7..9, 5..READ_CHUNK + 3, 1..content.len() as u64] {
            let (file, _) = open(&path).unwrap();
            let chunks: Vec<Bytes> = read(file, range.clone())
                .map(|chunk| chunk.unwrap())
                .collect()
                .await;
            assert!(chunks.iter().all(|c| c.len() as u64 <= READ_CHUNK));
            assert_eq!(
                chunks.concat(),
                &content[range.start as usize..range.end as usize]
            );
        }
    }

    #[test]
    fn a_file_shorter_than_its_size_is_a_failed_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, b"abc").unwrap();
        let (file, mut info) = open(&path).unwrap();
        info.size = 10;
        assert!(matches!(
            read_prefix(&file, &info, 10),
            Err(StorageError::Unavailable(_))
        ));
    }
}
