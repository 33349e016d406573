//! SIGTERM and SIGINT cancel a token: how `run` and the one-shot commands learn to stop.

use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// Cancels `shutdown` on the first SIGTERM or SIGINT.
pub async fn watch(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received; shutting down"),
        _ = int.recv() => info!("SIGINT received; shutting down"),
    }
    shutdown.cancel();
}
