//! Turning `serve` options into a working configuration, including the development start that
//! makes its own keys and credentials.

use std::path::{Path, PathBuf};
use std::time::Duration;

mod args;
mod limits;

pub use args::{LogFormat, ServeArgs};
pub use limits::{ConnectionLimits, Limits, UploadPolicy};

use crate::auth::ApiKeys;
use crate::credentials::{self, ClientCredentials};
use crate::keys::{self, KeygenOutcome, ProxyKeys};
use crate::storage::Backend;
use crate::tls::{ServerTls, TlsFiles};

/// Key directory of a production start without KEY_VAULT_PATH, as in the original.
const PRODUCTION_KEY_DIR: &str = "/.keys";

/// Everything `serve` needs, resolved and checked.
pub struct ServeConfig {
    /// The proxy's keys.
    pub keys: ProxyKeys,
    /// Where they were read from.
    pub key_dir: PathBuf,
    /// The accepted `API_KEY` tokens.
    pub api_keys: ApiKeys,
    /// The file they were read from (`API_KEY_FILE`), read again on reload.
    pub api_key_file: Option<PathBuf>,
    /// Which storage to use.
    pub backend: Backend,
    /// Request limits.
    pub limits: Limits,
    /// Upload encryption choices.
    pub upload_policy: UploadPolicy,
    /// Connection-level limits.
    pub connection_limits: ConnectionLimits,
    /// HTTPS on the API port, when configured.
    pub tls: Option<ServerTls>,
    /// Lines to show the operator at start (where things are, what to send).
    pub notices: Vec<String>,
    /// Risks in this configuration, logged as warnings at start.
    pub warnings: Vec<String>,
}

/// Resolves the options. A development start (no PROD, no KEY_VAULT_PATH) makes missing keys and
/// credentials under `--dev-dir`; otherwise their absence is an error.
pub fn resolve(args: &ServeArgs) -> Result<ServeConfig, String> {
    let tls = tls_files(args)?
        .map(|files| ServerTls::load(&files))
        .transpose()
        .map_err(|e| e.to_string())?;
    let development = !args.prod && args.key_vault_path.is_none();
    let mut notices = Vec::new();
    let key_dir = match (&args.key_vault_path, development) {
        (Some(dir), _) => dir.clone(),
        (None, true) => args.dev_dir.join("keys"),
        (None, false) => PathBuf::from(PRODUCTION_KEY_DIR),
    };
    if development {
        match keys::generate_key_files(&key_dir, false).map_err(|e| e.to_string())? {
            KeygenOutcome::Created => {
                notices.push(format!("created new keys in {}", key_dir.display()))
            }
            KeygenOutcome::KeptExisting => notices.push(format!("keys: {}", key_dir.display())),
        }
    } else if !keys::key_files_present(&key_dir) {
        return Err(format!(
            "no key files in {}: run `blobprox keygen -p {}` or set KEY_VAULT_PATH",
            key_dir.display(),
            key_dir.display()
        ));
    }
    let keys = keys::load_key_files(&key_dir).map_err(|e| e.to_string())?;

    let api_keys = match (&args.api_key, &args.api_key_file, development) {
        (Some(_), Some(_), _) => {
            return Err("set API_KEY or API_KEY_FILE, not both".into());
        }
        (Some(value), None, _) => value.parse::<ApiKeys>().map_err(|e| e.to_string())?,
        (None, Some(file), _) => read_api_key_file(file)?,
        (None, None, true) => development_api_key(&args.dev_dir.join("credentials"), &mut notices)?
            .parse()
            .map_err(|e: crate::auth::ApiKeyError| e.to_string())?,
        (None, None, false) => {
            return Err(
                "API_KEY is not set: run `blobprox credentials -p DIR` and set API_KEY (or \
                 API_KEY_FILE) to the content of DIR/<ts>_blobprox_encrypted.key"
                    .into(),
            );
        }
    };
    let mut warnings = keys::permission_warnings(&key_dir);
    if args.api_key_on_command_line {
        warnings.push(
            "--api-key on the command line can be read by every local user (ps, /proc); set \
             API_KEY_FILE instead"
                .into(),
        );
    }
    if args.static_data_key {
        warnings.push(
            "STATIC_DATA_KEY is on: every upload is encrypted with symmetric_key.key, and any \
             authenticated client that names its own public key as a recipient receives that \
             key, which opens every such blob and can forge new ones"
                .into(),
        );
    }

    let backend = Backend::from_settings(
        args.storage_url.as_deref(),
        args.azure_connection_string.as_deref(),
        &args.storage_creds,
        absolute(&args.data_dir),
    )
    .map_err(|e| e.to_string())?;
    Ok(ServeConfig {
        keys,
        key_dir,
        api_keys,
        api_key_file: args.api_key_file.clone(),
        backend,
        limits: Limits {
            max_public_keys_bytes: args.max_public_keys_bytes,
            max_recipients: args.max_recipients,
            max_upload_bytes: args.max_upload_bytes,
            body_idle_timeout: Duration::from_secs(args.body_idle_timeout_secs),
            body_grace: Duration::from_secs(args.body_grace_secs),
            body_min_rate: args.body_min_rate,
            max_concurrent_transfers: args.max_concurrent_transfers,
            auth_failures_per_minute: args.auth_failures_per_minute,
            ..Limits::default()
        },
        connection_limits: ConnectionLimits {
            header_read_timeout: Duration::from_secs(args.header_read_timeout_secs),
            max_header_bytes: args.max_header_bytes,
        },
        upload_policy: UploadPolicy {
            static_data_key: args.static_data_key,
            format: args.blob_format,
        },
        tls,
        notices,
        warnings,
    })
}

