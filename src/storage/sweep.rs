//! Removal of staged uploads that a crash or a kill left behind.

use std::path::PathBuf;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use super::STAGING_PREFIX;
use super::error::summarize;

/// Age after which a staged upload is certainly abandoned.
const STAGING_MAX_AGE: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// Removes staged uploads old enough that no upload can still be writing them: leftovers of a
/// crash or a kill, which the per-upload cleanup never saw. In a local container (`local_dir`)
/// the directory itself is read, since object_store does not list the `<uuid>#N` part files
/// that an upload killed mid-body leaves.
pub(super) async fn sweep_staging(store: Arc<dyn ObjectStore>, local_dir: Option<PathBuf>) {
    let cutoff = chrono::Utc::now() - STAGING_MAX_AGE;
    if let Some(dir) = local_dir {
        sweep_local_staging(&dir.join(STAGING_PREFIX), cutoff.into()).await;
        return;
    }
    let stale: Vec<Path> = store
        .list(Some(&Path::from(STAGING_PREFIX)))
        .try_filter_map(
            |meta| async move { Ok((meta.last_modified < cutoff).then_some(meta.location)) },
        )
        .try_collect()
        .await
        .unwrap_or_default();
    for location in stale {
        if let Err(error) = store.delete(&location).await {
            tracing::warn!(error = %summarize(&error), "could not remove a stale staged upload");
        }
    }
}

/// Removes the files in `staging` last modified before `cutoff`.
async fn sweep_local_staging(staging: &std::path::Path, cutoff: std::time::SystemTime) {
    let Ok(mut entries) = tokio::fs::read_dir(staging).await else {
        return; // No upload has been staged here yet.
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let stale = entry.metadata().await.is_ok_and(|meta| {
            meta.is_file() && meta.modified().is_ok_and(|modified| modified < cutoff)
        });
        if stale && let Err(error) = tokio::fs::remove_file(entry.path()).await {
            tracing::warn!(error = %summarize(&error), "could not remove a stale staged upload");
        }
    }
}
