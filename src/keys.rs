//! The proxy's key files in `KEY_VAULT_PATH`: its RSA key pair and the original's static key.

use std::io::Write;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use lru::LruCache;
use tokio::time::Instant;

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

/// Subdirectory of the key directory that holds the key sets retired by rotation.
pub const RETIRED_DIR: &str = "retired";

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

/// Data keys unwrapped at most this long ago are answered again without the RSA operation.
const UNWRAP_CACHE_TTL: Duration = Duration::from_secs(600);
/// Most unwrapped data keys remembered (each about 150 bytes with its index entry).
const UNWRAP_CACHE_CAPACITY: usize = 4096;

/// The keys a running proxy holds.
pub struct ProxyKeys {
    /// Unwraps the data keys sent to this proxy; its public half is served at `/key/public`.
    pub private_key: PrivateKey,
    /// Keys retired by rotation, newest first: they still unwrap what was wrapped for them.
    pub retired: Vec<PrivateKey>,
    /// The original's single Fernet key, used for uploads under `--static-data-key`.
    pub symmetric_key: DataKey,
    /// Recent unwraps by a hash of the wrapped key; it lives and dies with these keys, so a
    /// reload that removes a key also forgets what it opened.
    unwrapped: Mutex<LruCache<[u8; 32], CachedUnwrap>>,
}

/// A data key this proxy unwrapped recently, and which of its private keys opened it.
struct CachedUnwrap {
    data_key: DataKey,
    /// 0 for the current key, `1 + i` for `retired[i]`.
    opened_by: usize,
    at: Instant,
}

/// Whether the key that unwrapped a data key is the current one or a retired one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// The key served at `/key/public`.
    Current,
    /// A key kept after a rotation.
    Retired,
}

impl KeyRole {
    /// The role as metrics and listings write it.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRole::Current => "current",
            KeyRole::Retired => "retired",
        }
    }
}

/// A data key unwrapped from a wrapped key, and which private key opened it.
#[derive(Debug)]
pub struct Unwrapped<'a> {
    /// The data key.
    pub data_key: DataKey,
    /// Fingerprint of the private key that opened it.
    pub fingerprint: &'a str,
    /// Whether that key is current or retired.
    pub role: KeyRole,
}

impl ProxyKeys {
    /// Keys as loaded, with nothing unwrapped yet.
    pub fn new(private_key: PrivateKey, retired: Vec<PrivateKey>, symmetric_key: DataKey) -> Self {
        Self {
            private_key,
            retired,
            symmetric_key,
            unwrapped: Mutex::new(LruCache::new(
                NonZeroUsize::new(UNWRAP_CACHE_CAPACITY).expect("nonzero"),
            )),
        }
    }

    /// Unwraps with the current key, then with each retired one (OAEP tells a wrong key apart).
    ///
    /// A wrapped key unwrapped within the last 10 minutes is answered from memory: range
    /// readers send the same wrapped key dozens of times per file, and an RSA private-key
    /// operation costs far more than the rest of a small read. Only a holder of the wrapped key
    /// can ask for it, and such a holder is given the data key anyway.
    pub fn unwrap_key(&self, wrapped_base64: &str) -> Result<Unwrapped<'_>, CryptoError> {
        let id = cache_id(wrapped_base64);
        if let Some(hit) = self.cached_unwrap(&id) {
            return Ok(hit);
        }
        for (opened_by, key) in std::iter::once(&self.private_key)
            .chain(&self.retired)
            .enumerate()
        {
            match key.unwrap_key(wrapped_base64) {
                Ok(data_key) => {
                    let cached = CachedUnwrap {
                        data_key: data_key.clone(),
                        opened_by,
                        at: Instant::now(),
                    };
                    self.unwrapped.lock().expect("lock").put(id, cached);
                    return Ok(self.unwrapped_by(opened_by, data_key));
                }
                Err(CryptoError::UnwrapFailed) => continue,
                Err(other) => return Err(other),
            }
        }
        Err(CryptoError::UnwrapFailed)
    }

    fn cached_unwrap(&self, id: &[u8; 32]) -> Option<Unwrapped<'_>> {
        let mut cache = self.unwrapped.lock().expect("lock");
        let fresh = cache
            .peek(id)
            .is_some_and(|entry| entry.at.elapsed() < UNWRAP_CACHE_TTL);
        if !fresh {
            cache.pop(id);
            return None;
        }
        let entry = cache.get(id).expect("present");
        Some(self.unwrapped_by(entry.opened_by, entry.data_key.clone()))
    }

    fn unwrapped_by(&self, opened_by: usize, data_key: DataKey) -> Unwrapped<'_> {
        let (key, role) = match opened_by {
            0 => (&self.private_key, KeyRole::Current),
            n => (&self.retired[n - 1], KeyRole::Retired),
        };
        Unwrapped {
            data_key,
            fingerprint: key.public_key().fingerprint(),
            role,
        }
    }
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
    create_dir(dir)?;
    write_new_keys(dir)?;
    Ok(KeygenOutcome::Created)
}

