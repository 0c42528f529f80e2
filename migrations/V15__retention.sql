-- Retention for what grows beside the run history: submissions and the one-shot jobs they
-- defined (the leader, FARO_SUBMISSIONS_RETENTION), worker events (the balancer,
-- FARO_BALANCER_WORKER_EVENTS_KEPT, as balancer decisions already are). Each is deleted
-- oldest first, a batch at a time, through these indexes: they are small tables beside
-- `runs` (a row per submission, per one-shot job, per worker joining or leaving).
CREATE INDEX submissions_by_time ON submissions (received_at);
-- One-shot jobs: neither recurring nor chained (those are definitions, kept until removed).
CREATE INDEX jobs_one_shot_by_time ON jobs (updated_at)
    WHERE interval_ms IS NULL AND after_job IS NULL;
CREATE INDEX worker_events_by_time ON worker_events (at);
