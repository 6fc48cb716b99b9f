//! API credentials in the original's format: the client's three header values and `API_KEY`.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use aws_lc_rs::pbkdf2;
use serde::{Deserialize, Serialize};

use crate::crypto::CryptoError;
use crate::crypto::data_key::{DATA_KEY_LEN, DataKey};
use crate::crypto::fernet;
use crate::keys::{KeyError, write_file};

/// PBKDF2 iterations of the original's key derivation.
const PBKDF2_ITERATIONS: u32 = 100_000;

/// What a client sends: `decryption_key` → `x-decryption-key`, `salt` → `x-salt`,
/// `key` → `x-comparison-key`. The JSON shape of `<ts>_blobprox.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientCredentials {
    /// 16 random bytes as 32 hex characters, used as text.
    pub salt: String,
    /// A Fernet key; with the salt it derives the key that opens `API_KEY`.
    pub decryption_key: String,
    /// A Fernet key; what `API_KEY` decrypts to.
    pub key: String,
}

/// New credentials and the `API_KEY` token that accepts them.
pub fn generate() -> Result<(ClientCredentials, String), CryptoError> {
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt)?;
    let credentials = ClientCredentials {
        salt: salt.iter().map(|b| format!("{b:02x}")).collect(),
        decryption_key: DataKey::generate()?.to_text(),
        key: DataKey::generate()?.to_text(),
    };
    let derived = derive_key(&credentials.decryption_key, &credentials.salt);
    let api_key = fernet::encrypt(&derived, credentials.key.as_bytes())?;
    Ok((credentials, api_key))
}

/// The Fernet key that opens `API_KEY`: PBKDF2-HMAC-SHA256 of the header texts, as the original.
pub fn derive_key(decryption_key: &str, salt: &str) -> DataKey {
    let mut derived = [0u8; DATA_KEY_LEN];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        NonZeroU32::new(PBKDF2_ITERATIONS).expect("nonzero"),
        salt.as_bytes(),
        decryption_key.as_bytes(),
        &mut derived,
    );
    DataKey::from_bytes(derived)
}

/// The two files of a credentials set.
#[derive(Debug)]
pub struct CredentialFiles {
    /// `<ts>_blobprox.json`, the client's header values.
    pub client: PathBuf,
    /// `<ts>_blobprox_encrypted.key`, the `API_KEY` value.
    pub api_key: PathBuf,
}

/// Writes `<ts>_blobprox.json` and `<ts>_blobprox_encrypted.key` into `dir`.
pub fn write_files(
    dir: &Path,
    credentials: &ClientCredentials,
    api_key: &str,
) -> Result<CredentialFiles, KeyError> {
    std::fs::create_dir_all(dir).map_err(|source| KeyError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let files = CredentialFiles {
        client: dir.join(format!("{timestamp}_blobprox.json")),
        api_key: dir.join(format!("{timestamp}_blobprox_encrypted.key")),
    };
    let json = serde_json::to_string_pretty(credentials).expect("serialisable");
    write_file(&files.client, json.as_bytes(), 0o600)?;
    write_file(&files.api_key, api_key.as_bytes(), 0o600)?;
    Ok(files)
}

/// The newest credentials set in `dir`, if any: its client values and `API_KEY`.
pub fn find_latest(dir: &Path) -> Result<Option<(ClientCredentials, String)>, KeyError> {
    let io = |source| KeyError::Io {
        path: dir.to_owned(),
        source,
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(None);
    };
    let mut newest: Option<PathBuf> = None;
    for entry in entries {
        let path = entry.map_err(io)?.path();
        let is_api_key = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with("_blobprox_encrypted.key"));
        if is_api_key && newest.as_ref().is_none_or(|best| path > *best) {
            newest = Some(path);
        }
    }
    let Some(api_key_path) = newest else {
        return Ok(None);
    };
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })
    };
    let api_key = read(&api_key_path)?;
    let client_name = api_key_path
        .to_string_lossy()
        .replace("_blobprox_encrypted.key", "_blobprox.json");
    let client_path = PathBuf::from(client_name);
    let credentials = serde_json::from_str(&read(&client_path)?).map_err(|e| KeyError::Io {
        path: client_path,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    Ok(Some((credentials, api_key.trim().to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_api_key_opens_to_the_comparison_key() {
        let (credentials, api_key) = generate().unwrap();
        assert_eq!(credentials.salt.len(), 32);
        let derived = derive_key(&credentials.decryption_key, &credentials.salt);
        let opened = fernet::decrypt(&derived, api_key.as_bytes()).unwrap();
        assert_eq!(opened, credentials.key.as_bytes());
    }

    #[test]
    fn written_files_are_found_again() {
        let dir = tempfile::tempdir().unwrap();
        assert!(find_latest(dir.path()).unwrap().is_none());
        let (credentials, api_key) = generate().unwrap();
        write_files(dir.path(), &credentials, &api_key).unwrap();
        let (found, found_api_key) = find_latest(dir.path()).unwrap().unwrap();
        assert_eq!(found.key, credentials.key);
        assert_eq!(found_api_key, api_key);
    }
}