/// Keeps the current keys of `dir` as retired (in `dir/retired/<UTC time>/`) and writes new
/// ones; answers where the old keys went, or `None` for a directory that had none.
///
/// Safe to interrupt: the retired copy is complete before the new keys replace anything, and the
/// private key, which decides what `serve` uses, is written last.
pub fn rotate_key_files(dir: &Path) -> Result<Option<PathBuf>, KeyError> {
    if !KEY_FILES.iter().any(|name| dir.join(name).exists()) {
        generate_key_files(dir, false)?;
        return Ok(None);
    }
    if !key_files_present(dir) {
        return Err(KeyError::Partial(dir.to_owned()));
    }
    // Refuse to retire something that is not a key: it would be kept as if it unwrapped.
    load_current(dir)?;
    let retired_root = dir.join(RETIRED_DIR);
    create_dir(&retired_root)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let retired = (1..)
        .map(|n| match n {
            1 => retired_root.join(&stamp),
            n => retired_root.join(format!("{stamp}-{n}")),
        })
        .find(|candidate| !candidate.exists())
        .expect("a free name");
    let name = retired.file_name().expect("a name").to_string_lossy();
    let staging = retired_root.join(format!(".{name}.partial"));
    create_dir(&staging)?;
    for file in KEY_FILES {
        let contents = std::fs::read(dir.join(file)).map_err(|source| KeyError::Io {
            path: dir.join(file),
            source,
        })?;
        let mode = if file == PUBLIC_KEY_FILE {
            0o644
        } else {
            0o600
        };
        write_file(&staging.join(file), &contents, mode)?;
    }
    std::fs::rename(&staging, &retired).map_err(|source| KeyError::Io {
        path: retired.clone(),
        source,
    })?;
    sync_dir(&retired_root)?;
    write_new_keys(dir)?;
    Ok(Some(retired))
}

/// Writes a fresh key pair and static key; the private key last.
fn write_new_keys(dir: &Path) -> Result<(), KeyError> {
    let invalid = |source| KeyError::Invalid {
        path: dir.join(PRIVATE_KEY_FILE),
        source,
    };
    let private_key = PrivateKey::generate().map_err(invalid)?;
    let symmetric_key = DataKey::generate().map_err(invalid)?;
    write_file(
        &dir.join(SYMMETRIC_KEY_FILE),
        symmetric_key.to_text().as_bytes(),
        0o600,
    )?;
    write_file(
        &dir.join(PUBLIC_KEY_FILE),
        private_key.public_key().to_pem().as_bytes(),
        0o644,
    )?;
    write_file(
        &dir.join(PRIVATE_KEY_FILE),
        private_key.to_pem().as_bytes(),
        0o600,
    )
}

/// Reads the current private key, every retired one, and the static key from `dir`.
pub fn load_key_files(dir: &Path) -> Result<ProxyKeys, KeyError> {
    let private_key = load_current(dir)?;
    let symmetric_path = dir.join(SYMMETRIC_KEY_FILE);
    let symmetric_key =
        DataKey::from_text(read(&symmetric_path)?.as_bytes()).map_err(|source| {
            KeyError::Invalid {
                path: symmetric_path,
                source,
            }
        })?;
    let mut retired: Vec<PrivateKey> = Vec::new();
    for directory in retired_dirs(dir)?.into_iter().rev() {
        let key = load_private(&directory.join(PRIVATE_KEY_FILE))?;
        // A rotation interrupted after its copy leaves the current key among the retired.
        let fingerprint = key.public_key().fingerprint();
        let known = std::iter::once(&private_key)
            .chain(&retired)
            .any(|k| k.public_key().fingerprint() == fingerprint);
        if !known {
            retired.push(key);
        }
    }
    Ok(ProxyKeys::new(private_key, retired, symmetric_key))
}

