-- Recurring jobs: each fired slot is a run with its slot time; a slot fires at most once,
-- however many dispatchers try (the unique index decides). A job's last fired slot is read
-- back from this index at start.

ALTER TABLE runs ADD COLUMN slot_at timestamptz;
CREATE UNIQUE INDEX runs_one_per_slot ON runs (job_id, slot_at) WHERE slot_at IS NOT NULL;
