//! The dispatcher's SQL, one module per table family: `submissions`, `outbox`, `definitions`
//! (jobs, targets, queues and the runs made from definitions), `results` (executing a result
//! plan), `outcomes` (the outcome feed's outbox), `facts` (what operators ask), `pages` (lists of runs) and `history` (the days of run history). Hot settings are read and written by
//! `faro_shared::settings`.
//!
//! Every write on a hot path is one statement per batch (`unnest` of arrays), never a round
//! trip per run. States become SQL text here and only here. No decision is made here: what a
//! batch of results does is planned by `crate::results::plan`, what a submission records by
//! `crate::plan`.

mod definitions;
mod facts;
mod history;
mod outbox;
mod outcomes;
mod pages;
mod results;
mod submissions;

pub use definitions::{
    chained_jobs, definition, open_recurring_runs, queue_limits, record_slots, recurring_jobs,
    target_limits, MISSED,
};
pub use facts::{compact_run_tallies, job_facts, run_facts, run_status, status};
pub use history::{
    drop_history_day, expire_held_runs, expire_submissions, history_days, history_size,
    make_history_day, table_bytes, Expired,
};
pub use outbox::{
    drop_from_outbox, in_flight_runs, mark_published, next_retry, run_message, take_due_retries,
    unpublished_runs,
};
pub use outcomes::{clear_outcomes, pending_outcomes};
pub use pages::runs_page;
pub use results::{ended_outcomes, record_results, Recording};
pub use submissions::{
    record_rejection, record_submission, submission_progress, submission_record, Recorded,
};

/// A count or attempt number as PostgreSQL's `int4`.
fn to_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}
