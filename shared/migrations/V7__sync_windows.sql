-- Sync windows (issue 24).
--
-- A plan made by an automatic trigger while the target's sync windows are closed is recorded
-- as `waiting_for_window`; the poller's tick moves it to `planned` (and queues its apply) once
-- a window opens. Who applied a run despite a closed window (`--override-window`) is recorded.

ALTER TABLE sync_runs DROP CONSTRAINT sync_runs_status_check;
ALTER TABLE sync_runs ADD CONSTRAINT sync_runs_status_check CHECK (status IN
    ('planning', 'planned', 'pending_approval', 'applying', 'succeeded', 'failed',
     'superseded', 'abandoned', 'waiting_for_window'));

ALTER TABLE sync_runs ADD COLUMN window_override_by text;

-- The poller asks for the waiting runs of open targets at every tick.
CREATE INDEX sync_runs_waiting_for_window ON sync_runs (target, started_at)
    WHERE status = 'waiting_for_window';