/// The unwrap cache's name for a wrapped key: the SHA-256 of its text.
fn cache_id(wrapped_base64: &str) -> [u8; 32] {
    let digest =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, wrapped_base64.trim().as_bytes());
    digest.as_ref().try_into().expect("SHA-256")
}

/// One key pair of a directory, as `blobprox keys` lists it.
#[derive(Debug)]
pub struct KeyListing {
    /// Current or retired.
    pub role: KeyRole,
    /// Fingerprint of the public key, as metrics label it.
    pub fingerprint: String,
    /// When the private key file was written: made (current) or retired (retired).
    pub since: std::time::SystemTime,
    /// The private key file.
    pub path: PathBuf,
}

/// The current key and every retired key of `dir`, current first, then newest retired first.
pub fn list_keys(dir: &Path) -> Result<Vec<KeyListing>, KeyError> {
    let mut paths = vec![(KeyRole::Current, dir.join(PRIVATE_KEY_FILE))];
    for directory in retired_dirs(dir)?.into_iter().rev() {
        paths.push((KeyRole::Retired, directory.join(PRIVATE_KEY_FILE)));
    }
    paths
        .into_iter()
        .map(|(role, path)| {
            let key = load_private(&path)?;
            let since = std::fs::metadata(&path)
                .and_then(|meta| meta.modified())
                .map_err(|source| KeyError::Io {
                    path: path.clone(),
                    source,
                })?;
            Ok(KeyListing {
                role,
                fingerprint: key.public_key().fingerprint().to_owned(),
                since,
                path,
            })
        })
        .collect()
}

/// One line for each secret key file that others than its owner can read, and for a key
/// directory that anyone can write to. Nothing refuses such files: the original wrote 0644.
pub fn permission_warnings(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .ok()
            .map(|meta| meta.permissions().mode() & 0o777)
    };
    let mut secrets = vec![dir.join(PRIVATE_KEY_FILE), dir.join(SYMMETRIC_KEY_FILE)];
    for directory in retired_dirs(dir).unwrap_or_default() {
        secrets.push(directory.join(PRIVATE_KEY_FILE));
        secrets.push(directory.join(SYMMETRIC_KEY_FILE));
    }
    let mut warnings: Vec<String> = secrets
        .iter()
        .filter_map(|path| match mode(path) {
            Some(bits) if bits & 0o077 != 0 => Some(format!(
                "{} is readable by group or others (mode {bits:04o}); run chmod 600 on it",
                path.display()
            )),
            _ => None,
        })
        .collect();
    for directory in [dir.to_owned(), dir.join(RETIRED_DIR)] {
        if let Some(bits) = mode(&directory)
            && bits & 0o002 != 0
        {
            warnings.push(format!(
                "{} is writable by others (mode {bits:04o}); run chmod o-w on it",
                directory.display()
            ));
        }
    }
    warnings
}

/// The complete retired key directories, oldest first (their names are UTC times).
fn retired_dirs(dir: &Path) -> Result<Vec<PathBuf>, KeyError> {
    let root = dir.join(RETIRED_DIR);
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(KeyError::Io { path: root, source }),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| KeyError::Io {
            path: root.clone(),
            source,
        })?;
        // Names starting with a dot are copies a rotation had not finished.
        let complete = !entry.file_name().to_string_lossy().starts_with('.');
        if complete && entry.path().is_dir() {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}

fn load_current(dir: &Path) -> Result<PrivateKey, KeyError> {
    load_private(&dir.join(PRIVATE_KEY_FILE))
}

fn load_private(path: &Path) -> Result<PrivateKey, KeyError> {
    PrivateKey::from_pem(&read(path)?).map_err(|source| KeyError::Invalid {
        path: path.to_owned(),
        source,
    })
}

fn create_dir(dir: &Path) -> Result<(), KeyError> {
    std::fs::create_dir_all(dir).map_err(|source| KeyError::Io {
        path: dir.to_owned(),
        source,
    })
}

