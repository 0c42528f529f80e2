//! Worker integration tests on a private nats-server: this test plays the balancer (it writes
//! the assignment) and the dispatcher (it publishes runs and reads results).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fence;
mod full;
mod load;
mod slots;

use std::time::Duration;

use async_nats::jetstream;
use chrono::Utc;
use faro_shared::domain::{JobId, Priority, QueueName, TargetId, WorkerId};
use faro_shared::messages::{
    Assignment, DurationRange, OutcomeShares, RunMessage, RunResult, SimParams, Task,
};
use faro_shared::nats::Topology;
use faro_shared::testing::TestBus;
use faro_shared::Namespace;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub struct Harness {
    pub bus: TestBus,
    pub ns: Namespace,
    pub js: jetstream::Context,
    pub topology: Topology,
    pub queue: QueueName,
}

impl Harness {
    pub async fn start() -> Self {
        let bus = TestBus::start().await.unwrap();
        let queue = QueueName::parse("q").unwrap();
        // As the dispatcher does before its first run to the queue: workers only open it.
        faro_shared::nats::ensure_queue_consumer(&bus.js, &bus.ns, &queue)
            .await
            .unwrap();
        Self {
            ns: bus.ns.clone(),
            js: bus.js.clone(),
            topology: bus.topology.clone(),
            bus,
            queue,
        }
    }

    /// Starts a worker `id` already assigned to the test queue.
    pub async fn worker(
        &self,
        id: &str,
        capacity: u32,
        grace: &str,
    ) -> (JoinHandle<anyhow::Result<()>>, CancellationToken) {
        let env = self.worker_env(id, capacity, grace).await;
        let shutdown = CancellationToken::new();
        let config = faro_worker::Config::from_env(&env).unwrap();
        (
            tokio::spawn(faro_worker::run(config, shutdown.clone())),
            shutdown,
        )
    }

    /// Assigns worker `id` to the test queue; the settings it starts with.
    pub async fn worker_env(
        &self,
        id: &str,
        capacity: u32,
        grace: &str,
    ) -> faro_shared::config::Env {
        let assignment = Assignment {
            worker_id: WorkerId::parse(id).unwrap(),
            queues: vec![self.queue.clone()],
            // The machine's CPU is loaded by the other tests: no admission by load here.
            settings: faro_shared::messages::WorkerSettings {
                cpu_max: 100,
                mem_max: 100,
                log_level: None,
            },
            updated_at: Utc::now(),
        };
        self.topology
            .assignments
            .put(id, serde_json::to_vec(&assignment).unwrap().into())
            .await
            .unwrap();
        let mut env = self.bus.env(None);
        env.set("FARO_WORKER_ID", id)
            .set("FARO_WORKER_CAPACITY", capacity.to_string())
            .set("FARO_WORKER_FETCH_EXPIRY", "200ms")
            .set("FARO_HEARTBEAT_INTERVAL", "50ms")
            .set("FARO_SHUTDOWN_GRACE", grace);
        env
    }

    /// Waits until the test queue has nothing pending or unacknowledged, then checks that no
    /// result came beyond those [`Harness::results`] read.
    pub async fn wait_queue_empty_and_no_more_results(&self) {
        let mut consumer =
            faro_shared::nats::ensure_queue_consumer(&self.js, &self.ns, &self.queue)
                .await
                .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let info = consumer.info().await.unwrap();
            if (info.num_pending, info.num_ack_pending) == (0, 0) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{info:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut reader = faro_shared::nats::bind_service_consumer(
            &self.js,
            &self.ns.results_stream(),
            self.ns.dispatcher_consumer(),
        )
        .await
        .unwrap();
        assert_eq!(reader.info().await.unwrap().num_pending, 0, "a result more");
    }

    /// Waits until worker `id` says it executes `count` runs.
    pub async fn wait_in_progress(&self, id: &str, count: u32, limit: Duration) {
        let mut beats = self.topology.workers.watch_with_history(id).await.unwrap();
        let executing = async {
            while let Some(Ok(entry)) = beats.next().await {
                let beat = serde_json::from_slice::<faro_shared::messages::Heartbeat>(&entry.value);
                if beat.is_ok_and(|b| b.in_progress == count) {
                    return;
                }
            }
            panic!("the heartbeat watch ended");
        };
        tokio::time::timeout(limit, executing)
            .await
            .unwrap_or_else(|_| panic!("{id} never had {count} runs in progress"));
    }

    /// Publishes `count` seeded sim runs of `duration_ms` that always succeed.
    /// The `i`th simulated run, lasting `duration_ms`.
    pub fn sim_run(&self, i: usize, duration_ms: u64) -> RunMessage {
        RunMessage {
            run_id: uuid::Uuid::now_v7(),
            attempt: 1,
            job_id: JobId::parse(format!("j{i}")).unwrap(),
            queue: self.queue.clone(),
            target: Some(TargetId::parse(format!("t{}", i % 3)).unwrap()),
            priority: Priority::default(),
            task: Task::Sim(SimParams {
                duration_ms: DurationRange {
                    min: duration_ms,
                    max: duration_ms,
                },
                outcomes: OutcomeShares {
                    succeeded: 1.0,
                    failed: 0.0,
                    interrupted: 0.0,
                },
                seed: Some(1),
            }),
            timeout_ms: None,
            device: None,
            simulate: false,
            deadline: None,
            sent_at: None,
        }
    }

    /// Publishes one run on its queue.
    pub async fn publish(&self, run: &RunMessage) {
        self.js
            .publish(
                run.subject(&self.ns),
                serde_json::to_vec(run).unwrap().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    pub async fn publish_runs(&self, count: usize, duration_ms: u64) -> Vec<RunMessage> {
        let mut runs = Vec::new();
        for i in 0..count {
            let run = self.sim_run(i, duration_ms);
            self.publish(&run).await;
            runs.push(run);
        }
        runs
    }

    /// Reads `count` results, failing after `limit`.
    pub async fn results(&self, count: usize, limit: Duration) -> Vec<RunResult> {
        // The dispatcher's consumer (`faro setup` declared it): the results stream, a work
        // queue, takes no other reader.
        let consumer = faro_shared::nats::bind_service_consumer(
            &self.js,
            &self.ns.results_stream(),
            self.ns.dispatcher_consumer(),
        )
        .await
        .unwrap();
        let mut messages = consumer.messages().await.unwrap();
        let mut results = Vec::new();
        while results.len() < count {
            let message = tokio::time::timeout(limit, messages.next())
                .await
                .unwrap_or_else(|_| panic!("only {} of {count} results", results.len()))
                .unwrap()
                .unwrap();
            results.push(serde_json::from_slice(&message.payload).unwrap());
            message.ack().await.unwrap();
        }
        results
    }
}
