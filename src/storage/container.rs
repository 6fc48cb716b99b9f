//! One container: blob metadata, reads, and the start of staged writes.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt};

use super::local;
use super::parts::PartWriter;
use super::{BlobName, BufferBudget, STAGING_PREFIX, StagedBlob, StorageError};

/// How an upload is cut into parts on its way to storage; part size × parts in flight bounds
/// the memory one upload holds.
#[derive(Debug, Clone, Copy)]
pub(super) struct PartPlan {
    size: usize,
    in_flight: usize,
}

/// Local disk: writes go to the page cache; two 1 MiB parts keep it busy with little memory.
pub(super) const LOCAL_PARTS: PartPlan = PartPlan {
    size: 1024 * 1024,
    in_flight: 2,
};
/// Azure: each part is one Put Block round trip (tens of ms); 8 MiB blocks with 4 in flight keep
/// the connection full at hundreds of MB/s while holding at most 32 MiB per upload.
pub(super) const AZURE_PARTS: PartPlan = PartPlan {
    size: 8 * 1024 * 1024,
    in_flight: 4,
};

/// Facts about a stored blob.
#[derive(Debug, Clone)]
pub struct BlobInfo {
    /// Size of the stored (encrypted) blob in bytes.
    pub size: u64,
    /// Version tag; reads pinned to it fail with [`StorageError::Changed`] if the blob is replaced.
    pub etag: Option<String>,
}

/// One container: reads, and staged writes.
#[derive(Clone)]
pub struct Container {
    pub(super) store: Arc<dyn ObjectStore>,
    /// The local backend's store, whose reads bypass `object_store` (see [`local`]) and whose
    /// file system has extra name rules.
    pub(super) local: Option<Arc<LocalFileSystem>>,
    pub(super) parts: PartPlan,
    pub(super) budget: BufferBudget,
}

impl Container {
    fn path(&self, blob: &BlobName) -> Result<Path, StorageError> {
        if self.local.is_some()
            && let Some(problem) = blob.local_problem()
        {
            return Err(StorageError::InvalidName(format!(
                "invalid blob name: {problem}, which the local backend cannot store"
            )));
        }
        blob.path()
    }

    /// Where a blob of the local backend lies on disk.
    fn local_file(
        &self,
        store: &LocalFileSystem,
        blob: &BlobName,
    ) -> Result<std::path::PathBuf, StorageError> {
        Ok(store.path_to_filesystem(&self.path(blob)?)?)
    }

    /// Size and version of a blob.
    pub async fn head(&self, blob: &BlobName) -> Result<BlobInfo, StorageError> {
        if let Some(store) = &self.local {
            return local::head(&self.local_file(store, blob)?);
        }
        let meta = self.store.head(&self.path(blob)?).await?;
        Ok(BlobInfo {
            size: meta.size,
            etag: meta.e_tag,
        })
    }

    /// Size and version of a blob with its start, in one storage operation where the backend
    /// allows: all of the blob when it is at most `whole_max` bytes, else at least its first
    /// `at_least` bytes (up to `whole_max`, where the backend must choose before it knows the size).
    pub async fn head_and_prefix(
        &self,
        blob: &BlobName,
        whole_max: u64,
        at_least: u64,
    ) -> Result<(BlobInfo, Bytes), StorageError> {
        if let Some(store) = &self.local {
            let (file, info) = local::open(&self.local_file(store, blob)?)?;
            let len = if info.size <= whole_max {
                info.size
            } else {
                at_least
            };
            let prefix = local::read_prefix(&file, &info, len)?;
            return Ok((info, prefix));
        }
        let options = GetOptions {
            range: Some(GetRange::Bounded(0..whole_max.max(at_least))),
            ..GetOptions::default()
        };
        match self.store.get_opts(&self.path(blob)?, options).await {
            Ok(result) => {
                let info = BlobInfo {
                    size: result.meta.size,
                    etag: result.meta.e_tag.clone(),
                };
                Ok((info, result.bytes().await?))
            }
            Err(error @ object_store::Error::NotFound { .. }) => Err(error.into()),
            // An empty blob has no byte 0 to start a range at; only a head tells it apart.
            Err(error) => match self.head(blob).await? {
                info if info.size == 0 => Ok((info, Bytes::new())),
                _ => Err(error.into()),
            },
        }
    }

