//! The configuration of `blobprox serve`: its options ([`ServeArgs`]), the limits they set, and
//! [`resolve`], which turns them into a checked [`ServeConfig`], including the development start
//! that makes its own keys and credentials.

mod args;
mod limits;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use args::{LogFormat, ServeArgs};
pub use limits::{ConnectionLimits, Limits, UploadPolicy, defaults};

use crate::auth::{ApiKeyError, ApiKeys};
use crate::credentials::{self, ClientCredentials};
use crate::crypto::CryptoError;
use crate::keys::{self, KeyError, KeygenOutcome, ProxyKeys};
use crate::storage::{Backend, StorageError};
use crate::tls::{ServerTls, TlsError, TlsFiles};

/// Key directory of a production start without KEY_VAULT_PATH, as in the original.
const PRODUCTION_KEY_DIR: &str = "/.keys";

/// What the operator is told when only one of the two TLS files is set.
const TLS_BOTH: &str = "set both for HTTPS, or neither for plain HTTP";

/// Why the `serve` options cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// TLS_CERT_FILE without TLS_KEY_FILE.
    #[error("TLS_CERT_FILE is set but TLS_KEY_FILE is not: {TLS_BOTH}")]
    CertWithoutKey,
    /// TLS_KEY_FILE without TLS_CERT_FILE.
    #[error("TLS_KEY_FILE is set but TLS_CERT_FILE is not: {TLS_BOTH}")]
    KeyWithoutCert,
    /// TLS_CLIENT_CA_FILE without the certificate and key.
    #[error("TLS_CLIENT_CA_FILE needs HTTPS: set TLS_CERT_FILE and TLS_KEY_FILE too")]
    ClientCaWithoutTls,
    /// The TLS files cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A start outside development mode found no key files.
    #[error(
        "no key files in {dir}: run `blobprox keygen -p {dir}` or set KEY_VAULT_PATH",
        dir = .0.display()
    )]
    NoKeyFiles(PathBuf),
    /// The key files cannot be made or read.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// Both API_KEY and API_KEY_FILE are set.
    #[error("set API_KEY or API_KEY_FILE, not both")]
    ApiKeyTwice,
    /// A start outside development mode has no API key.
    #[error(
        "API_KEY is not set: run `blobprox credentials -p DIR` and set API_KEY (or \
         API_KEY_FILE) to the content of DIR/<ts>_blobprox_encrypted.key"
    )]
    ApiKeyMissing,
    /// API_KEY (or the development credentials) holds no usable key.
    #[error(transparent)]
    ApiKey(#[from] ApiKeyError),
    /// API_KEY_FILE cannot be read.
    #[error("cannot read API_KEY_FILE {path}: {source}", path = .path.display())]
    ApiKeyFileUnreadable {
        /// The file.
        path: PathBuf,
        /// What reading it said.
        source: std::io::Error,
    },
    /// API_KEY_FILE holds no usable key.
    #[error("API_KEY_FILE {path}: {source}", path = .path.display())]
    ApiKeyFileInvalid {
        /// The file.
        path: PathBuf,
        /// Why its content was refused.
        source: ApiKeyError,
    },
    /// Development credentials could not be made.
    #[error(transparent)]
    Credentials(#[from] CryptoError),
    /// The storage settings are unusable.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

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
    /// Bytes all transfers together may buffer on their way to or from storage.
    pub max_buffer_bytes: usize,
    /// Address (HOST:PORT) of the API listener.
    pub listen_address: String,
    /// Address of a separate `/metrics` listener, if any.
    pub metrics_address: Option<String>,
    /// Request limits.
    pub limits: Limits,
    /// Upload encryption choices.
    pub upload_policy: UploadPolicy,
    /// Connection-level limits.
    pub connection_limits: ConnectionLimits,
    /// HTTPS on the API port, when configured.
    pub tls: Option<ServerTls>,
    /// Time transfers in flight may take to finish after SIGTERM or SIGINT.
    pub shutdown_grace: Duration,
    /// What to log, and how.
    pub logging: Logging,
    /// Lines to show the operator at start (where things are, what to send).
    pub notices: Vec<String>,
    /// Risks in this configuration, logged as warnings at start.
    pub warnings: Vec<String>,
}

/// The log settings: a level unless `RUST_LOG` says otherwise, and a style.
#[derive(Debug, Clone, Copy)]
pub struct Logging {
    /// The level of the proxy's own events: `info` in production, else `debug`.
    pub default_level: &'static str,
    /// Text or JSON lines.
    pub format: LogFormat,
}

/// Resolves the options. A development start (no PROD, no KEY_VAULT_PATH) makes missing keys and
/// credentials under `--dev-dir`; otherwise their absence is an error.
pub fn resolve(args: &ServeArgs) -> Result<ServeConfig, ConfigError> {
    let tls = tls_files(args)?
        .map(|files| ServerTls::load(&files))
        .transpose()?;
    let development = !args.prod && args.key_vault_path.is_none();
    let mut notices = Vec::new();
    let key_dir = key_dir(args, development);
    let keys = load_keys(&key_dir, development, &mut notices)?;
    let api_keys = api_keys(args, development, &mut notices)?;
    let backend = Backend::from_settings(
        args.storage_url.as_deref(),
        args.azure_connection_string.as_deref(),
        &args.storage_creds,
        absolute(&args.data_dir),
    )?;
    Ok(ServeConfig {
        warnings: warnings(args, &key_dir),
        keys,
        key_dir,
        api_keys,
        api_key_file: args.api_key_file.clone(),
        backend,
        max_buffer_bytes: args.max_buffer_bytes,
        listen_address: format!("{}:{}", args.host, args.port),
        metrics_address: args.metrics_addr.clone(),
        limits: limits(args),
        connection_limits: connection_limits(args),
        upload_policy: UploadPolicy {
            static_data_key: args.static_data_key,
            format: args.blob_format,
        },
        tls,
        shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
        logging: logging(args),
        notices,
    })
}

/// Reads `API_KEY_FILE`: one or more encrypted keys, separated by commas or new lines.
pub fn read_api_key_file(path: &Path) -> Result<ApiKeys, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::ApiKeyFileUnreadable {
            path: path.to_owned(),
            source,
        })?;
    text.parse()
        .map_err(|source| ConfigError::ApiKeyFileInvalid {
            path: path.to_owned(),
            source,
        })
}

