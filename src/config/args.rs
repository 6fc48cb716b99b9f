//! The options of `blobprox serve`: flags, environment variables and their defaults.

use std::path::PathBuf;

use clap::builder::{BoolishValueParser, PossibleValuesParser, TypedValueParser};
use clap::{Args, ValueEnum};

use super::limits::defaults;
use crate::transfer::BlobFormat;

/// Log output style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Options of `blobprox serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The encrypted API key (a Fernet token) that request credentials are checked against.
    /// Unset in a development start: made under --dev-dir on first start.
    /// Several keys separated by commas are all accepted (for a credential roll-over).
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// A file holding the API_KEY value (as a mounted secret does); read again on SIGHUP.
    #[arg(long, env = "API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Whether --api-key came from the command line, where every local user can read it.
    #[arg(skip)]
    pub api_key_on_command_line: bool,
    /// Storage: https://ACCOUNT.blob.core.windows.net, file:///absolute/dir or memory://.
    /// Unset: the local directory --data-dir.
    #[arg(long, env = "STORAGE_URL")]
    pub storage_url: Option<String>,
    /// Directory of the key files. Unset in a development start: --dev-dir/keys, made on first
    /// start; with PROD=true: /.keys.
    #[arg(long, env = "KEY_VAULT_PATH")]
    pub key_vault_path: Option<PathBuf>,
    /// Azure connection string (account key, or Azurite); when set it wins over STORAGE_URL.
    #[arg(long, env = "AZURE_STORAGE_CONNECTION_STRING", hide_env_values = true)]
    pub azure_connection_string: Option<String>,
    /// JSON file with tenantId, clientId and clientSecret of an Azure service principal; when it
    /// does not exist, Azure credentials come from the environment (AZURE_* variables, workload
    /// or managed identity).
    #[arg(long, env = "STORAGE_CREDS", default_value = "/.secrets/creds.json")]
    pub storage_creds: PathBuf,
    /// Production mode: info logs in JSON, and missing keys or API_KEY are start-up errors.
    #[arg(long, env = "PROD", default_value = "false", value_parser = BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true")]
    pub prod: bool,
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: String,
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8082)]
    pub port: u16,
    /// Address (HOST:PORT) of a separate listener for GET /metrics, which the API port then no
    /// longer serves. Unset: /metrics is served on the API port.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Directory of the embedded local storage, used when STORAGE_URL is unset.
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Where a development start keeps the keys and credentials it makes.
    #[arg(long, env = "DEV_DIR", default_value = "./.blobprox")]
    pub dev_dir: PathBuf,
    /// Encrypt every upload with symmetric_key.key, as the original did, instead of a fresh key
    /// per blob.
    #[arg(long, env = "STATIC_DATA_KEY", default_value = "false", value_parser = BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true")]
    pub static_data_key: bool,
    /// Format of new blobs: stream (segmented AES-256-GCM, range reads) or fernet (readable by
    /// the Python proxy). Both formats are always readable.
    #[arg(
        long,
        env = "BLOB_FORMAT",
        default_value = BlobFormat::default().as_str(),
        value_parser = PossibleValuesParser::new(["stream", "fernet"])
            .map(|text| text.parse::<BlobFormat>().expect("one of the possible values")),
    )]
    pub blob_format: BlobFormat,
    /// Largest accepted upload in bytes (unset: no limit).
    #[arg(long, env = "MAX_UPLOAD_BYTES")]
    pub max_upload_bytes: Option<u64>,
    /// Largest `public-keys` form field in bytes.
    #[arg(long, env = "MAX_PUBLIC_KEYS_BYTES", default_value_t = defaults::MAX_PUBLIC_KEYS_BYTES)]
    pub max_public_keys_bytes: usize,
    /// Most recipients in one upload.
    #[arg(long, env = "MAX_RECIPIENTS", default_value_t = defaults::MAX_RECIPIENTS)]
    pub max_recipients: usize,
    /// Uploads and downloads served at once; more get 503 with Retry-After.
    #[arg(long, env = "MAX_CONCURRENT_TRANSFERS", default_value_t = defaults::MAX_CONCURRENT_TRANSFERS)]
    pub max_concurrent_transfers: usize,
    /// Bytes that all uploads and downloads together may buffer on their way to or from storage;
    /// a transfer past it waits for others, reading no more from its client meanwhile.
    #[arg(long, env = "MAX_BUFFER_BYTES", default_value_t = crate::storage::DEFAULT_MAX_BUFFER_BYTES)]
    pub max_buffer_bytes: usize,
    /// Wrong credentials allowed per client address (IPv6: per /64) and minute; past them the
    /// address gets 429 without any key derivation. 0 turns the limit off.
    #[arg(long, env = "AUTH_FAILURES_PER_MINUTE", default_value_t = defaults::AUTH_FAILURES_PER_MINUTE)]
    pub auth_failures_per_minute: u32,
    /// Largest request head (request line and headers) in bytes; larger gets 431.
    #[arg(long, env = "MAX_HEADER_BYTES", default_value_t = defaults::MAX_HEADER_BYTES)]
    pub max_header_bytes: usize,
    /// Seconds a client has to send its request headers.
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = defaults::HEADER_READ_TIMEOUT_SECS)]
    pub header_read_timeout_secs: u64,
    /// Seconds a client may pause inside a body (sending an upload, taking a download) before
    /// the transfer is failed.
    #[arg(long, env = "BODY_IDLE_TIMEOUT_SECS", default_value_t = defaults::BODY_IDLE_TIMEOUT_SECS)]
    pub body_idle_timeout_secs: u64,
    /// Seconds a request body may take before BODY_MIN_RATE applies.
    #[arg(long, env = "BODY_GRACE_SECS", default_value_t = defaults::BODY_GRACE_SECS)]
    pub body_grace_secs: u64,
    /// Slowest average rate, in bytes per second, of a request body once BODY_GRACE_SECS are
    /// spent (each byte buys 1/rate seconds more); slower clients get 400. 0 turns it off.
    #[arg(long, env = "BODY_MIN_RATE", default_value_t = defaults::BODY_MIN_RATE)]
    pub body_min_rate: u64,
    /// Seconds that transfers in flight may take to finish after SIGTERM or SIGINT.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
    /// PEM certificate chain for HTTPS on the API port (with TLS_KEY_FILE; SIGHUP rereads both).
    #[arg(long, env = "TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of TLS_CERT_FILE: PKCS#8, SEC1 (EC) or PKCS#1 (RSA).
    #[arg(long, env = "TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificates: with it, HTTPS clients must present a certificate signed by one.
    #[arg(long, env = "TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Log style (default: json with PROD=true, else text).
    #[arg(long, env = "LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}
