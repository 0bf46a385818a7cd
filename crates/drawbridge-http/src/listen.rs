//! Where a public listener comes from: the socket systemd passed (socket activation, so a
//! restart refuses no connection: clients wait in the kernel's backlog while the new process
//! starts), or a fresh bind of the configured address.

use std::net::SocketAddr;

use tokio::net::TcpListener;

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
