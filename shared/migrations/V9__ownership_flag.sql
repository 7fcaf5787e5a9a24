-- Which rows an inventory owns, on the row itself (issue 26).
--
-- The W104 warning (rows labelled `managed-by: gitops` that no inventory owns) looked through
-- every row and every inventory entry on every plan: 10 ms at 10,000 resources, 150 ms at
-- 100,000, most of a no-op sync. With the answer kept on the row, a partial index holds just
-- the unowned labelled rows, and the warning reads that.
--
-- The applier writes `owned` with the rows it creates. Any other change of the inventory (an
-- adoption, or an entry deleted by hand) sets it through the trigger below; the applier's own
-- inventory writes, made with `ritmo.sync_id` set, skip the trigger as they skip the drift one.
-- The warning still checks the inventory itself: the flag only narrows where it looks.

ALTER TABLE resources ADD COLUMN owned boolean NOT NULL DEFAULT false;

UPDATE resources r SET owned = true
WHERE EXISTS (SELECT 1 FROM inventory i WHERE i.kind = r.kind AND i.name = r.name);

CREATE INDEX resources_unowned_managed ON resources (kind, name)
    WHERE NOT owned AND labels->>'managed-by' = 'gitops';

CREATE FUNCTION ritmo_inventory_ownership() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE resources SET owned = false
        WHERE kind = OLD.kind AND name = OLD.name AND owned;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        UPDATE resources SET owned = true
        WHERE kind = NEW.kind AND name = NEW.name AND NOT owned;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER inventory_ownership
    AFTER INSERT OR UPDATE OF kind, name OR DELETE ON inventory
    FOR EACH ROW
    WHEN (coalesce(current_setting('ritmo.sync_id', true), '') = '')
    EXECUTE FUNCTION ritmo_inventory_ownership();
