-- Each outbox row names its run's queue, so the demand collector counts the waiting runs of
-- every queue from the outbox alone: joining `runs` for it read the whole history at every
-- collection. NULL only in rows a dispatcher older than this wrote (not counted as waiting).
ALTER TABLE run_outbox ADD COLUMN queue text;
UPDATE run_outbox o SET queue = r.queue FROM runs r WHERE r.id = o.run_id;
