-- An attempt the leader admitted and began to publish. From `sending_at` it holds its target's
-- slot whether JetStream stored it or not: a leader that dies before clearing the row leaves it
-- to the next one, which counts it in flight (and publishes it again; JetStream drops the copy
-- it already stored) instead of offering it as waiting and letting another run take the slot.
ALTER TABLE run_outbox ADD COLUMN sending_at timestamptz;
