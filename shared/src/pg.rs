//! PostgreSQL setup: the connection pool and the migrations runner.
//!
//! Owns connecting and migrating; the SQL of each service lives in that service's `store`.

use anyhow::Context as _;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::config::PgConfig;

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// Serializes concurrent migrators (several services starting at once).
const MIGRATION_LOCK: i64 = 0x0066_6172_6f6d_6967; // "faromig"

/// A pool of connections; connections are made lazily and checked on reuse.
pub fn pool(config: &PgConfig) -> anyhow::Result<Pool> {
    let mut pg: tokio_postgres::Config = config
        .url
        .expose()
        .parse()
        .context("FARO_DATABASE_URL is not a PostgreSQL URL")?;
    // Every statement is planned for its own parameters. A cached generic plan is made once,
    // from the statistics of that moment: one made while `runs` was nearly empty kept
    // seq-scanning it as it grew to millions of rows (a result batch went from 7 to 77 ms in
    // two minutes). The batches faro sends are large; planning each costs well under 1 ms.
    let options = match pg.get_options() {
        Some(given) => format!("{given} -c plan_cache_mode=force_custom_plan"),
        None => "-c plan_cache_mode=force_custom_plan".to_owned(),
    };
    pg.options(&options);
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.pool_size)
        .build()
        .context("cannot build the PostgreSQL pool")
}

/// Applies every migration not yet applied. Safe to call from several processes at once.
pub async fn migrate(config: &PgConfig) -> anyhow::Result<()> {
    let (mut client, connection) = tokio_postgres::connect(config.url.expose(), NoTls)
        .await
        .context("cannot connect to PostgreSQL (FARO_DATABASE_URL) to migrate")?;
    let driver = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "migration connection ended");
        }
    });
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .context("cannot take the migration lock")?;
    let report = embedded::migrations::runner()
        .run_async(&mut client)
        .await
        .context("migrations failed");
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let report = report?;
    for migration in report.applied_migrations() {
        tracing::info!(
            version = migration.version(),
            name = migration.name(),
            "migration applied"
        );
    }
    drop(client);
    let _ = driver.await;
    Ok(())
}

/// Waits until PostgreSQL answers, for services that start before it does.
pub async fn wait_ready(pool: &Pool, timeout: std::time::Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = std::time::Duration::from_millis(100);
    loop {
        match pool.get().await {
            Ok(client) => {
                client.simple_query("SELECT 1").await?;
                return Ok(());
            }
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(%error, "PostgreSQL not reachable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(2));
            }
            Err(error) => {
                return Err(error)
                    .context("PostgreSQL did not become reachable (FARO_DATABASE_URL)")
            }
        }
    }
}
