-- faro's first tables: definitions (pools, queues, targets, jobs), history (submissions, runs),
-- the worker registry and the hot configuration. Forward-only: change with a new migration.

CREATE TABLE pools (
    name        text PRIMARY KEY,
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO pools (name, description) VALUES ('default', 'workers that name no pool');

-- A class of work. Queues named in a submission but not defined are created with defaults.
CREATE TABLE queues (
    name          text PRIMARY KEY,
    priority      smallint NOT NULL DEFAULT 5 CHECK (priority BETWEEN 1 AND 10),
    -- kinds of the jobs submitted to it: a worker serves a queue only if it supports them all
    kinds         text[] NOT NULL DEFAULT '{}',
    min_workers   integer NOT NULL DEFAULT 0 CHECK (min_workers >= 0),
    max_workers   integer CHECK (max_workers IS NULL OR max_workers >= min_workers),
    max_in_flight integer CHECK (max_in_flight IS NULL OR max_in_flight > 0),
    home_pools    text[] NOT NULL DEFAULT '{default}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- A device jobs act on, usually an OLT.
CREATE TABLE targets (
    id              text PRIMARY KEY,
    name            text NOT NULL DEFAULT '',
    address         text,
    snmp            jsonb NOT NULL DEFAULT '{}',
    -- NULL: the system default (system_config target.max_concurrency)
    max_concurrency integer CHECK (max_concurrency IS NULL OR max_concurrency > 0),
    enabled         boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- A job definition; interval_ms NULL means one-shot.
CREATE TABLE jobs (
    id              text PRIMARY KEY,
    queue           text NOT NULL REFERENCES queues (name),
    kind            text NOT NULL,
    target          text,
    params          jsonb NOT NULL DEFAULT '{}',
    priority        smallint NOT NULL DEFAULT 5 CHECK (priority BETWEEN 1 AND 10),
    interval_ms     bigint CHECK (interval_ms IS NULL OR interval_ms > 0),
    enabled         boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    last_run_at     timestamptz,
    last_success_at timestamptz,
    last_failure_at timestamptz
);

-- One accepted submission (a faro.submit message or a batch file); its id deduplicates.
CREATE TABLE submissions (
    id           text PRIMARY KEY,
    jobs         integer NOT NULL,
    submitted_at timestamptz,
    received_at  timestamptz NOT NULL DEFAULT now()
);

-- One attempt chain of a job. A run reaches exactly one terminal status.
-- Hot path: one insert and one terminal update per run. No index covers the columns the
-- terminal update sets, and pages keep free space, so that update is HOT (no index writes).
CREATE TABLE runs (
    id            uuid PRIMARY KEY,
    job_id        text NOT NULL,
    submission_id text,
    -- index of the job inside its submission
    seq           integer,
    queue         text NOT NULL,
    target        text,
    kind          text NOT NULL,
    params        jsonb NOT NULL,
    priority      smallint NOT NULL,
    attempt       integer NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN (
                      'pending', 'dispatched', 'succeeded', 'failed', 'interrupted',
                      'timed_out', 'cancelled', 'skipped')),
    submitted_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    dispatched_at timestamptz,
    started_at    timestamptz,
    finished_at   timestamptz,
    recorded_at   timestamptz,
    worker_id     text,
    simulated     boolean,
    output        jsonb,
    error         text
) WITH (fillfactor = 80);
CREATE INDEX runs_by_job ON runs (job_id);
CREATE INDEX runs_by_submission ON runs (submission_id);

-- Transactional outbox: runs recorded but not yet stored in JetStream. A row is written with
-- its run and deleted once JetStream confirms the publish; whatever a crash leaves here is
-- published again at start (JetStream drops the repeats by Nats-Msg-Id).
CREATE TABLE run_outbox (
    run_id        uuid PRIMARY KEY,
    submission_id text,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- The worker registry, kept by the balancer from heartbeats.
CREATE TABLE workers (
    id             text PRIMARY KEY,
    pool           text NOT NULL,
    capacity       integer NOT NULL,
    kinds          text[] NOT NULL,
    version        text NOT NULL,
    state          text NOT NULL CHECK (state IN ('active', 'unstable', 'lost', 'left')),
    first_seen     timestamptz NOT NULL,
    last_seen      timestamptz NOT NULL,
    beats_received bigint NOT NULL DEFAULT 0,
    beats_missed   bigint NOT NULL DEFAULT 0,
    last_heartbeat jsonb
);

CREATE TABLE worker_events (
    id        bigserial PRIMARY KEY,
    worker_id text NOT NULL,
    event     text NOT NULL CHECK (event IN ('joined', 'unstable', 'lost', 'recovered', 'left')),
    at        timestamptz NOT NULL DEFAULT now(),
    detail    jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX worker_events_by_worker ON worker_events (worker_id, at DESC);

-- Hot configuration: read by the services every cycle, changed with `faro config set`.
CREATE TABLE system_config (
    key        text PRIMARY KEY,
    value      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
