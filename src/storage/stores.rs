//! All containers of one backend: each store built once and reused, and readiness checks.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use object_store::azure::MicrosoftAzure;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;

use super::azure::list_container;
use super::container::{AZURE_PARTS, LOCAL_PARTS};
use super::sweep::sweep_staging;
use super::{Backend, BufferBudget, Container, ContainerName, StorageError};

/// How long a readiness answer is reused.
const READINESS_REUSE: Duration = Duration::from_secs(5);
/// A container probed to check that the account answers; it need not exist.
const PROBE_CONTAINER: &str = "blobprox-readiness-probe";

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

/// A fresh in-memory container, for tests.
#[cfg(test)]
pub(crate) async fn memory_container() -> Container {
    Storage::open(Backend::Memory)
        .unwrap()
        .container(&ContainerName::parse("test").unwrap())
        .await
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

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
