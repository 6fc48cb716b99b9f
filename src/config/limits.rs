//! Limits on requests and connections, and how uploads are encrypted.

use std::time::Duration;

use crate::transfer::BlobFormat;

/// The default of every limit, shared by the command line and the `Default` implementations.
pub mod defaults {
    /// Largest `public-keys` form field, in bytes (`MAX_PUBLIC_KEYS_BYTES`).
    pub const MAX_PUBLIC_KEYS_BYTES: usize = 64 * 1024;
    /// Most recipients in one upload (`MAX_RECIPIENTS`).
    pub const MAX_RECIPIENTS: usize = 100;
    /// Largest body of a download request, in bytes; not configurable.
    pub const MAX_DOWNLOAD_BODY_BYTES: usize = 64 * 1024;
    /// Longest pause inside a body, in seconds (`BODY_IDLE_TIMEOUT_SECS`).
    pub const BODY_IDLE_TIMEOUT_SECS: u64 = 60;
    /// Seconds before the minimum body rate applies (`BODY_GRACE_SECS`).
    pub const BODY_GRACE_SECS: u64 = 20;
    /// Slowest average request body rate, in bytes per second (`BODY_MIN_RATE`).
    pub const BODY_MIN_RATE: u64 = 500;
    /// Uploads and downloads served at once (`MAX_CONCURRENT_TRANSFERS`).
    pub const MAX_CONCURRENT_TRANSFERS: usize = 256;
    /// Wrong credentials allowed per client address and minute (`AUTH_FAILURES_PER_MINUTE`).
    pub const AUTH_FAILURES_PER_MINUTE: u32 = 20;
    /// Seconds a client has to send its request head (`HEADER_READ_TIMEOUT_SECS`).
    pub const HEADER_READ_TIMEOUT_SECS: u64 = 30;
    /// Largest request head, in bytes (`MAX_HEADER_BYTES`).
    pub const MAX_HEADER_BYTES: usize = 128 * 1024;
}

/// Limits on what a request may carry.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest `public-keys` form field, in bytes.
    pub max_public_keys_bytes: usize,
    /// Most recipients in one upload.
    pub max_recipients: usize,
    /// Largest plaintext upload, in bytes; `None` for no limit.
    pub max_upload_bytes: Option<u64>,
    /// Largest body of a download request (which carries only the wrapped key).
    pub max_download_body_bytes: usize,
    /// Longest pause of a client inside a body: sending an upload, or taking a download.
    pub body_idle_timeout: Duration,
    /// Time a request body may take before [`Self::body_min_rate`] applies.
    pub body_grace: Duration,
    /// Slowest average rate, in bytes per second, at which a request body may arrive once
    /// [`Self::body_grace`] is spent: each byte buys `1 / rate` seconds more (0: no minimum).
    pub body_min_rate: u64,
    /// Uploads and downloads served at once; more get 503.
    pub max_concurrent_transfers: usize,
    /// Wrong credentials allowed per client address and minute before 429 (0: no limit).
    pub auth_failures_per_minute: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_public_keys_bytes: defaults::MAX_PUBLIC_KEYS_BYTES,
            max_recipients: defaults::MAX_RECIPIENTS,
            max_upload_bytes: None,
            max_download_body_bytes: defaults::MAX_DOWNLOAD_BODY_BYTES,
            body_idle_timeout: Duration::from_secs(defaults::BODY_IDLE_TIMEOUT_SECS),
            body_grace: Duration::from_secs(defaults::BODY_GRACE_SECS),
            body_min_rate: defaults::BODY_MIN_RATE,
            max_concurrent_transfers: defaults::MAX_CONCURRENT_TRANSFERS,
            auth_failures_per_minute: defaults::AUTH_FAILURES_PER_MINUTE,
        }
    }
}

/// How uploads are encrypted.
#[derive(Debug, Clone, Default)]
pub struct UploadPolicy {
    /// Encrypt every upload with `symmetric_key.key`, as the original did, instead of a fresh key.
    pub static_data_key: bool,
    /// The format new blobs are written in.
    pub format: BlobFormat,
}

/// Connection-level limits against slow or oversized requests.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time a client has to send the request line and headers.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) in bytes; larger gets 431.
    pub max_header_bytes: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(defaults::HEADER_READ_TIMEOUT_SECS),
            max_header_bytes: defaults::MAX_HEADER_BYTES,
        }
    }
}
