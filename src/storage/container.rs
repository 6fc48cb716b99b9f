//! One container: blob metadata, reads, and the start of staged writes.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt};

use super::local_read::read_file;
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
    /// Whether the local filesystem's extra name rules apply.
    pub(super) local: bool,
    pub(super) parts: PartPlan,
    pub(super) budget: BufferBudget,
}

impl Container {
    fn path(&self, blob: &BlobName) -> Result<Path, StorageError> {
        if self.local
            && let Some(problem) = blob.local_problem()
        {
            return Err(StorageError::InvalidName(format!(
                "invalid blob name: {problem}, which the local backend cannot store"
            )));
        }
        blob.path()
    }

    /// Size and version of a blob.
    pub async fn head(&self, blob: &BlobName) -> Result<BlobInfo, StorageError> {
        let meta = self.store.head(&self.path(blob)?).await?;
        Ok(BlobInfo {
            size: meta.size,
            etag: meta.e_tag,
        })
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
        let options = GetOptions {
            if_match: info.etag.clone(),
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let result = self.store.get_opts(&self.path(blob)?, options).await?;
        Ok(match result.payload {
            GetResultPayload::File(file, _) => read_file(file, result.range),
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
        let upload = self.store.put_multipart(&staging).await?;
        Ok(StagedBlob {
            store: self.store.clone(),
            staging,
            target,
            writer: Some(PartWriter::new(
                upload,
                self.parts.size,
                self.parts.in_flight,
                self.budget.clone(),
            )),
            settled: false,
        })
    }
}
