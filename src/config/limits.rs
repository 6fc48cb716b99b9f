//! Limits on requests and connections, and how uploads are encrypted.

use std::time::Duration;

use crate::transfer::BlobFormat;

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
            max_public_keys_bytes: 64 * 1024,
            max_recipients: 100,
            max_upload_bytes: None,
            max_download_body_bytes: 64 * 1024,
            body_idle_timeout: Duration::from_secs(60),
            body_grace: Duration::from_secs(20),
            body_min_rate: 500,
            max_concurrent_transfers: 256,
            auth_failures_per_minute: 20,
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
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 128 * 1024,
        }
    }
}
