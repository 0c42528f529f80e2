-- A submission refused (malformed, a chain cycle, parents missing, or content PostgreSQL cannot
-- hold) is recorded with why, so `faro submit --wait` and the submission API can say so, and a
-- redelivery of it is a duplicate instead of a second refusal.
ALTER TABLE submissions ADD COLUMN rejected text;
