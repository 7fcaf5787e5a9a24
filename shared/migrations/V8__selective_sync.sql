-- Selective sync and manual syncs under sync windows (issue 24).
--
-- A run narrowed with `--only` records what it was asked for and the changes it left out; the
-- target points at its latest such run until a whole plan is applied again, so `status` can
-- say the target is partially synced. A partial apply never moves `last_applied_commit`:
-- the next plan still diffs from the last commit applied whole and sees the changes left out.

ALTER TABLE sync_runs
    ADD COLUMN selected text[],
    ADD COLUMN pending  text[];

ALTER TABLE targets
    ADD COLUMN partial_sync_id uuid REFERENCES sync_runs (id) ON DELETE SET NULL;
