//! Where ciphertext lives: containers of named blobs behind the `object_store` crate.
//!
//! Every upload is staged under a private name and moved into place only when complete, so a
//! reader never sees a partial blob and a failed upload leaves the old blob (or none) in place.

mod azure;
mod backend;
mod container;
mod error;
mod local;
mod names;
mod parts;
mod staged;
mod stores;
mod sweep;

pub use azure::AzureAccount;
pub use backend::Backend;
pub use container::{BlobInfo, Container};
pub use error::StorageError;
pub use names::{BlobName, BlobNameProblem, ContainerName, NameError};
pub use parts::BufferBudget;
pub use staged::StagedBlob;
#[cfg(test)]
pub(crate) use stores::memory_container;
pub use stores::{DEFAULT_MAX_BUFFER_BYTES, Storage};

/// Prefix under which uploads are staged inside a container; blob names may not start with it.
pub const STAGING_PREFIX: &str = ".blobprox-staging";