/// The TLS files: certificate and key both or neither, a client CA only with them.
fn tls_files(args: &ServeArgs) -> Result<Option<TlsFiles>, ConfigError> {
    match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.tls_client_ca_file.clone(),
        })),
        (Some(_), None) => Err(ConfigError::CertWithoutKey),
        (None, Some(_)) => Err(ConfigError::KeyWithoutCert),
        (None, None) if args.tls_client_ca_file.is_some() => Err(ConfigError::ClientCaWithoutTls),
        (None, None) => Ok(None),
    }
}

/// KEY_VAULT_PATH; unset, the development directory or the production default.
fn key_dir(args: &ServeArgs, development: bool) -> PathBuf {
    match (&args.key_vault_path, development) {
        (Some(dir), _) => dir.clone(),
        (None, true) => args.dev_dir.join("keys"),
        (None, false) => PathBuf::from(PRODUCTION_KEY_DIR),
    }
}

/// The key files of `key_dir`, made first in a development start.
fn load_keys(
    key_dir: &Path,
    development: bool,
    notices: &mut Vec<String>,
) -> Result<ProxyKeys, ConfigError> {
    if development {
        match keys::generate_key_files(key_dir, false)? {
            KeygenOutcome::Created => {
                notices.push(format!("created new keys in {}", key_dir.display()))
            }
            KeygenOutcome::KeptExisting => notices.push(format!("keys: {}", key_dir.display())),
        }
    } else if !keys::key_files_present(key_dir) {
        return Err(ConfigError::NoKeyFiles(key_dir.to_owned()));
    }
    Ok(keys::load_key_files(key_dir)?)
}

