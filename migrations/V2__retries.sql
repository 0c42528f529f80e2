-- Retries: how many attempts a run may make and after which outcomes; superseded and late
-- attempts kept as history; the outbox can hold a run until its retry is due.

-- retry_on NULL: the default, every outcome but success (failed, interrupted, timed_out).
ALTER TABLE jobs
    ADD COLUMN max_attempts integer NOT NULL DEFAULT 1 CHECK (max_attempts BETWEEN 1 AND 20),
    ADD COLUMN retry_on     text[];

ALTER TABLE runs
    ADD COLUMN max_attempts integer NOT NULL DEFAULT 1 CHECK (max_attempts BETWEEN 1 AND 20),
    ADD COLUMN retry_on     text[],
    -- when the current attempt is due, for a retry waiting in the outbox
    ADD COLUMN retry_at     timestamptz;

-- A fresh run is due at once; a retry after its backoff.
ALTER TABLE run_outbox
    ADD COLUMN not_before timestamptz NOT NULL DEFAULT now(),
    -- true for a retry waiting for its backoff; false for a run to publish at once
    ADD COLUMN retry      boolean NOT NULL DEFAULT false;
CREATE INDEX run_outbox_retries ON run_outbox (not_before) WHERE retry;

-- Attempts that did not end their run: those retried, and late or repeated results that
-- changed nothing. The attempt that ends a run is recorded in `runs` itself.
CREATE TABLE run_attempts (
    run_id      uuid NOT NULL,
    attempt     integer NOT NULL,
    outcome     text NOT NULL,
    worker_id   text,
    started_at  timestamptz,
    finished_at timestamptz,
    error       text,
    -- true: the result arrived for an attempt already superseded or ended, and changed nothing
    late        boolean NOT NULL DEFAULT false,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX run_attempts_by_run ON run_attempts (run_id, attempt);
