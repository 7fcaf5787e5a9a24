-- Cheaper applies (issue 7), no change to what is stored.
--
-- The drift trigger returned at once for the applier's own writes, but PostgreSQL still
-- entered the PL/pgSQL function for every row: a WHEN condition skips the call instead.
DROP TRIGGER resources_drift ON resources;
CREATE TRIGGER resources_drift
    BEFORE INSERT OR UPDATE OR DELETE ON resources
    FOR EACH ROW
    WHEN (coalesce(current_setting('ritmo.sync_id', true), '') = '')
    EXECUTE FUNCTION ritmo_resources_drift();

-- A full sync's plan is megabytes of JSON: lz4 compresses it several times faster than the
-- default pglz. Servers built without lz4 keep pglz.
DO $$
BEGIN
    ALTER TABLE sync_runs ALTER COLUMN plan SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    NULL;
END $$;
