//! Starting the proxy: logging, state, listener and shutdown on signals.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::Shared;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tracing_subscriber::EnvFilter;

use crate::config::{self, LogFormat, Logging, ServeConfig};
use crate::http::{self, AppState};
use crate::keys;
use crate::storage::{Storage, StorageError};
use crate::tls::ReloadableCert;

/// Why the proxy could not start, or stopped on an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The async runtime could not be made.
    #[error("cannot start runtime: {0}")]
    Runtime(std::io::Error),
    /// The storage could not be opened.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The API address cannot be listened on.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// HOST:PORT.
        address: String,
        /// What binding said.
        source: std::io::Error,
    },
    /// The METRICS_ADDR address cannot be listened on.
    #[error("cannot listen on METRICS_ADDR {address}: {source}")]
    ListenMetrics {
        /// METRICS_ADDR.
        address: String,
        /// What binding said.
        source: std::io::Error,
    },
    /// A listener does not know its own address.
    #[error(transparent)]
    LocalAddress(std::io::Error),
    /// Serving failed.
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// Runs `blobprox serve` with a resolved configuration until SIGTERM or SIGINT.
pub fn serve(config: ServeConfig) -> Result<(), ServerError> {
    init_logging(config.logging);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = tokio::runtime::Runtime::new().map_err(ServerError::Runtime)?;
    runtime.block_on(run(config))
}

/// Opens the storage, listens, and serves until shutdown has drained.
async fn run(config: ServeConfig) -> Result<(), ServerError> {
    let storage =
        Storage::open(config.backend.clone())?.with_max_buffer_bytes(config.max_buffer_bytes);
    let (listener, metrics_listener) = bind(&config).await?;
    announce(&config, &listener, metrics_listener.as_ref())?;
    let state = AppState::new(
        config.keys,
        storage,
        config.api_keys,
        config.limits,
        config.upload_policy,
    );
    // A wrong or expired storage credential shows here once, and in /readyz, rather than as
    // a stack of errors on every request.
    if let Err(error) = state.storage.check_reachable().await {
        tracing::warn!(%error, "storage is not ready");
    }
    tokio::spawn(reload_on_hangup(
        state.clone(),
        config.key_dir,
        config.api_key_file,
    ));
    let shutdown = drain_on_signal(state.clone(), config.shutdown_grace);
    let limits = config.connection_limits;
    let router = match metrics_listener {
        Some(metrics) => {
            let metrics_router = http::metrics_router(state.clone());
            tokio::spawn(http::serve(
                metrics,
                metrics_router,
                shutdown.clone(),
                limits,
            ));
            http::api_router(state)
        }
        None => http::router(state),
    };
    let served = match config.tls {
        Some(tls) => {
            tokio::spawn(reload_certificate_on_hangup(tls.cert));
            http::serve_tls(listener, tls.config, router, shutdown, limits).await
        }
        None => http::serve(listener, router, shutdown, limits).await,
    };
    served.map_err(ServerError::Serve)?;
    tracing::info!("blobprox stopped");
    Ok(())
}

/// The API listener and, with METRICS_ADDR, the metrics listener.
async fn bind(config: &ServeConfig) -> Result<(TcpListener, Option<TcpListener>), ServerError> {
    let listener = TcpListener::bind(&config.listen_address)
        .await
        .map_err(|source| ServerError::Listen {
            address: config.listen_address.clone(),
            source,
        })?;
    let Some(address) = &config.metrics_address else {
        return Ok((listener, None));
    };
    let metrics_listener =
        TcpListener::bind(address)
            .await
            .map_err(|source| ServerError::ListenMetrics {
                address: address.clone(),
                source,
            })?;
    Ok((listener, Some(metrics_listener)))
}

/// Tells the operator where things are and what the proxy listens on.
fn announce(
    config: &ServeConfig,
    listener: &TcpListener,
    metrics_listener: Option<&TcpListener>,
) -> Result<(), ServerError> {
    for notice in &config.notices {
        println!("{notice}");
    }
    println!("storage: {}", config.backend.describe());
    if let Some(metrics) = metrics_listener {
        let local = metrics.local_addr().map_err(ServerError::LocalAddress)?;
        println!("metrics on http://{local}/metrics");
    }
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let local = listener.local_addr().map_err(ServerError::LocalAddress)?;
    println!("listening on {scheme}://{local}");
    tracing::info!(keys = %config.key_dir.display(), storage = %config.backend.describe(), "blobprox started");
    Ok(())
}

/// Completes on SIGTERM or SIGINT once transfers in flight have finished or `grace` has passed,
/// with the deadline by which the listeners must stop; every listener waits on a clone.
fn drain_on_signal(state: AppState, grace: Duration) -> Shared<impl Future<Output = Instant>> {
    async move {
        shutdown_signal().await;
        let deadline = Instant::now() + grace;
        state.drain(deadline).await;
        deadline
    }
    .shared()
}

/// On every SIGHUP, reads the key directory and `API_KEY_FILE` again. Requests in flight keep
/// the keys they started with; a reload that fails keeps what the proxy had.
async fn reload_on_hangup(state: AppState, key_dir: PathBuf, api_key_file: Option<PathBuf>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; keys are reloaded only by a restart");
        return;
    };
    while hangup.recv().await.is_some() {
        match keys::load_key_files(&key_dir) {
            Ok(keys) => {
                let (current, retired) = (
                    keys.private_key.public_key().fingerprint().to_owned(),
                    keys.retired.len(),
                );
                state.keys.store(Arc::new(keys));
                tracing::info!(%current, retired, "reloaded the key directory");
            }
            Err(error) => {
                tracing::warn!(%error, "key reload failed; keeping the keys in use");
            }
        }
        if let Some(file) = &api_key_file {
            match config::read_api_key_file(file) {
                Ok(api_keys) => {
                    let accepted = api_keys.count();
                    state.auth.replace_api_keys(api_keys);
                    tracing::info!(accepted, "reloaded API_KEY_FILE");
                }
                Err(error) => {
                    tracing::warn!(%error, "API key reload failed; keeping the keys in use");
                }
            }
        }
    }
}

fn init_logging(logging: Logging) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{},hyper=info,h2=info,reqwest=info",
            logging.default_level
        ))
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match logging.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Rereads the TLS certificate and key on every SIGHUP; a bad pair keeps the old one.
async fn reload_certificate_on_hangup(cert: Arc<ReloadableCert>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!(
            "cannot listen for SIGHUP; the TLS certificate is reloaded only by a restart"
        );
        return;
    };
    while hangup.recv().await.is_some() {
        match cert.reload() {
            Ok(()) => tracing::info!("reloaded the TLS certificate"),
            Err(error) => {
                tracing::warn!(%error, "TLS certificate not reloaded; keeping the certificate in use")
            }
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutdown requested; /readyz answers draining while transfers in flight finish");
}
