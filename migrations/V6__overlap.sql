-- What a recurring job's slot does while its previous run is still going: 'skip' (recorded
-- as a skipped run) or 'queue_one' (the first such slot runs when the previous run ends).
ALTER TABLE jobs ADD COLUMN overlap text NOT NULL DEFAULT 'skip'
    CHECK (overlap IN ('skip', 'queue_one'));
