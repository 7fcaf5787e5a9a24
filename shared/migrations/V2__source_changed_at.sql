-- When a target's repository, branch or path last changed. An incremental plan trusts the
-- stored source paths only when nothing moved since the last apply; a pin or a suspension
-- (which bump `updated_at`) moves nothing, so a rollback can still be planned incrementally.
ALTER TABLE targets ADD COLUMN source_changed_at timestamptz;
UPDATE targets SET source_changed_at = updated_at;
ALTER TABLE targets
    ALTER COLUMN source_changed_at SET DEFAULT now(),
    ALTER COLUMN source_changed_at SET NOT NULL;
