//! Where ciphertext lives: containers of named blobs behind the `object_store` crate.
//!
//! Every upload is staged under a private name and moved into place only when complete, so a
//! reader never sees a partial blob and a failed upload leaves the old blob (or none) in place.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use object_store::azure::MicrosoftAzure;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, PutMode};
use thiserror::Error;

mod azure;
mod local;
mod names;
mod parts;

pub use azure::AzureAccount;
use azure::{CopyStatus, list_container};
pub use names::{BlobName, ContainerName};
pub use parts::BufferBudget;
use parts::{Finished, PartWriter};

/// Prefix under which uploads are staged inside a container; blob names may not start with it.
pub const STAGING_PREFIX: &str = ".blobprox-staging";

/// How long a readiness answer is reused.
const READINESS_REUSE: Duration = Duration::from_secs(5);
/// Age after which a staged upload is certainly abandoned.
const STAGING_MAX_AGE: chrono::TimeDelta = chrono::TimeDelta::hours(24);
/// Longest wait for Azure to finish a copy it reported as pending.
const COPY_WAIT: Duration = Duration::from_secs(60);
/// A container probed to check that the account answers; it need not exist.
const PROBE_CONTAINER: &str = "blobprox-readiness-probe";

/// How an upload is cut into parts on its way to storage; part size × parts in flight bounds
/// the memory one upload holds.
#[derive(Debug, Clone, Copy)]
struct PartPlan {
    size: usize,
    in_flight: usize,
}

/// Local disk: writes go to the page cache; two 1 MiB parts keep it busy with little memory.
const LOCAL_PARTS: PartPlan = PartPlan {
    size: 1024 * 1024,
    in_flight: 2,
};
/// Azure: each part is one Put Block round trip (tens of ms); 8 MiB blocks with 4 in flight keep
/// the connection full at hundreds of MB/s while holding at most 32 MiB per upload.
const AZURE_PARTS: PartPlan = PartPlan {
    size: 8 * 1024 * 1024,
    in_flight: 4,
};

/// Storage failures, in terms a client can act on.
#[derive(Debug, Clone, Error)]
pub enum StorageError {
    /// The container does not exist.
    #[error("container not found")]
    ContainerNotFound,
    /// The blob does not exist.
    #[error("blob not found")]
    BlobNotFound,
    /// A blob already has the name and overwriting was not asked for.
    #[error("blob already exists")]
    AlreadyExists,
    /// The blob changed while it was being read.
    #[error("the blob changed while it was being read")]
    Changed,
    /// The name cannot be stored on this backend.
    #[error("{0}")]
    InvalidName(String),
    /// The name is a directory of other blobs, or runs through a blob (local backend).
    #[error("the blob name collides with an existing blob or blob path")]
    NameConflict,
    /// The storage has no space left for the upload.
    #[error("storage is full: {0}")]
    Full(String),
    /// The storage service refused this proxy's own credentials.
    #[error("storage refused the proxy's credentials: {0}")]
    Unauthorized(String),
    /// The storage service failed or could not be reached.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The storage URL or its settings are unusable.
    #[error("invalid storage configuration: {0}")]
    Config(String),
}

impl From<object_store::Error> for StorageError {
    fn from(error: object_store::Error) -> Self {
        use object_store::Error as E;
        match &error {
            E::NotFound { .. } => StorageError::BlobNotFound,
            E::AlreadyExists { .. } => StorageError::AlreadyExists,
            E::Precondition { .. } | E::NotModified { .. } => StorageError::Changed,
            E::InvalidPath { .. } => {
                StorageError::InvalidName("the blob name cannot be stored on this backend".into())
            }
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
                StorageError::Unauthorized(summarize(&error))
            }
            // Local disk trouble surfaces as generic errors; the OS error tells which.
            _ => match innermost_io_error(&error) {
                Some(io) => StorageError::from_io(io),
                None => StorageError::Unavailable(summarize(&error)),
            },
        }
    }
}

impl StorageError {
    /// Classifies a local disk failure by its OS error.
    fn from_io(error: &std::io::Error) -> Self {
        use std::io::ErrorKind;
        match error.kind() {
            ErrorKind::StorageFull => StorageError::Full(summarize(error)),
            ErrorKind::NotADirectory | ErrorKind::IsADirectory => StorageError::NameConflict,
            _ => StorageError::Unavailable(summarize(error)),
        }
    }
}

