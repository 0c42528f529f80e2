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

/// How long making one connection may take before it fails (PostgreSQL down or cut off).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A pool of connections; connections are made lazily and checked on reuse. Nothing waits
/// without bound: making a connection, waiting for a free one, checking one on reuse and
/// running one statement are each limited, so an outage makes work fail (to be tried again)
/// instead of hanging it.
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
    //
    // And never JIT-compiled: a statement the planner costs high (a lookup per job over 30
    // days of partitions) was compiled with LLVM for 3.8 s at a leader's takeover, to run for
    // milliseconds. faro's statements are short; compiling never pays.
    let ours = format!(
        "-c plan_cache_mode=force_custom_plan -c jit=off -c statement_timeout={}",
        config.statement_timeout.as_millis()
    );
    let options = match pg.get_options() {
        Some(given) => format!("{given} {ours}"),
        None => ours,
    };
    pg.options(&options);
    pg.connect_timeout(CONNECT_TIMEOUT);
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.pool_size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(config.pool_wait))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .context("cannot build the PostgreSQL pool")
}

/// Applies every migration not yet applied. Safe to call from several processes at once.
/// Waits up to `connect_wait` for a PostgreSQL that does not answer yet.
pub async fn migrate(config: &PgConfig) -> anyhow::Result<()> {
    let (mut client, connection) = connect(config).await?;
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

/// Applies the migrations once PostgreSQL answers, however long that takes: a service started
/// while its database is down waits for it (its `/health` says `starting`) and says so in its
/// log, then starts. A wrong password, a database that does not exist or a migration that
/// fails still fail at once, since waiting will not fix them.
pub async fn migrate_when_up(config: &PgConfig) -> anyhow::Result<()> {
    let mut pause = std::time::Duration::from_secs(1);
    loop {
        match migrate(config).await {
            Ok(()) => return Ok(()),
            Err(error) if unreachable(&error) => {
                tracing::warn!(
                    error = crate::pg::error_text(&error),
                    retry_in_s = pause.as_secs(),
                    "PostgreSQL (FARO_DATABASE_URL) does not answer; waiting for it before starting (not ready until then)"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(30));
            }
            Err(error) => return Err(error),
        }
    }
}

/// Whether an error is PostgreSQL not answering (yet), as opposed to one that says what to fix.
fn unreachable(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<tokio_postgres::Error>())
        .any(is_transient)
}

/// Connects once PostgreSQL answers: a refused connection, a server still starting or
/// shutting down, or too many connections is tried again (backing off to 2 s) until
/// `connect_wait` has passed; anything else (a wrong password, a database that does not exist)
/// fails at once, since waiting will not fix it.
pub async fn connect(
    config: &PgConfig,
) -> anyhow::Result<(
    tokio_postgres::Client,
    tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
)> {
    let deadline = tokio::time::Instant::now() + config.connect_wait;
    let mut delay = std::time::Duration::from_millis(100);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let error = match tokio_postgres::connect(config.url.expose(), NoTls).await {
            Ok(connected) => {
                if attempts > 1 {
                    tracing::info!(attempts, "PostgreSQL answers");
                }
                return Ok(connected);
            }
            Err(error) => error,
        };
        if !is_transient(&error) {
            return Err(error).context("cannot connect to PostgreSQL (FARO_DATABASE_URL)");
        }
        if tokio::time::Instant::now() + delay > deadline {
            return Err(error).with_context(|| {
                format!(
                    "PostgreSQL (FARO_DATABASE_URL) did not answer within {} s (FARO_DATABASE_WAIT)",
                    config.connect_wait.as_secs_f64()
                )
            });
        }
        // One line per attempt, so an operator watching the logs sees what it waits for.
        tracing::warn!(%error, attempts, retry_in_ms = delay.as_millis() as u64, "PostgreSQL does not answer yet; waiting");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_secs(2));
    }
}

/// Whether a failed connection may succeed later: no answer at all (refused, reset, closed),
/// or the server said it cannot take connections now.
fn is_transient(error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    match error.code() {
        None => true,
        Some(code) => [
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
        ]
        .contains(code),
    }
}

/// Why PostgreSQL refused what it was given, when it did: a value it cannot hold (a NUL
/// character, a timestamp out of its range, a number too large), a broken constraint, or a
/// row over a size limit. Such a statement fails the same way however often it is tried, so
/// its input is poison to set aside; any other failure (no connection, a timeout, a server
/// going down) may pass later and is `None`.
pub fn refusal(error: &anyhow::Error) -> Option<String> {
    error.chain().find_map(|cause| {
        let db = cause
            .downcast_ref::<tokio_postgres::Error>()?
            .as_db_error()?;
        let code = db.code().code();
        refuses_input(code).then(|| format!("{} (SQLSTATE {code})", db.message()))
    })
}

