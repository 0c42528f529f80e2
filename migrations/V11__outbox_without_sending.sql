-- `sending_at` (V10) marked each run as its leader began to publish it: an update per run, 13 %
-- of end-to-end throughput. A new leader now reads which attempts its queues hold instead
-- (the jobs stream, headers only) and counts the outbox rows among them in flight.
ALTER TABLE run_outbox DROP COLUMN sending_at;
