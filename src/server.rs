//! Starting the proxy: logging, state, listener and shutdown on signals.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::config::{self, LogFormat, ServeArgs};
use crate::http::{self, AppState};
use crate::keys;
use crate::storage::Storage;
use crate::tls::ReloadableCert;

/// Runs `blobprox serve` until SIGTERM or SIGINT.
pub fn serve(args: ServeArgs) -> Result<(), String> {
    let config = config::resolve(&args)?;
    init_logging(&args);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let runtime =
        tokio::runtime::Runtime::new().map_err(|e| format!("cannot start runtime: {e}"))?;
    runtime.block_on(async move {
        let storage = Storage::open(config.backend.clone())
            .map_err(|e| e.to_string())?
            .with_max_buffer_bytes(args.max_buffer_bytes);
        let state = AppState::new(
            config.keys,
            storage,
            config.api_keys,
            config.limits,
            config.upload_policy,
        );
        let address = format!("{}:{}", args.host, args.port);
        let listener = TcpListener::bind(&address)
            .await
            .map_err(|e| format!("cannot listen on {address}: {e}"))?;
        let metrics_listener = match &args.metrics_addr {
            Some(address) => Some(TcpListener::bind(address).await.map_err(|e| format!("cannot listen on METRICS_ADDR {address}: {e}"))?),
            None => None,
        };
        for notice in &config.notices {
            println!("{notice}");
        }
        println!("storage: {}", config.backend.describe());
        if let Some(metrics) = &metrics_listener {
            println!("metrics on http://{}/metrics", metrics.local_addr().map_err(|e| e.to_string())?);
        }
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        println!("listening on {scheme}://{local}");
        tracing::info!(keys = %config.key_dir.display(), storage = %config.backend.describe(), "blobprox started");
        // A wrong or expired storage credential shows here once, and in /readyz, rather than as
        // a stack of errors on every request.
        if let Err(error) = state.storage.check_reachable().await {
            tracing::warn!(%error, "storage is not ready");
        }
        tokio::spawn(reload_on_hangup(
            state.clone(),
            config.key_dir.clone(),
            config.api_key_file.clone(),
        ));
        let grace = Duration::from_secs(args.shutdown_grace_secs);
        let drain_state = state.clone();
        let shutdown = async move {
            shutdown_signal().await;
            let deadline = tokio::time::Instant::now() + grace;
            drain_state.drain(deadline).await;
            deadline
        }
        .shared();
        let router = match metrics_listener {
            Some(metrics) => {
                tokio::spawn(http::serve(metrics, http::metrics_router(state.clone()), shutdown.clone(), config.connection_limits));
                http::api_router(state)
            }
            None => http::router(state),
        };
        let served = match config.tls {
            Some(tls) => {
                tokio::spawn(reload_certificate_on_hangup(tls.cert));
                http::serve_tls(listener, tls.config, router, shutdown, config.connection_limits).await
            }
            None => http::serve(listener, router, shutdown, config.connection_limits).await,
        };
        served.map_err(|e| format!("server failed: {e}"))?;
        tracing::info!("blobprox stopped");
        Ok(())
    })
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

fn init_logging(args: &ServeArgs) {
    let default_level = if args.prod { "info" } else { "debug" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!("{default_level},hyper=info,h2=info,reqwest=info"))
    });
    let format = args.log_format.unwrap_or(if args.prod {
        LogFormat::Json
    } else {
        LogFormat::Text
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
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
