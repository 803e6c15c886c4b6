//! Turning SIGTERM / Ctrl-C into a cancelled [`CancellationToken`].

use tokio_util::sync::CancellationToken;

/// Waits for SIGTERM or Ctrl-C, then cancels `shutdown`. Spawn it from `main`.
pub async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
        // Someone else (a test, a fatal error) already asked to stop.
        _ = shutdown.cancelled() => return,
    }
    tracing::info!("shutdown signal received; finishing in-flight work");
    shutdown.cancel();
}
