-- The previous orchestrator's batch files run as they are (`{"metadata": {...}, "tasks":
-- [...]}`): what a batch says of itself is kept with its submission, and each task's
-- description with its job, for people to read back.
ALTER TABLE submissions ADD COLUMN batch jsonb;
ALTER TABLE jobs ADD COLUMN description text;
