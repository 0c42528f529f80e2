-- Chains: a job may follow a parent job; its runs say which parent run triggered them.

ALTER TABLE jobs
    ADD COLUMN after_job text,
    ADD COLUMN run_if    text NOT NULL DEFAULT 'success' CHECK (run_if IN ('success', 'always'));
CREATE INDEX jobs_by_parent ON jobs (after_job) WHERE after_job IS NOT NULL;

ALTER TABLE runs ADD COLUMN parent_run_id uuid;