/// Reads `API_KEY_FILE`: one or more encrypted keys, separated by commas or new lines.
pub fn read_api_key_file(path: &Path) -> Result<ApiKeys, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read API_KEY_FILE {}: {e}", path.display()))?;
    text.parse()
        .map_err(|e| format!("API_KEY_FILE {}: {e}", path.display()))
}

/// The TLS files: certificate and key both or neither, a client CA only with them.
fn tls_files(args: &ServeArgs) -> Result<Option<TlsFiles>, String> {
    const BOTH: &str = "set both for HTTPS, or neither for plain HTTP";
    match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.tls_client_ca_file.clone(),
        })),
        (Some(_), None) => Err(format!(
            "TLS_CERT_FILE is set but TLS_KEY_FILE is not: {BOTH}"
        )),
        (None, Some(_)) => Err(format!(
            "TLS_KEY_FILE is set but TLS_CERT_FILE is not: {BOTH}"
        )),
        (None, None) if args.tls_client_ca_file.is_some() => {
            Err("TLS_CLIENT_CA_FILE needs HTTPS: set TLS_CERT_FILE and TLS_KEY_FILE too".into())
        }
        (None, None) => Ok(None),
    }
}

/// The newest credentials in `dir`, or new ones written there and announced.
fn development_api_key(dir: &Path, notices: &mut Vec<String>) -> Result<String, String> {
    if let Some((_, api_key)) = credentials::find_latest(dir).map_err(|e| e.to_string())? {
        notices.push(format!(
            "credentials: {} (send the values of its *_blobprox.json)",
            dir.display()
        ));
        return Ok(api_key);
    }
    let (client, api_key) = credentials::generate().map_err(|e| e.to_string())?;
    let files = credentials::write_files(dir, &client, &api_key).map_err(|e| e.to_string())?;
    notices.push(format!(
        "created new credentials in {}",
        files.client.display()
    ));
    notices.push(credentials_banner(&client, &api_key));
    Ok(api_key)
}

/// The values an operator hands out: the three request headers, and `API_KEY` for the proxy.
pub fn credentials_banner(client: &ClientCredentials, api_key: &str) -> String {
    format!(
        "send these headers with every request:\n  x-decryption-key: {}\n  x-salt: {}\n  \
         x-comparison-key: {}\nand start the proxy with:\n  API_KEY={}",
        client.decryption_key, client.salt, client.key, api_key
    )
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}
