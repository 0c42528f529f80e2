-- Deadlines: how long one attempt may take (NULL: the dispatcher's FARO_RUN_TIMEOUT).

ALTER TABLE jobs ADD COLUMN timeout_ms bigint CHECK (timeout_ms IS NULL OR timeout_ms > 0);
ALTER TABLE runs ADD COLUMN timeout_ms bigint CHECK (timeout_ms IS NULL OR timeout_ms > 0);

-- The outbox row names the attempt it publishes, so clearing a published attempt never
-- removes the row of the retry that replaced it.
ALTER TABLE run_outbox ADD COLUMN attempt integer NOT NULL DEFAULT 1;