/// Which service holds the containers.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A local directory; container `C` is its subdirectory `C`, blob `N` the file `C/N`.
    Local(PathBuf),
    /// Process memory; every valid container name exists. For tests.
    Memory,
    /// An Azure Blob Storage account (or the Azurite emulator).
    Azure(AzureAccount),
}

impl Backend {
    /// Chooses the backend: a connection string wins; else `STORAGE_URL`; else `default_dir`.
    pub fn from_settings(
        storage_url: Option<&str>,
        connection_string: Option<&str>,
        creds_file: &std::path::Path,
        default_dir: PathBuf,
    ) -> Result<Self, StorageError> {
        match (connection_string, storage_url) {
            (Some(text), _) => Ok(Backend::Azure(AzureAccount::from_connection_string(text)?)),
            (None, Some(url)) if url.starts_with("https://") => Ok(Backend::Azure(
                AzureAccount::from_account_url(url, creds_file)?,
            )),
            (None, Some(url)) => Self::from_url(url),
            (None, None) => Ok(Backend::Local(default_dir)),
        }
    }

    /// Reads a non-Azure `STORAGE_URL`: `file:///absolute/dir` or `memory://`.
    pub fn from_url(url: &str) -> Result<Self, StorageError> {
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(StorageError::Config(format!(
                    "{url}: a file URL needs an absolute path, as in file:///srv/blobs"
                )));
            }
            Ok(Backend::Local(PathBuf::from(path)))
        } else if url == "memory://" || url == "memory:///" {
            Ok(Backend::Memory)
        } else {
            Err(StorageError::Config(format!(
                "{url}: STORAGE_URL must be https://ACCOUNT.blob.core.windows.net, \
                 file:///absolute/dir or memory://"
            )))
        }
    }

    /// A one-line description for logs.
    pub fn describe(&self) -> String {
        match self {
            Backend::Local(dir) => format!("local directory {}", dir.display()),
            Backend::Memory => "memory (nothing is kept after exit)".into(),
            Backend::Azure(account) => format!("{account:?}"),
        }
    }
}

/// All containers of one backend, each store built once and reused.
pub struct Storage {
    backend: Backend,
    containers: RwLock<HashMap<ContainerName, Container>>,
    probe: tokio::sync::OnceCell<MicrosoftAzure>,
    last_check: tokio::sync::Mutex<Option<(Instant, Result<(), StorageError>)>>,
    budget: BufferBudget,
}

/// `MAX_BUFFER_BYTES` by default: room for one Azure upload's 5 parts (40 MiB), so one upload
/// alone keeps its speed, while any number of transfers together buffer no more than a small
/// VM can spare.
pub const DEFAULT_MAX_BUFFER_BYTES: usize = 64 * 1024 * 1024;

