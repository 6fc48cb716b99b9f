//! What every handler shares: keys, storage, authentication, limits and the transfer slots.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::ApiError;
use crate::auth::{ApiKeys, Authenticator};
use crate::config::{Limits, UploadPolicy};
use crate::crypto::data_key::DataKey;
use crate::keys::ProxyKeys;
use crate::metrics::Metrics;
use crate::storage::Storage;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The proxy's RSA keys (current and retired) and static key; replaced whole on reload.
    pub keys: Arc<arc_swap::ArcSwap<ProxyKeys>>,
    /// Blob storage.
    pub storage: Arc<Storage>,
    /// The API-key check.
    pub auth: Arc<Authenticator>,
    /// Request limits.
    pub limits: Limits,
    /// Upload encryption choices.
    pub upload_policy: UploadPolicy,
    /// Request counters and histograms.
    pub metrics: Arc<Metrics>,
    /// One permit per upload or download in progress.
    pub transfers: Arc<Semaphore>,
    /// Set when shutdown starts, so that /readyz tells balancers to stop sending.
    pub draining: Arc<AtomicBool>,
}

impl AppState {
    /// State for a proxy with these keys, storage, API keys and policies.
    pub fn new(
        keys: ProxyKeys,
        storage: Storage,
        api_keys: ApiKeys,
        limits: Limits,
        upload_policy: UploadPolicy,
    ) -> Self {
        Self {
            keys: Arc::new(arc_swap::ArcSwap::from_pointee(keys)),
            storage: Arc::new(storage),
            auth: Arc::new(Authenticator::new(
                api_keys,
                limits.auth_failures_per_minute,
            )),
            transfers: Arc::new(Semaphore::new(limits.max_concurrent_transfers)),
            limits,
            upload_policy,
            metrics: Arc::default(),
            draining: Arc::default(),
        }
    }

    /// Turns /readyz not-ready, then waits until no transfer is in flight or `deadline` passes.
    /// Requests keep being served meanwhile: a balancer needs a few health checks to notice.
    pub async fn drain(&self, deadline: Instant) {
        self.draining.store(true, Ordering::Relaxed);
        while self.transfers.available_permits() < self.limits.max_concurrent_transfers
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Unwraps a wrapped key with the current or a retired private key, counting which opened it.
    pub fn unwrap_key(&self, wrapped: &str) -> Result<DataKey, ApiError> {
        let keys = self.keys.load();
        let unwrapped = keys.unwrap_key(wrapped).map_err(ApiError::Key)?;
        self.metrics
            .key_unwrapped(unwrapped.fingerprint, unwrapped.role.as_str());
        Ok(unwrapped.data_key)
    }

    /// A transfer slot, or 503 when all are taken; hold it until the transfer ends.
    pub fn transfer_permit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.transfers
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Busy {
                limit: self.limits.max_concurrent_transfers,
            })
    }
}
