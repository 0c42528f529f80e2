//! `faro cancel RUN`: at once if the run waits or is still queued, through its worker if it
//! runs.

use faro_shared::config::Env;
use faro_shared::messages::{CancelRequest, CancelState};

use crate::ask::ask;

pub async fn run(env: &Env, run_id: uuid::Uuid) -> anyhow::Result<()> {
    let reply = ask(env, &CancelRequest { run_id }).await?;
    match reply.state {
        CancelState::Waiting => println!("run {run_id} was waiting; cancelled"),
        CancelState::Queued => println!(
            "run {run_id} was queued, not started; cancelled (a worker that pulls it skips it)"
        ),
        CancelState::Running => println!(
            "run {run_id} is running on worker {}; it is being stopped and will end cancelled",
            reply
                .worker_id
                .map(|w| w.to_string())
                .unwrap_or_else(|| "?".to_owned())
        ),
        CancelState::Ended => {
            println!(
                "run {run_id} had already ended ({}); nothing changed",
                reply.status
            )
        }
    }
    Ok(())
}
