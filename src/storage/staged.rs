//! Staged uploads: written under a private name, published by one copy.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutMode};

use super::StorageError;
use super::azure::CopyStatus;
use super::error::summarize;
use super::parts::{Finished, PartWriter};

/// Longest wait for Azure to finish a copy it reported as pending.
const COPY_WAIT: Duration = Duration::from_secs(60);

/// An upload in progress under a private name. Dropped without commit, it is removed.
pub struct StagedBlob {
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) staging: Path,
    pub(super) target: Path,
    pub(super) writer: Option<PartWriter>,
    pub(super) settled: bool,
}

impl StagedBlob {
    /// Appends bytes, waiting while too many parts are in flight or the buffer budget is spent.
    pub async fn write(&mut self, bytes: Bytes) -> Result<(), StorageError> {
        let writer = self.writer.as_mut().expect("writer present until commit");
        writer.put(bytes).await?;
        Ok(())
    }

    /// Completes the upload and publishes it under its name.
    ///
    /// Publishing is one copy (a hard link locally, a server-side copy on Azure, conditional on
    /// the name being free when `overwrite` is false). Once it succeeded the upload has
    /// succeeded: removing the staged copy afterwards is best effort, retried on drop.
    pub async fn commit(mut self, overwrite: bool) -> Result<(), StorageError> {
        let writer = self.writer.take().expect("writer present until commit");
        if let Finished::Held(payload, _reserved) = writer.finish().await? {
            let mode = if overwrite {
                PutMode::Overwrite
            } else {
                PutMode::Create
            };
            self.store
                .put_opts(&self.target, payload, mode.into())
                .await?;
            // Nothing was staged, so nothing is left to remove.
            self.settled = true;
            return Ok(());
        }
        if overwrite {
            self.store.copy(&self.staging, &self.target).await?;
        } else {
            self.store
                .copy_if_not_exists(&self.staging, &self.target)
                .await?;
        }
        // The staged blob is the copy's source: it must stay until the copy is complete.
        let status = || async {
            let options = GetOptions {
                head: true,
                ..GetOptions::default()
            };
            let head = self.store.get_opts(&self.target, options).await?;
            Ok(head.extensions.get::<CopyStatus>().cloned())
        };
        wait_for_copy(status, COPY_WAIT).await?;
        match self.store.delete(&self.staging).await {
            Ok(()) => self.settled = true,
            Err(error) => {
                tracing::warn!(error = %summarize(&error), "a staged upload was not removed")
            }
        }
        Ok(())
    }
}

/// Waits while `status` reports a copy as pending, for at most `longest`. Azure may answer Copy Blob before the copy is
/// done (`x-ms-copy-status: pending`), and object_store does not look; no client may hear that its
/// upload succeeded before then. No status (the local and memory stores) means done.
async fn wait_for_copy<F, Fut>(mut status: F, longest: Duration) -> Result<(), StorageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<CopyStatus>, StorageError>>,
{
    let deadline = tokio::time::Instant::now() + longest;
    let mut pause = Duration::from_millis(50);
    loop {
        let status = status().await?;
        match status.as_ref().map(|status| status.0.as_str()) {
            None | Some("success") => return Ok(()),
            Some("pending") if tokio::time::Instant::now() < deadline => {}
            Some(other) => {
                return Err(StorageError::Unavailable(format!(
                    "Azure did not complete the copy that publishes the upload (copy status \
                     {other})"
                )));
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

impl Drop for StagedBlob {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let writer = self.writer.take();
        let store = self.store.clone();
        let staging = self.staging.clone();
        // Best effort: the request that owned this upload is gone, so nobody awaits the cleanup.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Some(writer) = writer {
                    writer.abort().await;
                }
                let _ = store.delete(&staging).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{BlobName, Container, memory_container};
    use futures::TryStreamExt;

    fn blob(name: &str) -> BlobName {
        BlobName::parse(name).unwrap()
    }

    async fn read_all(container: &Container, name: &BlobName) -> Vec<u8> {
        let info = container.head(name).await.unwrap();
        let chunks: Vec<Bytes> = container
            .read(name, &info, None)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        chunks.concat()
    }

    #[tokio::test]
    async fn staged_upload_is_invisible_until_commit() {
        let container = memory_container().await;
        let name = blob("a/b");
        let mut staged = container.stage(&name).await.unwrap();
        staged.write(Bytes::from_static(b"hello")).await.unwrap();
        assert!(!container.exists(&name).await.unwrap());
        staged.commit(false).await.unwrap();
        assert_eq!(read_all(&container, &name).await, b"hello");
    }

    #[tokio::test]
    async fn create_only_commit_keeps_the_existing_blob() {
        let container = memory_container().await;
        let name = blob("x");
        for (content, overwrite) in [(&b"first"[..], false), (b"second", false), (b"third", true)] {
            let mut staged = container.stage(&name).await.unwrap();
            staged.write(Bytes::copy_from_slice(content)).await.unwrap();
            let result = staged.commit(overwrite).await;
            assert_eq!(result.is_ok(), content != b"second");
        }
        assert_eq!(read_all(&container, &name).await, b"third");
    }

    #[tokio::test]
    async fn publishing_waits_for_a_pending_copy_and_fails_on_a_failed_one() {
        let scripted = |statuses: &[&str]| {
            let mut statuses: Vec<Option<CopyStatus>> = statuses
                .iter()
                .map(|s| Some(CopyStatus((*s).to_owned())))
                .collect();
            statuses.reverse();
            let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let counter = asked.clone();
            let status = move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let next = statuses
                    .pop()
                    .unwrap_or_else(|| Some(CopyStatus("pending".into())));
                async move { Ok(next) }
            };
            (status, asked)
        };
        let longest = Duration::from_millis(500);
        let (status, asked) = scripted(&["pending", "pending", "success"]);
        assert!(wait_for_copy(status, longest).await.is_ok());
        assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 3);
        let (status, _) = scripted(&["pending", "failed"]);
        let error = wait_for_copy(status, longest)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("copy status failed"), "{error}");
        // Pending for ever: given up on, never taken for success.
        let (status, _) = scripted(&[]);
        assert!(wait_for_copy(status, longest).await.is_err());
        assert!(wait_for_copy(|| async { Ok(None) }, longest).await.is_ok());
    }
}
