//! The proxy's key files in `KEY_VAULT_PATH`: its RSA key pair and the original's static key.

use std::io::Write;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::crypto::CryptoError;
use crate::crypto::data_key::DataKey;
use crate::crypto::rsa::PrivateKey;

/// File name of the PEM private key (PKCS#8 written, PKCS#1 also read).
pub const PRIVATE_KEY_FILE: &str = "rsa_private_key.pem";
/// File name of the SubjectPublicKeyInfo PEM public key.
pub const PUBLIC_KEY_FILE: &str = "rsa_public_key.pem";
/// File name of the static Fernet key (44 characters of base64).
pub const SYMMETRIC_KEY_FILE: &str = "symmetric_key.key";

const KEY_FILES: [&str; 3] = [PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, SYMMETRIC_KEY_FILE];

/// Problems with key files.
#[derive(Debug, Error)]
pub enum KeyError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A file exists but does not hold a usable key.
    #[error("{path}: {source}")]
    Invalid {
        /// The file concerned.
        path: PathBuf,
        /// Why the key was refused.
        source: CryptoError,
    },
    /// Only some of the three files exist, so keygen will not guess which to keep.
    #[error("{0} holds only some of the key files; restore them or rerun keygen with --force")]
    Partial(PathBuf),
}

/// The keys a running proxy holds.
pub struct ProxyKeys {
    /// Unwraps the data keys sent to this proxy; its public half is served at `/key/public`.
    pub private_key: PrivateKey,
    /// The original's single Fernet key, used for uploads under `--static-data-key`.
    pub symmetric_key: DataKey,
}

/// What `keygen` did.
#[derive(Debug, PartialEq, Eq)]
pub enum KeygenOutcome {
    /// New keys were written.
    Created,
    /// All three files were already there and were left alone.
    KeptExisting,
}

/// Whether all three key files exist in `dir`.
pub fn key_files_present(dir: &Path) -> bool {
    KEY_FILES.iter().all(|name| dir.join(name).is_file())
}

/// Writes a new RSA-2048 key pair and static key into `dir`, unless they exist and `force` is off.
pub fn generate_key_files(dir: &Path, force: bool) -> Result<KeygenOutcome, KeyError> {
    let present = KEY_FILES
        .iter()
        .filter(|name| dir.join(name).exists())
        .count();
    if !force && present == KEY_FILES.len() {
        return Ok(KeygenOutcome::KeptExisting);
    }
    if !force && present > 0 {
        return Err(KeyError::Partial(dir.to_owned()));
    }
    std::fs::create_dir_all(dir).map_err(|source| KeyError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let invalid = |source| KeyError::Invalid {
        path: dir.join(PRIVATE_KEY_FILE),
        source,
    };
    let private_key = PrivateKey::generate().map_err(invalid)?;
    let symmetric_key = DataKey::generate().map_err(invalid)?;
    write_file(
        &dir.join(PRIVATE_KEY_FILE),
        private_key.to_pem().as_bytes(),
        0o600,
    )?;
    write_file(
        &dir.join(PUBLIC_KEY_FILE),
        private_key.public_key().to_pem().as_bytes(),
        0o644,
    )?;
    write_file(
        &dir.join(SYMMETRIC_KEY_FILE),
        symmetric_key.to_text().as_bytes(),
        0o600,
    )?;
    Ok(KeygenOutcome::Created)
}

/// Reads the private key and the static key from `dir`.
pub fn load_key_files(dir: &Path) -> Result<ProxyKeys, KeyError> {
    let private_path = dir.join(PRIVATE_KEY_FILE);
    let private_key =
        PrivateKey::from_pem(&read(&private_path)?).map_err(|source| KeyError::Invalid {
            path: private_path,
            source,
        })?;
    let symmetric_path = dir.join(SYMMETRIC_KEY_FILE);
    let symmetric_key =
        DataKey::from_text(read(&symmetric_path)?.as_bytes()).map_err(|source| {
            KeyError::Invalid {
                path: symmetric_path,
                source,
            }
        })?;
    Ok(ProxyKeys {
        private_key,
        symmetric_key,
    })
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes `contents` to `path` with `mode`, through a temporary file so no half-written key is seen.
pub(crate) fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let temporary = path.with_extension("tmp");
    // A leftover temporary file would keep its old mode: start from a new one.
    match std::fs::remove_file(&temporary) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keygen_writes_loadable_keys_and_keeps_them_on_rerun() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            generate_key_files(dir.path(), false).unwrap(),
            KeygenOutcome::Created
        );
        let private_pem = std::fs::read(dir.path().join(PRIVATE_KEY_FILE)).unwrap();
        let mode = std::fs::metadata(dir.path().join(PRIVATE_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let keys = load_key_files(dir.path()).unwrap();
        let public_pem = std::fs::read_to_string(dir.path().join(PUBLIC_KEY_FILE)).unwrap();
        assert_eq!(keys.private_key.public_key().to_pem(), public_pem);
        let symmetric = std::fs::read_to_string(dir.path().join(SYMMETRIC_KEY_FILE)).unwrap();
        assert_eq!(symmetric.len(), 44);
        assert!(!symmetric.contains('+') && !symmetric.contains('/'));

        assert_eq!(
            generate_key_files(dir.path(), false).unwrap(),
            KeygenOutcome::KeptExisting
        );
        assert_eq!(
            std::fs::read(dir.path().join(PRIVATE_KEY_FILE)).unwrap(),
            private_pem
        );
        generate_key_files(dir.path(), true).unwrap();
        assert_ne!(
            std::fs::read(dir.path().join(PRIVATE_KEY_FILE)).unwrap(),
            private_pem
        );
    }

    #[test]
    fn keygen_refuses_a_partial_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PUBLIC_KEY_FILE), "x").unwrap();
        assert!(matches!(
            generate_key_files(dir.path(), false),
            Err(KeyError::Partial(_))
        ));
    }
}
