//! The accept loop: plain HTTP/1.1, or TLS with HTTP/2 by ALPN, until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::config::ConnectionLimits;

/// Serves `router` on `listener` over plain HTTP/1.1 until `shutdown` completes, then stops
/// accepting and lets requests in flight finish until the deadline that `shutdown` returned.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = Instant> + Send + 'static,
    limits: ConnectionLimits,
) -> std::io::Result<()> {
    serve_on(listener, None, router, shutdown, limits).await
}

/// Like [`serve`], over TLS: HTTP/2 when the client offers it by ALPN, else HTTP/1.1.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = Instant> + Send + 'static,
    limits: ConnectionLimits,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    serve_on(listener, Some(acceptor), router, shutdown, limits).await
}

/// The HTTP/1.1 and HTTP/2 connection settings, from the same limits.
struct Protocols {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

impl Protocols {
    fn new(limits: ConnectionLimits) -> Self {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192));
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        // HTTP/2 has no header read timeout: the TLS handshake gets that time instead, and a
        // peer that stops answering pings for as long is dropped.
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(MAX_HTTP2_STREAMS)
            .keep_alive_interval(limits.header_read_timeout)
            .keep_alive_timeout(limits.header_read_timeout);
        Self { http1, http2 }
    }
}

/// A connection's byte stream: plain TCP or TLS over it.
trait Transport: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Transport for T {}

/// The connection ready for HTTP, and whether it speaks HTTP/2; `None` when the TLS handshake
/// failed or took longer than the header read timeout.
async fn handshake(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: ConnectionLimits,
) -> Option<(Box<dyn Transport>, bool)> {
    let Some(acceptor) = tls else {
        return Some((Box::new(tcp), false));
    };
    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            Some((Box::new(stream), http2))
        }
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// Requests one HTTP/2 connection may have open at once; transfers are limited globally too.
const MAX_HTTP2_STREAMS: u32 = 100;

async fn serve_on(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    shutdown: impl Future<Output = Instant> + Send + 'static,
    limits: ConnectionLimits,
) -> std::io::Result<()> {
    let protocols = Arc::new(Protocols::new(limits));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    let deadline = loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: wait, do not spin.
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            deadline = &mut shutdown => break deadline,
        };
        // Small answers (range reads, errors) must not wait for a delayed ACK.
        let _ = tcp.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone().map_request(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            },
        ));
        // Held through the handshake too, so that shutdown waits for it.
        let watcher = graceful.watcher();
        let protocols = protocols.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let Some((io, http2)) = handshake(tcp, peer, tls, limits).await else {
                return;
            };
            let io = TokioIo::new(io);
            let _ = if http2 {
                watcher
                    .watch(protocols.http2.serve_connection(io, service))
                    .await
            } else {
                watcher
                    .watch(protocols.http1.serve_connection(io, service))
                    .await
            };
        });
    };
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep_until(deadline) => {
            tracing::warn!("transfers still running after the grace period; stopping");
        }
    }
    Ok(())
}
