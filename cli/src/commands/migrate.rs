//! `faro migrate`: applies the database migrations (`FARO_DATABASE_URL`) and exits.

use faro_shared::config::{Env, PgConfig};
use faro_shared::pg;

pub async fn run(env: &Env) -> anyhow::Result<()> {
    pg::migrate(&PgConfig::from_env(env)?).await?;
    println!("migrations applied");
    Ok(())
}