impl Storage {
    /// Opens the backend; a local directory is created when missing.
    pub fn open(backend: Backend) -> Result<Self, StorageError> {
        if let Backend::Local(dir) = &backend {
            std::fs::create_dir_all(dir).map_err(|e| {
                StorageError::Config(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        Ok(Self {
            backend,
            containers: RwLock::default(),
            probe: tokio::sync::OnceCell::new(),
            last_check: tokio::sync::Mutex::default(),
            budget: BufferBudget::new(DEFAULT_MAX_BUFFER_BYTES),
        })
    }

    /// Bounds what all transfers together buffer to `bytes` (`MAX_BUFFER_BYTES`).
    pub fn with_max_buffer_bytes(mut self, bytes: usize) -> Self {
        self.budget = BufferBudget::new(bytes);
        self
    }

    /// Checks that the backend answers; the reason when it does not. The answer is reused for a
    /// few seconds, so that probes (which need no credentials) cannot hammer storage.
    pub async fn check_reachable(&self) -> Result<(), StorageError> {
        let mut last = self.last_check.lock().await;
        if let Some((at, result)) = last.as_ref()
            && at.elapsed() < READINESS_REUSE
        {
            return result.clone();
        }
        let result = self.probe().await;
        *last = Some((Instant::now(), result.clone()));
        result
    }

    async fn probe(&self) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Local(dir) => match tokio::fs::metadata(dir).await {
                Ok(meta) if meta.is_dir() => Ok(()),
                Ok(_) => Err(StorageError::Unavailable(
                    "the local storage path is not a directory".into(),
                )),
                Err(e) => Err(StorageError::Unavailable(format!(
                    "the local storage directory cannot be read ({e})"
                ))),
            },
            Backend::Memory => Ok(()),
            Backend::Azure(account) => {
                // Listing a container that cannot exist proves the account answers and accepts
                // the credential: "not found" is the good outcome.
                let store = self
                    .probe
                    .get_or_try_init(|| async { account.container_store(PROBE_CONTAINER) })
                    .await?;
                match list_container(store).await {
                    Ok(()) | Err(StorageError::ContainerNotFound) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// The container `name`, or [`StorageError::ContainerNotFound`].
    pub async fn container(&self, name: &ContainerName) -> Result<Container, StorageError> {
        if let Backend::Local(root) = &self.backend {
            let dir = root.join(name.as_str());
            // A stat of a directory in use is answered from the kernel's caches in microseconds,
            // less than handing it to a blocking thread and back, which every request would pay.
            if !std::fs::metadata(&dir).is_ok_and(|m| m.is_dir()) {
                return Err(StorageError::ContainerNotFound);
            }
        }
        if let Some(container) = self.containers.read().expect("lock").get(name) {
            return Ok(container.clone());
        }
        let (store, local): (Arc<dyn ObjectStore>, _) = match &self.backend {
            Backend::Local(root) => {
                // fsync before success: a 200 must survive a power cut.
                let store = LocalFileSystem::new_with_prefix(root.join(name.as_str()))
                    .map_err(StorageError::from)?
                    .with_fsync(true);
                let store = Arc::new(store);
                (store.clone(), Some(store))
            }
            Backend::Memory => (Arc::new(InMemory::new()), None),
            Backend::Azure(account) => {
                let store = account.container_store(name.as_str())?;
                // Only a container that exists is remembered; a missing one is asked again.
                list_container(&store).await?;
                (Arc::new(store), None)
            }
        };
        let local_dir = match &self.backend {
            Backend::Local(root) => Some(root.join(name.as_str())),
            _ => None,
        };
        let parts = match self.backend {
            Backend::Local(_) | Backend::Memory => LOCAL_PARTS,
            Backend::Azure(_) => AZURE_PARTS,
        };
        let mut containers = self.containers.write().expect("lock");
        let container = containers
            .entry(name.clone())
            .or_insert_with(|| {
                tokio::spawn(sweep_staging(store.clone(), local_dir));
                Container {
                    store,
                    local,
                    parts,
                    budget: self.budget.clone(),
                }
            })
            .clone();
        Ok(container)
    }
}

/// Removes staged uploads old enough that no upload can still be writing them: leftovers of a
/// crash or a kill, which the per-upload cleanup never saw. In a local container (`local_dir`)
/// the directory itself is read, since object_store does not list the `<uuid>#N` part files
/// that an upload killed mid-body leaves.
async fn sweep_staging(store: Arc<dyn ObjectStore>, local_dir: Option<PathBuf>) {
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

/// One line about a storage error that names no blob, path or URL (blob names can identify
/// patients, and these texts reach logs and clients). Only texts that cannot hold a name are
/// used: Azure's error code and message when the error carries Azure's XML body, else the OS
/// error, else the kind of HTTP failure or the HTTP status.
fn summarize(error: &(dyn std::error::Error + 'static)) -> String {
    let text = error.to_string();
    let tag = |name: &str| {
        let start = text.find(&format!("<{name}>"))? + name.len() + 2;
        let end = text[start..].find(&format!("</{name}>"))? + start;
        text[start..end].lines().next().map(str::trim)
    };
    if let (Some(code), Some(message)) = (tag("Code"), tag("Message")) {
        return format!("Azure answered {code}: {message}");
    }
    if let Some(io) = innermost_io_error(error) {
        // A raw OS error prints only its description; other I/O errors may carry a path.
        return match io.raw_os_error() {
            Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
            None => io.kind().to_string(),
        };
    }
    let mut chain = std::iter::successors(Some(error), |e| e.source());
    if let Some(http) = chain.find_map(|e| e.downcast_ref::<object_store::client::HttpError>()) {
        return format!("the request to storage failed ({:?})", http.kind());
    }
    // object_store's request errors read "... status code: 503 Service Unavailable: ...".
    let status = text
        .split_once("status code: ")
        .and_then(|(_, rest)| rest.get(..3))
        .filter(|code| code.bytes().all(|b| b.is_ascii_digit()));
    match status {
        Some(code) => format!("storage answered HTTP {code}"),
        None => "the storage backend failed".into(),
    }
}

/// The innermost I/O error among the causes of `error`.
fn innermost_io_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a std::io::Error> {
    std::iter::successors(Some(error), |e| e.source())
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .last()
}

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
    store: Arc<dyn ObjectStore>,
    /// The local backend's store, whose reads bypass `object_store` (see [`local`]) and whose
    /// file system has extra name rules.
    local: Option<Arc<LocalFileSystem>>,
    parts: PartPlan,
    budget: BufferBudget,
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

/// An upload in progress under a private name. Dropped without commit, it is removed.
pub struct StagedBlob {
    store: Arc<dyn ObjectStore>,
    staging: Path,
    target: Path,
    writer: Option<PartWriter>,
    settled: bool,
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
    /// An upload that fits in one part is published by one put; a larger one by one copy of
    /// the staged blob (a hard link locally, a server-side copy on Azure). Either is atomic, and
    /// conditional on the name being free when `overwrite` is false. Once it succeeded the
    /// upload has succeeded: removing the staged copy afterwards is best effort, retried on drop.
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

    #[test]
    fn storage_errors_become_one_line_without_names() {
        let azure = std::io::Error::other(
            "Error performing GET http://h/a/c/patient-42.csv in 3ms - 403 Forbidden: \
             <?xml version=\"1.0\"?>\n<Error>\n  <Code>AuthorizationFailure</Code>\n  \
             <Message>Server failed to authenticate the request.\nRequestId:1</Message>\n</Error>",
        );
        assert_eq!(
            summarize(&azure),
            "Azure answered AuthorizationFailure: Server failed to authenticate the request."
        );
        let local = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(Named {
                text: "Unable to copy file from /data/c/patient-42.csv".into(),
                source: Some(std::io::Error::from_raw_os_error(28)),
            }),
        };
        let summary = summarize(&local);
        assert!(summary.starts_with("No space left on device"), "{summary}");
        assert!(
            matches!(StorageError::from(local), StorageError::Full(text) if !text.contains("patient"))
        );
        // object_store's own refusal of a local name ends with the name itself.
        let refused = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(Named {
                text: "Filenames containing trailing '/#\\d+/' are not supported: dir/p-42#7"
                    .into(),
                source: None,
            }),
        };
        let error = StorageError::from(refused).to_string();
        assert!(!error.contains("p-42"), "{error}");
        let path_in_io = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(std::io::Error::other("cannot open /data/c/patient-42.csv")),
        };
        let error = StorageError::from(path_in_io).to_string();
        assert!(!error.contains("patient"), "{error}");
    }

    /// An error whose text names a blob, as object_store's local errors do.
    #[derive(Debug)]
    struct Named {
        text: String,
        source: Option<std::io::Error>,
    }

    impl std::fmt::Display for Named {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match &self.source {
                Some(source) => write!(f, "{}: {source}", self.text),
                None => f.write_str(&self.text),
            }
        }
    }

    impl std::error::Error for Named {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.source.as_ref().map(|e| e as _)
        }
    }

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
        let storage = Storage::open(Backend::Memory).unwrap();
        let container = storage
            .container(&ContainerName::parse("test").unwrap())
            .await
            .unwrap();
        let name = blob("a/b");
        let mut staged = container.stage(&name).await.unwrap();
        staged.write(Bytes::from_static(b"hello")).await.unwrap();
        assert!(!container.exists(&name).await.unwrap());
        staged.commit(false).await.unwrap();
        assert_eq!(read_all(&container, &name).await, b"hello");
    }

    #[tokio::test]
    async fn create_only_commit_keeps_the_existing_blob() {
        let storage = Storage::open(Backend::Memory).unwrap();
        let container = storage
            .container(&ContainerName::parse("test").unwrap())
            .await
            .unwrap();
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

    #[tokio::test]
    async fn local_containers_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(Backend::Local(dir.path().to_owned())).unwrap();
        let name = ContainerName::parse("present").unwrap();
        assert!(matches!(
            storage.container(&name).await,
            Err(StorageError::ContainerNotFound)
        ));
        std::fs::create_dir(dir.path().join("present")).unwrap();
        assert!(storage.container(&name).await.is_ok());
    }
}
