//! The accept loop every jdc server shares (the declarator's SV2 and Stratum V1 ports, the
//! template-watcher's Template Distribution port): each connection in its own task, finished
//! tasks reaped as they end, accept errors logged and retried, all tasks stopped on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Accepts on `listener` until `shutdown`. For each connection (no Nagle delay),
/// `on_accept(stream, peer, open)` gets the number of connections still open and returns the
/// connection's task, or `None` to refuse it (it logs why). `what` names the server in logs.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    what: &'static str,
    shutdown: CancellationToken,
    mut on_accept: F,
) where
    F: FnMut(TcpStream, SocketAddr, usize) -> Option<Fut>,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(server = what, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if let Some(task) = on_accept(stream, peer, tasks.len()) {
            tasks.spawn(task);
        }
    }
    tasks.shutdown().await;
}