fn sync_dir(dir: &Path) -> Result<(), KeyError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| KeyError::Io {
            path: dir.to_owned(),
            source,
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

    fn wrap_for(dir: &Path) -> (DataKey, String) {
        let keys = load_key_files(dir).unwrap();
        let data_key = DataKey::generate().unwrap();
        let wrapped = keys.private_key.public_key().wrap_key(&data_key).unwrap();
        (data_key, wrapped)
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn rotation_retires_the_old_pair_and_both_still_unwrap() {
        let dir = tempfile::tempdir().unwrap();
        generate_key_files(dir.path(), false).unwrap();
        let (old_data_key, old_wrapped) = wrap_for(dir.path());
        let old_fingerprint = load_key_files(dir.path())
            .unwrap()
            .private_key
            .public_key()
            .fingerprint()
            .to_owned();
        let old_symmetric = std::fs::read(dir.path().join(SYMMETRIC_KEY_FILE)).unwrap();

        let retired = rotate_key_files(dir.path()).unwrap().expect("rotated");
        assert_eq!(retired.parent().unwrap(), dir.path().join(RETIRED_DIR));
        assert_eq!(mode(&retired.join(PRIVATE_KEY_FILE)), 0o600);
        assert_eq!(mode(&retired.join(SYMMETRIC_KEY_FILE)), 0o600);
        assert_eq!(
            std::fs::read(retired.join(SYMMETRIC_KEY_FILE)).unwrap(),
            old_symmetric
        );
        assert_ne!(
            std::fs::read(dir.path().join(SYMMETRIC_KEY_FILE)).unwrap(),
            old_symmetric
        );
        let (new_data_key, new_wrapped) = wrap_for(dir.path());
        let keys = load_key_files(dir.path()).unwrap();
        assert_ne!(keys.private_key.public_key().fingerprint(), old_fingerprint);
        let public_pem = std::fs::read_to_string(dir.path().join(PUBLIC_KEY_FILE)).unwrap();
        assert_eq!(keys.private_key.public_key().to_pem(), public_pem);

        let old = keys.unwrap_key(&old_wrapped).unwrap();
        assert_eq!(old.data_key, old_data_key);
        assert_eq!(
            (old.role, old.fingerprint),
            (KeyRole::Retired, &*old_fingerprint)
        );
        let new = keys.unwrap_key(&new_wrapped).unwrap();
        assert_eq!(new.data_key, new_data_key);
        assert_eq!(new.role, KeyRole::Current);

        // Once the retired directory is removed, its wrapped keys no longer open.
        std::fs::remove_dir_all(&retired).unwrap();
        let keys = load_key_files(dir.path()).unwrap();
        assert!(keys.retired.is_empty());
        assert_eq!(
            keys.unwrap_key(&old_wrapped).err(),
            Some(CryptoError::UnwrapFailed)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unwraps_are_remembered_for_a_while_with_the_key_that_opened_them() {
        let dir = tempfile::tempdir().unwrap();
        generate_key_files(dir.path(), false).unwrap();
        let (data_key, wrapped) = wrap_for(dir.path());
        rotate_key_files(dir.path()).unwrap();
        let keys = load_key_files(dir.path()).unwrap();
        let retired = keys.retired[0].public_key().fingerprint().to_owned();
        assert!(keys.cached_unwrap(&cache_id(&wrapped)).is_none());
        for _ in 0..2 {
            let opened = keys.unwrap_key(&wrapped).unwrap();
            assert!(keys.cached_unwrap(&cache_id(&wrapped)).is_some());
            assert_eq!(opened.data_key, data_key);
            assert_eq!(
                (opened.role, opened.fingerprint),
                (KeyRole::Retired, &*retired)
            );
        }
        assert_eq!(keys.unwrapped.lock().unwrap().len(), 1);
        // The same wrapped text with surrounding white space is the same key.
        assert_eq!(
            keys.unwrap_key(&format!(" {wrapped}\n")).unwrap().data_key,
            data_key
        );
        tokio::time::advance(UNWRAP_CACHE_TTL).await;
        assert!(keys.cached_unwrap(&cache_id(&wrapped)).is_none());
        assert_eq!(keys.unwrapped.lock().unwrap().len(), 0);
        assert_eq!(keys.unwrap_key(&wrapped).unwrap().role, KeyRole::Retired);
        // A wrong key is never remembered.
        assert!(keys.unwrap_key("bm90IGEga2V5").is_err());
        assert_eq!(keys.unwrapped.lock().unwrap().len(), 1);
    }

    #[test]
    fn retired_keys_are_tried_newest_first_and_listed() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(rotate_key_files(dir.path()).unwrap(), None);
        assert!(key_files_present(dir.path()));
        let first = load_key_files(dir.path()).unwrap();
        rotate_key_files(dir.path()).unwrap();
        let second = load_key_files(dir.path()).unwrap();
        rotate_key_files(dir.path()).unwrap();
        let keys = load_key_files(dir.path()).unwrap();
        let fingerprints: Vec<&str> = keys
            .retired
            .iter()
            .map(|k| k.public_key().fingerprint())
            .collect();
        assert_eq!(
            fingerprints,
            [
                second.private_key.public_key().fingerprint(),
                first.private_key.public_key().fingerprint()
            ]
        );
        let listed = list_keys(dir.path()).unwrap();
        assert_eq!(
            [KeyRole::Current.as_str(), KeyRole::Retired.as_str()],
            ["current", "retired"]
        );
        let roles: Vec<KeyRole> = listed.iter().map(|l| l.role).collect();
        assert_eq!(
            roles,
            [KeyRole::Current, KeyRole::Retired, KeyRole::Retired]
        );
        assert_eq!(
            listed[0].fingerprint,
            keys.private_key.public_key().fingerprint()
        );
        assert_eq!(listed[1].fingerprint, fingerprints[0]);
    }

    #[test]
    fn an_interrupted_rotation_loses_no_key_and_loads_each_key_once() {
        let dir = tempfile::tempdir().unwrap();
        generate_key_files(dir.path(), false).unwrap();
        // The copy finished, the new keys were not written yet.
        let copy = dir.path().join(RETIRED_DIR).join("20260101T000000Z");
        std::fs::create_dir_all(&copy).unwrap();
        for file in KEY_FILES {
            std::fs::copy(dir.path().join(file), copy.join(file)).unwrap();
        }
        // A copy that had not finished is ignored, whatever it holds.
        let partial = dir
            .path()
            .join(RETIRED_DIR)
            .join(".20260102T000000Z.partial");
        std::fs::create_dir_all(&partial).unwrap();
        std::fs::write(partial.join(PRIVATE_KEY_FILE), "half").unwrap();
        let keys = load_key_files(dir.path()).unwrap();
        assert!(keys.retired.is_empty());
    }

    #[test]
    fn an_unreadable_retired_directory_is_an_error_not_an_absence() {
        let dir = tempfile::tempdir().unwrap();
        generate_key_files(dir.path(), false).unwrap();
        std::fs::write(dir.path().join(RETIRED_DIR), "not a directory").unwrap();
        assert!(matches!(
            load_key_files(dir.path()),
            Err(KeyError::Io { path, .. }) if path.ends_with(RETIRED_DIR)
        ));
    }

    #[test]
    fn rotation_refuses_what_it_cannot_keep() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PUBLIC_KEY_FILE), "x").unwrap();
        assert!(matches!(
            rotate_key_files(dir.path()),
            Err(KeyError::Partial(_))
        ));
        std::fs::write(dir.path().join(PRIVATE_KEY_FILE), "not a key").unwrap();
        std::fs::write(dir.path().join(SYMMETRIC_KEY_FILE), "x").unwrap();
        assert!(matches!(
            rotate_key_files(dir.path()),
            Err(KeyError::Invalid { .. })
        ));
        assert_eq!(
            std::fs::read_to_string(dir.path().join(PRIVATE_KEY_FILE)).unwrap(),
            "not a key"
        );
        assert!(!dir.path().join(RETIRED_DIR).exists());
    }

    #[test]
    fn loose_permissions_are_named_one_line_each() {
        let dir = tempfile::tempdir().unwrap();
        generate_key_files(dir.path(), false).unwrap();
        let set = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        set(dir.path(), 0o700);
        assert_eq!(permission_warnings(dir.path()), Vec::<String>::new());
        set(&dir.path().join(PRIVATE_KEY_FILE), 0o644);
        set(&dir.path().join(SYMMETRIC_KEY_FILE), 0o640);
        set(dir.path(), 0o777);
        let warnings = permission_warnings(dir.path());
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[0].contains(PRIVATE_KEY_FILE) && warnings[0].contains("0644"));
        assert!(warnings[1].contains(SYMMETRIC_KEY_FILE) && warnings[1].contains("0640"));
        assert!(warnings[2].contains("writable by others"));
        // The public key may be readable by anyone.
        set(&dir.path().join(PRIVATE_KEY_FILE), 0o600);
        set(&dir.path().join(SYMMETRIC_KEY_FILE), 0o400);
        set(&dir.path().join(PUBLIC_KEY_FILE), 0o644);
        set(dir.path(), 0o755);
        assert_eq!(permission_warnings(dir.path()), Vec::<String>::new());
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
