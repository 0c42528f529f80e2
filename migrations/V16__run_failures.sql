-- The runs that ended other than succeeded, for the lists operators ask for most: the newest
-- failed (timed out, interrupted, cancelled, skipped) runs of a queue, a target, a job, or of
-- all. `runs` cannot answer them from an index: the status is not in any (an indexed status
-- would make the terminal update of every run write every index instead of staying HOT), so
-- a list read a queue's runs newest first and filtered the status in the heap, about a
-- hundred rows read per failed run listed.
--
-- `run_failures` holds one small row per such run (its id, queue, target, job and status),
-- written by the tally trigger in the statement that ends the run: an insert per run that
-- fails, nothing per run that succeeds. It is partitioned by day as `runs` is, on the same
-- id ranges: a day's rows are made and dropped with the day's runs, and a run ended while
-- held (its day already dropped) keeps its row in `run_failures_held` until it goes.
-- A list reads its index newest first and joins `runs` by id for the rest.

CREATE TABLE run_failures (
    id     uuid NOT NULL,
    queue  text NOT NULL,
    target text,
    job_id text NOT NULL,
    status text NOT NULL
) PARTITION BY RANGE (id);
CREATE TABLE run_failures_held PARTITION OF run_failures DEFAULT;

-- The statuses a run ends with other than success.
CREATE FUNCTION faro_failed_status(status text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT status IN ('failed', 'interrupted', 'timed_out', 'cancelled', 'skipped')
$$;

-- As in V14, and a statement on `runs` itself (every statement that ends a run other than
-- succeeded, or inserts it ended, as a skipped slot) records the runs it ended so. A
-- statement naming one partition is a batch of successes, or a day made taking its rows back
-- from the held partition (their failures move with them, in faro_make_history_day). A
-- terminal status is final: a run is recorded once (the conflict is a run inserted again by
-- a statement that ended it before, which the history functions never do; kept for safety).
CREATE OR REPLACE FUNCTION faro_tally_runs() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    -- A day's partition holds the runs of that day: no need to read each id.
    table_day date := CASE WHEN TG_TABLE_NAME ~ '^runs_d[0-9]{8}$'
                           THEN to_date(substr(TG_TABLE_NAME, 7), 'YYYYMMDD') END;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO run_tallies (day, queue, status, runs)
        SELECT COALESCE(table_day, faro_run_day(n.id)), n.queue, n.status, count(*)
          FROM tally_new n GROUP BY 1, 2, 3;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO run_tallies (day, queue, status, runs)
        SELECT COALESCE(table_day, faro_run_day(o.id)), o.queue, o.status, -count(*)
          FROM tally_old o GROUP BY 1, 2, 3;
    ELSE
        INSERT INTO run_tallies (day, queue, status, runs)
        SELECT c.day, c.queue, c.status, sum(c.runs)
          FROM (SELECT COALESCE(table_day, faro_run_day(n.id)) AS day, n.queue, n.status,
                       count(*) AS runs
                  FROM tally_new n GROUP BY 1, 2, 3
                UNION ALL
                SELECT COALESCE(table_day, faro_run_day(o.id)), o.queue, o.status, -count(*)
                  FROM tally_old o GROUP BY 1, 2, 3) c
         GROUP BY 1, 2, 3 HAVING sum(c.runs) <> 0;
    END IF;
    IF TG_OP <> 'DELETE' AND TG_TABLE_NAME = 'runs' THEN
        INSERT INTO run_failures (id, queue, target, job_id, status)
        SELECT n.id, n.queue, n.target, n.job_id, n.status
          FROM tally_new n WHERE faro_failed_status(n.status)
            ON CONFLICT (id) DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;

-- As in V14, and the day's failures: made with it, and those of its runs that ended while
-- held move in with them.
CREATE OR REPLACE FUNCTION faro_make_history_day(day date) RETURNS boolean
    LANGUAGE plpgsql AS $$
DECLARE
    runs_day text := 'runs_d' || to_char(day, 'YYYYMMDD');
    attempts_day text := 'run_attempts_d' || to_char(day, 'YYYYMMDD');
    failures_day text := 'run_failures_d' || to_char(day, 'YYYYMMDD');
    lo uuid := faro_uuid_at(day::timestamp AT TIME ZONE 'UTC');
    hi uuid := faro_uuid_at((day + 1)::timestamp AT TIME ZONE 'UTC');
BEGIN
    PERFORM faro_history_lock();
    IF to_regclass(runs_day) IS NOT NULL THEN
        -- A day made by a leader of the version before, during this migration: its failures
        -- are held until their partition is made here.
        IF to_regclass(failures_day) IS NULL THEN
            EXECUTE format('CREATE TABLE %I (LIKE run_failures INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                           failures_day);
            LOCK TABLE run_failures_held IN ACCESS EXCLUSIVE MODE;
            EXECUTE format('WITH moved AS (DELETE FROM run_failures_held
                                            WHERE id >= $1 AND id < $2 RETURNING *)
                            INSERT INTO %I SELECT * FROM moved', failures_day) USING lo, hi;
            EXECUTE format('ALTER TABLE run_failures ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                           failures_day, lo, hi);
        END IF;
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE runs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
                    WITH (fillfactor = 50)', runs_day);
    EXECUTE format('CREATE TABLE %I (LIKE run_attempts INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                   attempts_day);
    EXECUTE format('CREATE TABLE %I (LIKE run_failures INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                   failures_day);
    PERFORM faro_tally_triggers(runs_day::regclass);
    -- Nothing may reach the held partitions between the move and the attach.
    LOCK TABLE runs_held, run_attempts_held, run_failures_held IN ACCESS EXCLUSIVE MODE;
    EXECUTE format('WITH moved AS (DELETE FROM runs_held WHERE id >= $1 AND id < $2 RETURNING *)
                    INSERT INTO %I SELECT * FROM moved', runs_day) USING lo, hi;
    EXECUTE format('WITH moved AS (DELETE FROM run_attempts_held
                                    WHERE run_id >= $1 AND run_id < $2 RETURNING *)
                    INSERT INTO %I SELECT * FROM moved', attempts_day) USING lo, hi;
    EXECUTE format('WITH moved AS (DELETE FROM run_failures_held
                                    WHERE id >= $1 AND id < $2 RETURNING *)
                    INSERT INTO %I SELECT * FROM moved', failures_day) USING lo, hi;
    EXECUTE format('ALTER TABLE runs ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   runs_day, lo, hi);
    EXECUTE format('ALTER TABLE run_attempts ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   attempts_day, lo, hi);
    EXECUTE format('ALTER TABLE run_failures ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   failures_day, lo, hi);
    RETURN true;
END
$$;

-- As in V14, and the day's failures go with it (the runs it keeps are open: none failed),
-- held ones too (a day without its failures' partition, made by the version before).
CREATE OR REPLACE FUNCTION faro_drop_history_day(day date, open uuid[]) RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    runs_day text := 'runs_d' || to_char(day, 'YYYYMMDD');
    attempts_day text := 'run_attempts_d' || to_char(day, 'YYYYMMDD');
    failures_day text := 'run_failures_d' || to_char(day, 'YYYYMMDD');
    lo uuid := faro_uuid_at(day::timestamp AT TIME ZONE 'UTC');
    hi uuid := faro_uuid_at((day + 1)::timestamp AT TIME ZONE 'UTC');
    held integer := 0;
BEGIN
    PERFORM faro_history_lock();
    IF to_regclass(runs_day) IS NOT NULL THEN
        EXECUTE format('ALTER TABLE runs DETACH PARTITION %I', runs_day);
        DELETE FROM run_tallies t WHERE t.day = faro_drop_history_day.day;
        EXECUTE format('INSERT INTO runs SELECT * FROM %I
                         WHERE id = ANY($1) AND status IN (''pending'', ''dispatched'')', runs_day)
            USING open;
        GET DIAGNOSTICS held = ROW_COUNT;
    END IF;
    IF to_regclass(attempts_day) IS NOT NULL THEN
        EXECUTE format('ALTER TABLE run_attempts DETACH PARTITION %I', attempts_day);
        EXECUTE format('INSERT INTO run_attempts SELECT a.* FROM %I a
                         WHERE a.run_id = ANY($1)
                           AND EXISTS (SELECT 1 FROM runs_held h WHERE h.id = a.run_id)',
                       attempts_day)
            USING open;
        EXECUTE format('DROP TABLE %I', attempts_day);
    END IF;
    IF to_regclass(failures_day) IS NOT NULL THEN
        EXECUTE format('ALTER TABLE run_failures DETACH PARTITION %I', failures_day);
        EXECUTE format('DROP TABLE %I', failures_day);
    ELSIF to_regclass(runs_day) IS NOT NULL THEN
        DELETE FROM run_failures_held f WHERE f.id >= lo AND f.id < hi;
    END IF;
    IF to_regclass(runs_day) IS NOT NULL THEN
        EXECUTE format('DROP TABLE %I', runs_day);
    END IF;
    RETURN held;
END
$$;

-- The failures of the history as it is: a partition for every day held, filled from the
-- runs under a lock that keeps runs from being written meanwhile (a run ended by a leader of
-- the version before, with the trigger before, would be missed). The history lock first, as
-- a leader making or dropping a day takes it before the runs' locks.
SELECT faro_history_lock();
LOCK TABLE runs IN SHARE MODE;
DO $$
DECLARE
    part text;
    day date;
BEGIN
    FOR part IN SELECT inhrelid::regclass::text FROM pg_inherits
                 WHERE inhparent = 'runs'::regclass AND inhrelid::regclass::text ~ '^runs_d[0-9]{8}$'
    LOOP
        day := to_date(substr(part, 7), 'YYYYMMDD');
        EXECUTE format('CREATE TABLE %I (LIKE run_failures INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                       'run_failures_d' || to_char(day, 'YYYYMMDD'));
        EXECUTE format('ALTER TABLE run_failures ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       'run_failures_d' || to_char(day, 'YYYYMMDD'),
                       faro_uuid_at(day::timestamp AT TIME ZONE 'UTC'),
                       faro_uuid_at((day + 1)::timestamp AT TIME ZONE 'UTC'));
    END LOOP;
END
$$;
INSERT INTO run_failures (id, queue, target, job_id, status)
SELECT id, queue, target, job_id, status FROM runs WHERE faro_failed_status(status);

ALTER TABLE run_failures ADD PRIMARY KEY (id);
-- Keyset pages newest first: of a queue, a target, a job, or of all, in one status.
CREATE INDEX run_failures_by_queue ON run_failures (queue, status, id);
CREATE INDEX run_failures_by_target ON run_failures (target, status, id);
CREATE INDEX run_failures_by_job ON run_failures (job_id, status, id);
CREATE INDEX run_failures_by_status ON run_failures (status, id);
