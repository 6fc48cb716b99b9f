//! Which service holds the containers, chosen from the settings.

use std::path::PathBuf;

use super::{AzureAccount, StorageError};

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
