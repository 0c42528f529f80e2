//! The worker's journal: one JSON line per execution started and ended
//! ([`faro_shared::messages::journal`]), appended to `FARO_WORKER_JOURNAL` when it is set.
//!
//! Each line is one `write` on a file opened for appending, so a line written survives a kill
//! of the worker right after. A journal that cannot be written is reported and never stops a
//! run.

use std::io::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};
use faro_shared::domain::{Outcome, WorkerId};
use faro_shared::messages::journal::{Event, Execution};
use faro_shared::messages::RunMessage;

/// Which delivery of which stored message an execution is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub count: i64,
    pub stream_seq: u64,
}

#[derive(Debug, Default)]
pub struct Journal {
    file: Option<std::sync::Mutex<std::fs::File>>,
}

impl Journal {
    /// Appends to `path`, made if missing.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self {
            file: Some(std::sync::Mutex::new(file)),
        })
    }

    pub fn started(
        &self,
        run: &RunMessage,
        worker: &WorkerId,
        delivery: Delivery,
        at: DateTime<Utc>,
    ) {
        self.write(|| record(Event::Start, run, worker, delivery, at));
    }

    pub fn ended(
        &self,
        run: &RunMessage,
        worker: &WorkerId,
        delivery: Delivery,
        at: DateTime<Utc>,
        outcome: Outcome,
        abandoned: Option<&str>,
    ) {
        self.write(|| Execution {
            outcome: Some(outcome),
            abandoned: abandoned.map(str::to_owned),
            ..record(Event::End, run, worker, delivery, at)
        });
    }

    fn write(&self, record: impl FnOnce() -> Execution) {
        let Some(file) = &self.file else { return };
        let mut line = match serde_json::to_vec(&record()) {
            Ok(line) => line,
            Err(error) => {
                tracing::warn!(%error, "cannot write a journal line");
                return;
            }
        };
        line.push(b'\n');
        let mut file = file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(error) = file.write_all(&line) {
            tracing::warn!(%error, "cannot append to the journal (FARO_WORKER_JOURNAL)");
        }
    }
}

fn record(
    event: Event,
    run: &RunMessage,
    worker: &WorkerId,
    delivery: Delivery,
    at: DateTime<Utc>,
) -> Execution {
    Execution {
        event,
        run_id: run.run_id,
        attempt: run.attempt,
        queue: run.queue.clone(),
        target: run.target.clone(),
        worker_id: worker.clone(),
        delivery: delivery.count,
        stream_seq: delivery.stream_seq,
        at,
        outcome: None,
        abandoned: None,
    }
}
