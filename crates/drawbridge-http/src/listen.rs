//! Where a public listener comes from: the socket systemd passed (socket activation, so a
//! restart refuses no connection: clients wait in the kernel's backlog while the new process
//! starts), or a fresh bind of the configured address; and serving a router on it until a
//! signal, then draining.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::inflight;

/// The socket passed by the service manager (`LISTEN_FDS`, first descriptor) if there is one,
/// else a new listener bound to `addr`.
pub async fn bind_or_inherit(addr: SocketAddr) -> std::io::Result<TcpListener> {
    if std::env::var_os("LISTEN_FDS").is_some() {
        let mut fds = listenfd::ListenFd::from_env();
        if let Some(listener) = fds.take_tcp_listener(0)? {
            listener.set_nonblocking(true)?;
            let listener = TcpListener::from_std(listener)?;
            tracing::info!(
                address = %listener.local_addr()?,
                "serving on the socket passed by the service manager"
            );
            return Ok(listener);
        }
    }
    TcpListener::bind(addr).await
}

/// Serve `router` on `listener` until `shutdown` resolves, then finish in-flight requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener.tap_io(set_nodelay), router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Turn Nagle's algorithm off on an accepted connection: SSE chunks are small and must leave at
/// once (with Nagle and delayed ACKs, a stream stalls about 40 ms per chunk).
pub fn set_nodelay(tcp: &mut tokio::net::TcpStream) {
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
}

/// Serve `router` until a SIGTERM/SIGINT (or until `shutdown` is cancelled elsewhere), then
/// drain: shutdown is cancelled, so `/health` says draining (the `ApiState::draining` token is
/// `shutdown`'s) and new work is refused with 503, while connections are still accepted; once
/// every request in flight (streamed answers included) is done, or `grace` has passed, the
/// listener closes.
pub async fn serve_until_signal(
    listener: TcpListener,
    router: Router,
    shutdown: &drawbridge_telemetry::Shutdown,
    signals: &mut drawbridge_telemetry::Signals,
    grace: Duration,
) -> std::io::Result<()> {
    let inflight = tokio_util::task::TaskTracker::new();
    let router = router.layer(axum::middleware::from_fn_with_state(
        inflight.clone(),
        inflight::track,
    ));
    let stop_accepting = CancellationToken::new();
    let server = serve(listener, router, stop_accepting.clone().cancelled_owned());
    tokio::pin!(server);
    // The server keeps accepting (and answering `/health` with draining) while this waits.
    let drain = async {
        tokio::select! {
            () = signals.recv() => {}
            () = shutdown.cancelled() => {}
        }
        tracing::info!("draining");
        shutdown.cancel();
        inflight.close();
        if tokio::time::timeout(grace, inflight.wait()).await.is_err() {
            tracing::warn!(
                in_flight = inflight.len(),
                "requests still in flight at the drain deadline"
            );
        }
        stop_accepting.cancel();
    };
    tokio::select! {
        result = &mut server => return result,
        () = drain => {}
    }
    // Only idle keep-alive connections are left to close.
    match tokio::time::timeout(Duration::from_secs(1), server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::debug!("connections still open after the drain");
            Ok(())
        }
    }
}