/// The accepted API keys: API_KEY, API_KEY_FILE, or in a development start its own credentials.
fn api_keys(
    args: &ServeArgs,
    development: bool,
    notices: &mut Vec<String>,
) -> Result<ApiKeys, ConfigError> {
    match (&args.api_key, &args.api_key_file, development) {
        (Some(_), Some(_), _) => Err(ConfigError::ApiKeyTwice),
        (Some(value), None, _) => Ok(value.parse()?),
        (None, Some(file), _) => read_api_key_file(file),
        (None, None, true) => {
            Ok(development_api_key(&args.dev_dir.join("credentials"), notices)?.parse()?)
        }
        (None, None, false) => Err(ConfigError::ApiKeyMissing),
    }
}

/// Risks in the options and the key files, for the log.
fn warnings(args: &ServeArgs, key_dir: &Path) -> Vec<String> {
    let mut warnings = keys::permission_warnings(key_dir);
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
    warnings
}

fn limits(args: &ServeArgs) -> Limits {
    Limits {
        max_public_keys_bytes: args.max_public_keys_bytes,
        max_recipients: args.max_recipients,
        max_upload_bytes: args.max_upload_bytes,
        body_idle_timeout: Duration::from_secs(args.body_idle_timeout_secs),
        body_grace: Duration::from_secs(args.body_grace_secs),
        body_min_rate: args.body_min_rate,
        max_concurrent_transfers: args.max_concurrent_transfers,
        auth_failures_per_minute: args.auth_failures_per_minute,
        ..Limits::default()
    }
}

fn connection_limits(args: &ServeArgs) -> ConnectionLimits {
    ConnectionLimits {
        header_read_timeout: Duration::from_secs(args.header_read_timeout_secs),
        max_header_bytes: args.max_header_bytes,
    }
}

fn logging(args: &ServeArgs) -> Logging {
    let (default_level, default_format) = if args.prod {
        ("info", LogFormat::Json)
    } else {
        ("debug", LogFormat::Text)
    };
    Logging {
        default_level,
        format: args.log_format.unwrap_or(default_format),
    }
}

/// The newest credentials in `dir`, or new ones written there and announced.
fn development_api_key(dir: &Path, notices: &mut Vec<String>) -> Result<String, ConfigError> {
    if let Some((_, api_key)) = credentials::find_latest(dir)? {
        notices.push(format!(
            "credentials: {} (send the values of its *_blobprox.json)",
            dir.display()
        ));
        return Ok(api_key);
    }
    let (client, api_key) = credentials::generate()?;
    let files = credentials::write_files(dir, &client, &api_key)?;
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `blobprox serve`'s options alone, parsed from a command line.
    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn parse(flags: &[&str]) -> ServeArgs {
        let line = std::iter::once("serve").chain(flags.iter().copied());
        Serve::try_parse_from(line).expect("valid flags").args
    }

    #[test]
    fn the_command_line_defaults_are_the_library_defaults() {
        let args = parse(&[]);
        assert_eq!(
            format!("{:?}", limits(&args)),
            format!("{:?}", Limits::default())
        );
        assert_eq!(
            format!("{:?}", connection_limits(&args)),
            format!("{:?}", ConnectionLimits::default())
        );
        assert_eq!(args.blob_format, UploadPolicy::default().format);
    }

    #[test]
    fn half_a_tls_configuration_is_refused_with_what_is_missing() {
        let refused = |flags: &[&str]| tls_files(&parse(flags)).unwrap_err().to_string();
        assert!(refused(&["--tls-cert-file", "c.pem"]).starts_with("TLS_CERT_FILE is set but"));
        assert!(refused(&["--tls-key-file", "k.pem"]).starts_with("TLS_KEY_FILE is set but"));
        assert!(refused(&["--tls-client-ca-file", "ca.pem"]).contains("needs HTTPS"));
    }
}
