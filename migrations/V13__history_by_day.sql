-- Run history partitioned by day, so a retention period drops whole days instead of deleting
-- rows. A run id is a UUIDv7: its first 48 bits are the milliseconds it was made, so `runs`
-- (and `run_attempts`, by run_id) are range-partitioned on the id itself. Every lookup by id
-- goes to one partition and the primary key stays the id alone.
--
-- runs_dYYYYMMDD    the runs made that day (UTC), and their attempts in run_attempts_dYYYYMMDD
-- runs_held         the default partition: runs still open when their day was dropped (kept
--                   until they end and are past retention), and any id outside the days
--                   made (a day whose partition is made later takes its rows back)
--
-- The leader makes the days ahead and drops the days past `runs.retention`
-- (faro_make_history_day, faro_drop_history_day). One run per recurring slot, enforced
-- before by a unique (job_id, slot_at) index that a partitioned table cannot have, now
-- follows from the ids: a slot's run id is derived from its job and slot time.

-- The lowest UUIDv7 of a millisecond: ids made at or after `at` sort at or after it.
CREATE FUNCTION faro_uuid_at(at timestamptz) RETURNS uuid
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT (lpad(to_hex(floor(extract(epoch FROM at) * 1000)::bigint), 12, '0')
            || '00000000000000000000')::uuid
$$;

-- The milliseconds a UUIDv7 was made at, as a time (NULL for an id of another version).
CREATE FUNCTION faro_uuid_time(id uuid) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN substr(id::text, 15, 1) = '7'
                THEN to_timestamp(('x' || lpad(substr(replace(id::text, '-', ''), 1, 12), 16, '0'))
                                  ::bit(64)::bigint / 1000.0)
           END
$$;

-- Serializes the leader's history work with itself and with a migration.
CREATE FUNCTION faro_history_lock() RETURNS void LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(hashtext('faro history partitions'))
$$;

-- Makes the partitions of one day (runs and run_attempts) unless they exist. Rows of that
-- day already in the held partition (made while the day had none) move into it. The new
-- tables are attached, never created as partitions directly: attaching does not block the
-- runs being written meanwhile. Returns whether it made them.
CREATE FUNCTION faro_make_history_day(day date) RETURNS boolean
    LANGUAGE plpgsql AS $$
DECLARE
    runs_day text := 'runs_d' || to_char(day, 'YYYYMMDD');
    attempts_day text := 'run_attempts_d' || to_char(day, 'YYYYMMDD');
    lo uuid := faro_uuid_at(day::timestamp AT TIME ZONE 'UTC');
    hi uuid := faro_uuid_at((day + 1)::timestamp AT TIME ZONE 'UTC');
BEGIN
    PERFORM faro_history_lock();
    IF to_regclass(runs_day) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE runs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
                    WITH (fillfactor = 80)', runs_day);
    EXECUTE format('CREATE TABLE %I (LIKE run_attempts INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                   attempts_day);
    -- Nothing may reach the held partitions between the move and the attach.
    LOCK TABLE runs_held, run_attempts_held IN ACCESS EXCLUSIVE MODE;
    EXECUTE format('WITH moved AS (DELETE FROM runs_held WHERE id >= $1 AND id < $2 RETURNING *)
                    INSERT INTO %I SELECT * FROM moved', runs_day) USING lo, hi;
    EXECUTE format('WITH moved AS (DELETE FROM run_attempts_held
                                    WHERE run_id >= $1 AND run_id < $2 RETURNING *)
                    INSERT INTO %I SELECT * FROM moved', attempts_day) USING lo, hi;
    EXECUTE format('ALTER TABLE runs ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   runs_day, lo, hi);
    EXECUTE format('ALTER TABLE run_attempts ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   attempts_day, lo, hi);
    RETURN true;
END
$$;

-- Drops one day's partitions. The runs of that day still open (`open`: found by the caller
-- before, without locks; a run that ended never opens again, and no run of a day past
-- retention is made any more) move to the held partition with their attempts first, in the
-- same transaction: none is lost. Returns how many runs it kept.
CREATE FUNCTION faro_drop_history_day(day date, open uuid[]) RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    runs_day text := 'runs_d' || to_char(day, 'YYYYMMDD');
    attempts_day text := 'run_attempts_d' || to_char(day, 'YYYYMMDD');
    held integer := 0;
BEGIN
    PERFORM faro_history_lock();
    IF to_regclass(runs_day) IS NOT NULL THEN
        EXECUTE format('ALTER TABLE runs DETACH PARTITION %I', runs_day);
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
    IF to_regclass(runs_day) IS NOT NULL THEN
        EXECUTE format('DROP TABLE %I', runs_day);
    END IF;
    RETURN held;
END
$$;

-- The history as it was, moved into the partitioned tables.
ALTER TABLE runs RENAME TO runs_unpartitioned;
ALTER TABLE run_attempts RENAME TO run_attempts_unpartitioned;

CREATE TABLE runs (LIKE runs_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (id);
CREATE TABLE runs_held PARTITION OF runs DEFAULT WITH (fillfactor = 80);
CREATE TABLE run_attempts (LIKE run_attempts_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (run_id);
CREATE TABLE run_attempts_held PARTITION OF run_attempts DEFAULT;

-- A day for every day the history holds, and from yesterday to three days ahead.
DO $$
DECLARE
    day date;
BEGIN
    FOR day IN
        SELECT DISTINCT (faro_uuid_time(id) AT TIME ZONE 'UTC')::date FROM runs_unpartitioned
         WHERE faro_uuid_time(id) BETWEEN '2000-01-01' AND now() + interval '3 days'
        UNION
        SELECT generate_series((now() AT TIME ZONE 'UTC')::date - 1,
                               (now() AT TIME ZONE 'UTC')::date + 3, interval '1 day')::date
    LOOP
        PERFORM faro_make_history_day(day);
    END LOOP;
END
$$;

INSERT INTO runs SELECT * FROM runs_unpartitioned;
INSERT INTO run_attempts SELECT * FROM run_attempts_unpartitioned;
DROP TABLE runs_unpartitioned;
DROP TABLE run_attempts_unpartitioned;

-- Hot path unchanged: one insert and one HOT terminal update per run (no index covers the
-- columns the terminal update sets).
ALTER TABLE runs ADD PRIMARY KEY (id);
-- A job's runs, newest first by id (keyset pages of a job's last runs).
CREATE INDEX runs_by_job ON runs (job_id, id);
CREATE INDEX runs_by_submission ON runs (submission_id);
CREATE INDEX run_attempts_by_run ON run_attempts (run_id, attempt);