    /// Whether a blob of that name exists.
    pub async fn exists(&self, blob: &BlobName) -> Result<bool, StorageError> {
        match self.head(blob).await {
            Ok(_) => Ok(true),
            Err(StorageError::BlobNotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Streams `range` of the blob (all of it for `None`), failing if it no longer matches `info`.
    pub async fn read(
        &self,
        blob: &BlobName,
        info: &BlobInfo,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
        if let Some(store) = &self.local {
            let file = local::open_version(&self.local_file(store, blob)?, info)?;
            return Ok(local::read(file, range.unwrap_or(0..info.size)));
        }
        let options = GetOptions {
            if_match: info.etag.clone(),
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let result = self.store.get_opts(&self.path(blob)?, options).await?;
        Ok(match result.payload {
            GetResultPayload::File(file, _) => local::read(file, result.range),
            GetResultPayload::Stream(stream) => stream.map_err(StorageError::from).boxed(),
        })
    }

    /// Waits until `bytes` of the process-wide buffer budget are free and holds them until the
    /// permit is dropped.
    pub async fn reserve_buffer(&self, bytes: usize) -> tokio::sync::OwnedSemaphorePermit {
        self.budget.reserve(bytes).await
    }

    /// Starts a staged upload that becomes visible only through [`StagedBlob::commit`].
    pub async fn stage(&self, blob: &BlobName) -> Result<StagedBlob, StorageError> {
        let target = self.path(blob)?;
        let staging = Path::from(format!("{STAGING_PREFIX}/{}", uuid::Uuid::new_v4()));
        Ok(StagedBlob {
            store: self.store.clone(),
            staging: staging.clone(),
            target,
            writer: Some(PartWriter::new(
                self.store.clone(),
                staging,
                self.parts.size,
                self.parts.in_flight,
                self.budget.clone(),
            )),
            settled: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Backend, ContainerName, Storage, memory_container};

    async fn put(container: &Container, name: &str, content: &[u8]) -> BlobName {
        let blob = BlobName::parse(name).unwrap();
        let mut staged = container.stage(&blob).await.unwrap();
        staged.write(Bytes::copy_from_slice(content)).await.unwrap();
        staged.commit(true).await.unwrap();
        blob
    }

    async fn local_container(dir: &std::path::Path) -> Container {
        std::fs::create_dir(dir.join("box")).unwrap();
        let storage = Storage::open(Backend::Local(dir.to_owned())).unwrap();
        storage
            .container(&ContainerName::parse("box").unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_small_blob_is_read_whole_and_a_large_one_only_at_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        for container in [local_container(dir.path()).await, memory_container().await] {
            let small = put(&container, "small", &content[..100]).await;
            let large = put(&container, "large", &content).await;
            let (info, prefix) = container.head_and_prefix(&small, 1000, 10).await.unwrap();
            assert_eq!((info.size, &prefix[..]), (100, &content[..100]));
            let (info, prefix) = container.head_and_prefix(&large, 1000, 10).await.unwrap();
            assert_eq!(info.size, 5000);
            assert!(
                prefix.len() >= 10 && prefix.len() <= 1000,
                "{}",
                prefix.len()
            );
            assert_eq!(&prefix[..], &content[..prefix.len()]);
            assert_eq!(info.etag, container.head(&large).await.unwrap().etag);
        }
    }

    #[tokio::test]
    async fn an_empty_or_missing_blob_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        for container in [local_container(dir.path()).await, memory_container().await] {
            let empty = put(&container, "empty", b"").await;
            let (info, prefix) = container.head_and_prefix(&empty, 1000, 10).await.unwrap();
            assert_eq!((info.size, prefix.len()), (0, 0));
            let missing = BlobName::parse("missing").unwrap();
            assert!(matches!(
                container.head_and_prefix(&missing, 1000, 10).await,
                Err(StorageError::BlobNotFound)
            ));
            assert!(!container.exists(&missing).await.unwrap());
            assert!(container.exists(&empty).await.unwrap());
        }
    }

    #[tokio::test]
    async fn a_read_pinned_to_a_replaced_blob_fails() {
        let dir = tempfile::tempdir().unwrap();
        for container in [local_container(dir.path()).await, memory_container().await] {
            let blob = put(&container, "b", b"first version").await;
            let first = container.head(&blob).await.unwrap();
            let chunks: Vec<Bytes> = container
                .read(&blob, &first, Some(6..13))
                .await
                .unwrap()
                .map(Result::unwrap)
                .collect()
                .await;
            assert_eq!(chunks.concat(), b"version");
            put(&container, "b", b"second version, longer").await;
            assert!(matches!(
                container.read(&blob, &first, None).await.err(),
                Some(StorageError::Changed)
            ));
        }
    }
}
