-- The outcome feed's outbox for the ends a leader decides itself: a timeout, a cancel, a
-- chained run skipped, a recurring slot skipped or missed. A run a worker ended is put on the
-- feed before the worker's result is acknowledged, so a leader that dies in between has the
-- result delivered again and publishes then; these have no message to be delivered again.
-- Each such run gets a row here in the transaction that ends it; the row goes once its
-- outcome is on the feed. The leader publishes what is left (a leader killed between the two,
-- NATS not storing in time) every few seconds. Small: a row lives seconds.
CREATE TABLE outcome_outbox (
    run_id  uuid PRIMARY KEY,
    made_at timestamptz NOT NULL DEFAULT now()
);
