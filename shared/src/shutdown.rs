//! Graceful shutdown: one token that SIGTERM or SIGINT cancels.
//!
//! Services take a `CancellationToken` in `run`, so a test stops a service by cancelling it.

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or SIGINT.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        trigger.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the service");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs `work` (a service's start-up) unless `shutdown` comes first; `None` when it did.
pub async fn unless_cancelled<T>(
    shutdown: &CancellationToken,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<Option<T>> {
    tokio::select! {
        _ = shutdown.cancelled() => {
            tracing::info!("shutdown requested during start-up");
            Ok(None)
        }
        done = work => done.map(Some),
    }
}

/// Runs a service's long-lived tasks; when one ends, says which and why and stops the rest.
///
/// A task that returns while the service is not shutting down is a failure even when it
/// returns `Ok`: long-running loops only end on shutdown.
#[derive(Debug)]
pub struct Supervisor {
    service: &'static str,
    tasks: tokio::task::JoinSet<(&'static str, anyhow::Result<()>)>,
    shutdown: CancellationToken,
}

impl Supervisor {
    pub fn new(service: &'static str, shutdown: CancellationToken) -> Self {
        Self {
            service,
            tasks: tokio::task::JoinSet::new(),
            shutdown,
        }
    }

    /// Starts a supervised task.
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.tasks.spawn(async move { (name, task.await) });
    }

    /// Waits for shutdown or the first task to end, then for all tasks (at most `grace`).
    pub async fn wait(mut self, grace: std::time::Duration) -> anyhow::Result<()> {
        let service = self.service;
        let mut first_error = None;
        if let Some(joined) = self.tasks.join_next().await {
            let stopping = self.shutdown.is_cancelled();
            match joined {
                Ok((task, Ok(()))) if stopping => tracing::debug!(service, task, "task stopped"),
                Ok((task, Ok(()))) => {
                    tracing::error!(
                        service,
                        task,
                        "task ended unexpectedly; stopping the service"
                    );
                    first_error =
                        Some(anyhow::anyhow!("{service}: task {task} ended unexpectedly"));
                }
                Ok((task, Err(error))) => {
                    tracing::error!(
                        service,
                        task,
                        error = crate::pg::error_text(&error),
                        "task failed; stopping the service"
                    );
                    first_error = Some(error.context(format!("{service}: task {task} failed")));
                }
                Err(error) => {
                    tracing::error!(service, %error, "task panicked; stopping the service");
                    first_error = Some(anyhow::anyhow!("{service}: a task panicked: {error}"));
                }
            }
        }
        self.shutdown.cancel();
        let drained = tokio::time::timeout(grace, async {
            while let Some(joined) = self.tasks.join_next().await {
                match joined {
                    Ok((task, Err(error))) => {
                        tracing::warn!(
                            service,
                            task,
                            error = crate::pg::error_text(&error),
                            "task failed while stopping"
                        )
                    }
                    Ok((task, Ok(()))) => tracing::debug!(service, task, "task stopped"),
                    Err(error) => tracing::warn!(service, %error, "task panicked while stopping"),
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                service,
                grace_secs = grace.as_secs(),
                "tasks still running after the grace period; aborting them"
            );
            self.tasks.abort_all();
        }
        tracing::info!(service, "stopped");
        first_error.map_or(Ok(()), Err)
    }
}
