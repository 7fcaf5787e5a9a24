-- No run outlives its process (issue 22).
--
-- A process working on a run (planning it, or the CLI's apply) holds a session-level advisory
-- lock keyed on the run's id. PostgreSQL drops that lock when the session ends, however it
-- ends (SIGKILL, a lost connection, the server restarting), so a run still `planning` or
-- `applying` whose lock nobody holds has a dead owner: it is marked `abandoned` with its
-- reason, and later syncs of its commit go ahead instead of waiting for it.

ALTER TABLE sync_runs DROP CONSTRAINT sync_runs_status_check;
ALTER TABLE sync_runs ADD CONSTRAINT sync_runs_status_check CHECK (status IN
    ('planning', 'planned', 'pending_approval', 'applying', 'succeeded', 'failed',
     'superseded', 'abandoned'));

-- The run's lock key: the last 64 bits of its id (a UUIDv7's random part). The store
-- computes the same key (`store::owners::lock_key`).
CREATE FUNCTION ritmo_run_lock_key(run uuid) RETURNS bigint
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT ('x' || translate(right(run::text, 17), '-', ''))::bit(64)::bigint $$;

-- Whether a live session of this database holds the run's lock. pg_locks splits a bigint key
-- into `classid` (high 32 bits) and `objid` (low 32 bits), with `objsubid` 1. Volatile: the
-- answer changes while a statement runs, and must be read again on every row.
CREATE FUNCTION ritmo_run_has_owner(run uuid) RETURNS boolean
    LANGUAGE sql VOLATILE STRICT
AS $$
    SELECT EXISTS (
        SELECT 1 FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.classid::bigint = (ritmo_run_lock_key(run) >> 32) & 4294967295
          AND l.objid::bigint = ritmo_run_lock_key(run) & 4294967295)
$$;
