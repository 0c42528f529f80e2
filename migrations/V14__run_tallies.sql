-- Run counts without counting: `faro status` (runs by status, open runs by queue) read the
-- whole history twice. Every statement that writes runs now adds what it changed to
-- `run_tallies`, by the day the runs were made, their queue and status, in the same
-- transaction: a statement-level trigger reads the statement's transition tables (one insert
-- of a few rows per statement, whatever its number of runs; the runs' own writes, and their
-- HOT terminal update, are unchanged). The sums of the tallies are the counts of the rows.
--
-- The leader folds each group's rows into one (faro_compact_run_tallies, every few seconds);
-- a day's tallies go with its partitions (faro_drop_history_day), and the runs it keeps open
-- are tallied again as they move to the held partition.
--
-- A statement names either the partitioned table (its trigger sees the rows of every
-- partition) or one day's partition directly (a batch of successes of one day): the trigger
-- is on both, and only the named table's fires.

CREATE TABLE run_tallies (
    -- The UTC day the runs were made ('-infinity': an id that is not a UUIDv7).
    day    date NOT NULL,
    queue  text NOT NULL,
    status text NOT NULL,
    runs   bigint NOT NULL
);

-- The UTC day a run was made, from its id ('-infinity' for an id that is not a UUIDv7). Written
-- out rather than through faro_uuid_time so that it is inlined: called once per row written,
-- the nested call cost 40 us a row, this 1.6 us.
CREATE FUNCTION faro_run_day(id uuid) RETURNS date
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN substr(id::text, 15, 1) = '7'
                THEN date '1970-01-01'
                     + (('x' || substr(id::text, 1, 8) || substr(id::text, 10, 4))::bit(48)::bigint
                        / 86400000)::integer
                ELSE '-infinity'::date END
$$;

CREATE FUNCTION faro_tally_runs() RETURNS trigger
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
    RETURN NULL;
END
$$;

-- Puts the three tally triggers on one table of runs (a trigger with transition tables has
-- one event).
CREATE FUNCTION faro_tally_triggers(target regclass) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE TRIGGER runs_tally_insert AFTER INSERT ON %s
                    REFERENCING NEW TABLE AS tally_new
                    FOR EACH STATEMENT EXECUTE FUNCTION faro_tally_runs()', target);
    EXECUTE format('CREATE TRIGGER runs_tally_update AFTER UPDATE ON %s
                    REFERENCING OLD TABLE AS tally_old NEW TABLE AS tally_new
                    FOR EACH STATEMENT EXECUTE FUNCTION faro_tally_runs()', target);
    EXECUTE format('CREATE TRIGGER runs_tally_delete AFTER DELETE ON %s
                    REFERENCING OLD TABLE AS tally_old
                    FOR EACH STATEMENT EXECUTE FUNCTION faro_tally_runs()', target);
END
$$;

-- Folds the tallies of each (day, queue, status) written as several rows into one. Rows
-- written meanwhile are not in this statement's snapshot and stay as they are. It takes the
-- history lock: a day dropped at the same time must not delete that day's rows between the
-- fold's delete and its insert (the drop would miss the folded row, counting the day forever).
CREATE FUNCTION faro_compact_run_tallies() RETURNS bigint
    LANGUAGE sql AS $$
    SELECT faro_history_lock();
    WITH many AS (
        SELECT day, queue, status FROM run_tallies GROUP BY 1, 2, 3 HAVING count(*) > 1
    ), gone AS (
        DELETE FROM run_tallies t USING many m
         WHERE t.day = m.day AND t.queue = m.queue AND t.status = m.status
     RETURNING t.day, t.queue, t.status, t.runs
    ), folded AS (
        INSERT INTO run_tallies (day, queue, status, runs)
        SELECT day, queue, status, sum(runs) FROM gone GROUP BY 1, 2, 3 HAVING sum(runs) <> 0
     RETURNING 1
    )
    SELECT count(*) FROM gone
$$;

-- As in V13, and the new day's runs are tallied from the start (the rows moved in from the
-- held partition leave its tallies and join the day's). Pages are half filled: a run is
-- inserted with others and ended later, and its terminal update is HOT only when the new
-- version fits on its page. At 80 % a batch's pages had room for a quarter of its updates
-- (e2e: 56 % of terminal updates HOT, each other one writing every index); at 50 % nearly
-- all fit, and the dead versions they leave are pruned, so the table is no larger.
CREATE OR REPLACE FUNCTION faro_make_history_day(day date) RETURNS boolean
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
                    WITH (fillfactor = 50)', runs_day);
    EXECUTE format('CREATE TABLE %I (LIKE run_attempts INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                   attempts_day);
    PERFORM faro_tally_triggers(runs_day::regclass);
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

-- As in V13, and the day's tallies go with it: the runs it keeps open are tallied again as
-- they are written to the held partition.
CREATE OR REPLACE FUNCTION faro_drop_history_day(day date, open uuid[]) RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    runs_day text := 'runs_d' || to_char(day, 'YYYYMMDD');
    attempts_day text := 'run_attempts_d' || to_char(day, 'YYYYMMDD');
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
    IF to_regclass(runs_day) IS NOT NULL THEN
        EXECUTE format('DROP TABLE %I', runs_day);
    END IF;
    RETURN held;
END
$$;

-- The tallies of the history as it is, and the triggers that keep them from now on (taken
-- under the triggers' locks: no run is written between the two).
DO $$
DECLARE
    part regclass;
BEGIN
    -- A leader of the version before making a day meanwhile would attach it untallied.
    PERFORM faro_history_lock();
    PERFORM faro_tally_triggers('runs'::regclass);
    FOR part IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'runs'::regclass
    LOOP
        PERFORM faro_tally_triggers(part);
        -- New pages of the days already made are half filled too (see faro_make_history_day).
        EXECUTE format('ALTER TABLE %s SET (fillfactor = 50)', part);
    END LOOP;
END
$$;
INSERT INTO run_tallies (day, queue, status, runs)
SELECT faro_run_day(id), queue, status, count(*) FROM runs GROUP BY 1, 2, 3;

-- Keyset pages of the runs of a queue and of a target, newest first (the id is the time
-- made). Neither column changes after the insert: the terminal update stays HOT.
CREATE INDEX runs_by_queue ON runs (queue, id);
CREATE INDEX runs_by_target ON runs (target, id);