/// An error as it may be logged or answered: its chain of causes, as `{:#}` shows it, with a
/// PostgreSQL error reduced to its severity, message and constraint. Its DETAIL (and WHERE) is
/// left out: a refused row is shown there whole, a target's SNMP credentials included.
pub fn error_text(error: &anyhow::Error) -> String {
    error
        .chain()
        .map(
            |cause| match cause.downcast_ref::<tokio_postgres::error::DbError>() {
                Some(db) => match db.constraint() {
                    Some(constraint) => format!(
                        "{}: {} (constraint {constraint}, SQLSTATE {})",
                        db.severity(),
                        db.message(),
                        db.code().code()
                    ),
                    None => format!(
                        "{}: {} (SQLSTATE {})",
                        db.severity(),
                        db.message(),
                        db.code().code()
                    ),
                },
                None => cause.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join(": ")
}

/// Pure: whether a SQLSTATE says the input is at fault: class 22 (data exception), 23
/// (integrity constraint violation) or 54 (program limit exceeded).
fn refuses_input(code: &str) -> bool {
    ["22", "23", "54"]
        .iter()
        .any(|class| code.starts_with(class))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_input_the_server_cannot_hold_is_a_refusal() {
        // untranslatable character (a NUL in jsonb), timestamp out of range, check violation,
        // index row too large
        for code in ["22P05", "22008", "23514", "54000"] {
            assert!(refuses_input(code), "{code}");
        }
        // connection failure, admin shutdown, statement timeout, deadlock, serialization
        for code in ["08006", "57P01", "57014", "40P01", "40001"] {
            assert!(!refuses_input(code), "{code}");
        }
    }
}

#[cfg(all(test, feature = "test-util"))]
mod bounded {
    use super::*;
    use crate::testing::{PrivatePg, TestDb};
    use std::time::{Duration, Instant};

    /// A pooled connection plans each statement for its parameters and never JIT-compiles
    /// one, whatever the server's defaults (PostgreSQL's is `jit = on`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pooled_connections_plan_each_statement_and_never_compile_one() {
        let db = TestDb::create().await.unwrap();
        let pool = pool(&db.config()).unwrap();
        let client = pool.get().await.unwrap();
        for (setting, expected) in [("jit", "off"), ("plan_cache_mode", "force_custom_plan")] {
            let value: String = client
                .query_one(&format!("SHOW {setting}"), &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(value, expected, "{setting}");
        }
    }

    /// No PostgreSQL call waits without bound: a statement stuck behind a lock, a task waiting
    /// for a connection the pool does not have, a new connection to a frozen server all fail
    /// in their time with an error saying so.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn statements_pool_waits_and_connections_each_give_up_in_their_time() {
        let db = TestDb::create().await.unwrap();
        let mut config = db.config();
        config.pool_size = 1;
        config.statement_timeout = Duration::from_millis(300);
        config.pool_wait = Duration::from_millis(300);
        let pool = pool(&config).unwrap();
        let client = pool.get().await.unwrap();
        let started = Instant::now();
        let error = client
            .execute("SELECT pg_sleep(30)", &[])
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            error.code(),
            Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
            "{error}"
        );
        // The one connection is taken: the next task gives up waiting for it.
        let started = Instant::now();
        assert!(pool.get().await.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        drop(client);
        assert!(
            pool.get().await.is_ok(),
            "a connection given back is used again"
        );

        // A frozen server takes the TCP connection and never answers.
        let frozen = PrivatePg::start().unwrap();
        frozen.pause().unwrap();
        let pool = super::pool(&PgConfig::new(frozen.url("postgres"))).unwrap();
        let started = Instant::now();
        let got = tokio::time::timeout(Duration::from_secs(30), pool.get()).await;
        frozen.resume().unwrap();
        assert!(
            matches!(got, Ok(Err(_))),
            "a connection to a frozen server did not give up"
        );
        assert!(
            started.elapsed() < CONNECT_TIMEOUT * 2,
            "{:?}",
            started.elapsed()
        );
    }

    /// A refused row is never shown, only why it was refused: its DETAIL holds the row, a
    /// target's SNMP credentials included.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_row_is_shown_by_its_reason_never_its_values() {
        let db = TestDb::create().await.unwrap();
        let pool = pool(&db.config()).unwrap();
        let client = pool.get().await.unwrap();
        let error = client
            .execute(
                "INSERT INTO targets (id, address, snmp, max_concurrency)
                 VALUES ('olt-1', '10.0.0.1:161', '{\"community\": \"s3cret-community\"}', 0)",
                &[],
            )
            .await
            .unwrap_err();
        let error = anyhow::Error::new(error).context("cannot store the targets");
        assert!(
            format!("{error:#}").contains("s3cret-community"),
            "{error:#}"
        );
        let shown = error_text(&error);
        assert!(!shown.contains("s3cret-community"), "{shown}");
        assert!(
            shown.starts_with("cannot store the targets: db error: ERROR: new row for relation")
                && shown.contains("(constraint targets_max_concurrency_check, SQLSTATE 23514)"),
            "{shown}"
        );
    }
}
