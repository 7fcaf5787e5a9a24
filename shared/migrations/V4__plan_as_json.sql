-- A stored plan is written once and read back whole (by the applier, the API and the CLI);
-- only the ids a plan kept are ever picked out of it in SQL. `jsonb` decodes and re-encodes
-- every value on the way in: for the ~9 MB plan of a 10,000-resource sync that took about
-- three times as long as `json`, which checks the text is JSON and stores it as sent.
ALTER TABLE sync_runs ALTER COLUMN plan TYPE json USING plan::json;

-- Changing the type resets the column's compression to the default (measured on PostgreSQL 15).
DO $$
BEGIN
    ALTER TABLE sync_runs ALTER COLUMN plan SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    NULL;
END $$;
