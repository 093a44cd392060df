//! The stop signal both binaries wait for: the first SIGINT or SIGTERM.
//!
//! Shared so that the server and the aggregator stop on exactly the same
//! signals (an orchestrator's SIGTERM, an operator's Ctrl-C).

/// Completes on the first SIGINT or SIGTERM (SIGINT only off Unix); a signal
/// that cannot be listened for is logged and never fires.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
