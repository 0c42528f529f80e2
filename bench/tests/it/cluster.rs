//! A three-node NATS cluster (streams and buckets with three copies) loses one node while a
//! load of runs goes through it: the services reconnect to the others and no run is lost.
//!
//! An attempt in flight on the dead node may be stranded (its delivery, ack or result lost
//! with the node; JetStream 2.11 does not always redeliver it): its deadline ends it
//! `timed_out` and its next attempt runs, so every run still ends once, `succeeded`.
//!
//! What it found, under the load of the whole suite: a dispatcher whose new leadership could
//! not start kept renewing its lease with nothing led, so no deadline fired again; and the
//! balancer's heartbeat watch, its consumer gone with the node, fell silent for good, so every
//! worker was declared lost and nothing was pulled again (`faro_shared::follow` now opens a
//! silent watch again).

use std::time::Duration;

use faro_bench::system::{Options, System};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_node_dies_during_a_load_of_runs_and_no_run_is_lost() {
    const RUNS: i64 = 2000;
    let mut system = System::start(Options {
        workers: 2,
        capacity: 40,
        nats_nodes: 3,
        env: vec![("FARO_RUN_TIMEOUT_GRACE".into(), "5s".into())],
        ..Options::default()
    })
    .await
    .unwrap();

    let sim = serde_json::json!({"duration_ms": [20, 120], "outcomes": {"succeeded": 1}});
    let jobs: Vec<_> = (0..RUNS)
        .map(|i| {
            serde_json::json!({"id": format!("load-{i}"), "queue": "load", "kind": "sim",
                               "timeout": "20s", "max_attempts": 5, "params": sim})
        })
        .collect();
    for (index, chunk) in jobs.chunks(500).enumerate() {
        system
            .submit_jobs(chunk, &format!("load-{index}"))
            .await
            .unwrap();
    }
    // Kill the node leading the runs' stream once the load is well under way: its clients move
    // to the other nodes, and a new stream leader is elected from the two copies left.
    system
        .wait_terminal(RUNS / 5, Duration::from_secs(120))
        .await
        .unwrap();
    let mut stream = system.js.get_stream(system.ns.jobs_stream()).await.unwrap();
    let cluster = stream.info().await.unwrap().cluster.clone();
    let cluster = cluster.expect("the runs' stream is clustered");
    assert_eq!(
        1 + cluster.replicas.len(),
        3,
        "the runs' stream should have three copies: {cluster:?}"
    );
    // The node the workers pull from: the leader of the queue's consumer (often of the
    // stream too). Killing it strands the pulls and acks in flight there.
    let queue = faro_shared::domain::QueueName::parse("load").unwrap();
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .get_consumer(&system.ns.queue_consumer(&queue))
        .await
        .unwrap();
    let leader = consumer
        .info()
        .await
        .unwrap()
        .cluster
        .clone()
        .and_then(|cluster| cluster.leader)
        .expect("the queue's consumer has a leader");
    system
        .bus
        .node_mut(&leader)
        .expect("the leader is a test node")
        .kill();
    let done_at_kill = system.count_terminal().await.unwrap();
    assert!(
        done_at_kill < RUNS,
        "the load ended before the node was killed; make it longer"
    );

    // Every job's run ends, once: the runs a stranded attempt held end with a later attempt.
    let ended = system
        .wait_count(
            "SELECT count(*) FROM runs WHERE status = 'succeeded'",
            RUNS,
            Duration::from_secs(240),
        )
        .await;
    let by_status: Vec<(String, i64)> = system
        .pairs("SELECT status, count(*) FROM runs GROUP BY 1 ORDER BY 1")
        .await
        .unwrap();
    if ended.is_err() {
        let open: Vec<(String, String)> = system
            .pairs(
                "SELECT r.job_id, r.status || ' attempt ' || r.attempt || ' dispatched '
                        || coalesce(r.dispatched_at::text, '-') || ' by ' || coalesce(r.worker_id, '-')
                        || ' error ' || coalesce(r.error, '-') || ' earlier: '
                        || coalesce((SELECT string_agg(a.attempt || ' ' || a.outcome
                                     || CASE WHEN a.late THEN ' late' ELSE '' END, ', ')
                                     FROM run_attempts a WHERE a.run_id = r.id), '-')
                 FROM runs r WHERE r.status <> 'succeeded' ORDER BY 1 LIMIT 10",
            )
            .await
            .unwrap();
        // What JetStream holds: the runs' stream and consumer, and the consumers of the
        // watches the services follow (a watch left without one went silent for good).
        let runs = stream
            .info()
            .await
            .map(|info| format!("{:?} {:?}", info.state, info.cluster));
        let pulls = consumer.info().await.map(|info| {
            format!(
                "delivered {:?} ack floor {:?} pending {} waiting {}",
                info.delivered, info.ack_floor, info.num_pending, info.num_waiting
            )
        });
        let mut watches = Vec::new();
        for name in [
            format!("KV_{}", system.ns.workers_bucket()),
            format!("KV_{}", system.ns.assignments_bucket()),
            system.ns.demand_stream(),
        ] {
            let watched = system.js.get_stream(&name).await.unwrap();
            let mut consumers = watched.consumers();
            while let Ok(Some(info)) = futures::TryStreamExt::try_next(&mut consumers).await {
                watches.push(format!(
                    "{name}: {} push_bound {} delivered {:?} leader {:?}",
                    info.name,
                    info.push_bound,
                    info.delivered,
                    info.cluster.and_then(|cluster| cluster.leader)
                ));
            }
        }
        panic!(
            "{ended:?}: killed {leader} with {done_at_kill} runs ended; runs by status: \
             {by_status:?}; not succeeded: {open:#?}\nruns' stream: {runs:?}\n\
             queue consumer: {pulls:?}\nwatches: {watches:#?}"
        );
    }
    let succeeded_jobs: i64 = system
        .one("SELECT count(DISTINCT job_id) FROM runs WHERE status = 'succeeded'")
        .await
        .unwrap();
    assert_eq!(succeeded_jobs, RUNS, "{by_status:?}");
    let stranded: i64 = system
        .one("SELECT count(*) FROM runs WHERE status = 'timed_out'")
        .await
        .unwrap();
    assert!(
        stranded < RUNS / 10,
        "{stranded} attempts stranded by one node's death: {by_status:?}"
    );
    system.stop().await.unwrap();
}
