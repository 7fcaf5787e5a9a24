-- Ritmo GitOps schema, version 1.
--
-- Ownership is the `inventory` table, never labels. Every write of the applier runs in one
-- transaction with the transaction-local setting `ritmo.sync_id`; a change to `resources`
-- without it is out-of-band and recorded as drift by the trigger at the bottom.

CREATE TABLE targets (
    name                text        PRIMARY KEY,
    repo_url            text        NOT NULL,
    branch              text        NOT NULL,
    path                text        NOT NULL DEFAULT '',
    -- Advances by one on every applied plan; a plan computed against another value is stale.
    generation          bigint      NOT NULL DEFAULT 0,
    last_applied_commit text,
    last_sync_id        uuid,
    -- Rollback pin: while set, automatic syncs keep the target at this commit.
    pinned_commit       text,
    suspended           boolean     NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE resources (
    kind         text        NOT NULL CHECK (kind IN
                     ('Credential', 'Plugin', 'WorkerPool', 'Job', 'Webhook', 'Environment')),
    name         text        NOT NULL,
    -- What Git holds: credentials carry ciphertexts or references, never plaintext.
    spec         jsonb       NOT NULL,
    spec_hash    text        NOT NULL,
    hash_version smallint    NOT NULL,
    labels       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    source_path  text,
    git_commit   text,
    -- The target that last wrote the row (informational; ownership is `inventory`).
    target       text,
    drifted_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, name)
);

-- No foreign key to `targets`: only the applier writes here, holding the target's row lock,
-- and a per-row key check would cost a third of a 10,000-row apply.
CREATE TABLE inventory (
    target     text        NOT NULL,
    kind       text        NOT NULL,
    name       text        NOT NULL,
    spec_hash  text        NOT NULL,
    git_commit text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target, kind, name)
);
-- A resource has at most one owner: a second target claiming it fails instead of taking over.
CREATE UNIQUE INDEX inventory_one_owner ON inventory (kind, name);

CREATE TABLE sync_runs (
    id              uuid        PRIMARY KEY,
    target          text        NOT NULL REFERENCES targets (name),
    trigger         text        NOT NULL CHECK (trigger IN
                        ('webhook', 'schedule', 'manual', 'drift', 'rollback', 'cli')),
    actor           text,
    status          text        NOT NULL CHECK (status IN
                        ('planning', 'planned', 'pending_approval', 'applying', 'succeeded',
                         'failed', 'superseded')),
    revision        text,
    git_commit      text,
    base_commit     text,
    base_generation bigint,
    -- The serialized plan, desired specs included, so another process can apply it.
    plan            jsonb,
    approval_reason text,
    approved_by     text,
    approved_at     timestamptz,
    create_count    bigint      NOT NULL DEFAULT 0,
    update_count    bigint      NOT NULL DEFAULT 0,
    delete_count    bigint      NOT NULL DEFAULT 0,
    unchanged_count bigint      NOT NULL DEFAULT 0,
    diagnostics     jsonb       NOT NULL DEFAULT '[]'::jsonb,
    error           text,
    dry_run         boolean     NOT NULL DEFAULT false,
    started_at      timestamptz NOT NULL DEFAULT now(),
    planned_at      timestamptz,
    finished_at     timestamptz,
    plan_ms         bigint,
    apply_ms        bigint
);
CREATE INDEX sync_runs_by_target ON sync_runs (target, started_at DESC);
CREATE INDEX sync_runs_by_start ON sync_runs (started_at DESC);

-- The audit trail: append-only, no foreign keys (it outlives pruned run history, and the
-- applier writes it for the run whose row it holds locked).
CREATE TABLE revisions (
    id         bigserial   PRIMARY KEY,
    sync_id    uuid        NOT NULL,
    target     text        NOT NULL,
    kind       text        NOT NULL,
    name       text        NOT NULL,
    action     text        NOT NULL CHECK (action IN ('created', 'updated', 'deleted')),
    old_hash   text,
    new_hash   text,
    git_commit text,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX revisions_by_resource ON revisions (target, kind, name);
CREATE INDEX revisions_by_sync ON revisions (sync_id);

CREATE TABLE drift_events (
    id               bigserial   PRIMARY KEY,
    target           text,
    kind             text        NOT NULL,
    name             text        NOT NULL,
    operation        text        NOT NULL CHECK (operation IN ('UPDATE', 'DELETE', 'INSERT')),
    detected_at      timestamptz NOT NULL DEFAULT now(),
    resolved_sync_id uuid
);
CREATE INDEX drift_events_open ON drift_events (target, kind, name) WHERE resolved_sync_id IS NULL;

CREATE TABLE webhook_deliveries (
    delivery_id text        PRIMARY KEY,
    target      text,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- Out-of-band changes: any write to `resources` outside a sync (no `ritmo.sync_id` in the
-- transaction) marks the row drifted and records an event for the owning target.
CREATE FUNCTION ritmo_resources_drift() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    sync_id text := current_setting('ritmo.sync_id', true);
    row_kind text;
    row_name text;
    owner text;
BEGIN
    IF sync_id IS NOT NULL AND sync_id <> '' THEN
        IF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;
    END IF;

    IF TG_OP = 'UPDATE' THEN
        -- Touching only bookkeeping columns (or nothing) is not drift.
        IF (NEW.kind, NEW.name, NEW.spec, NEW.spec_hash, NEW.hash_version, NEW.labels)
           IS NOT DISTINCT FROM
           (OLD.kind, OLD.name, OLD.spec, OLD.spec_hash, OLD.hash_version, OLD.labels) THEN
            RETURN NEW;
        END IF;
        NEW.drifted_at := now();
        row_kind := OLD.kind;
        row_name := OLD.name;
    ELSIF TG_OP = 'INSERT' THEN
        NEW.drifted_at := now();
        row_kind := NEW.kind;
        row_name := NEW.name;
    ELSE
        row_kind := OLD.kind;
        row_name := OLD.name;
    END IF;

    SELECT i.target INTO owner FROM inventory i WHERE i.kind = row_kind AND i.name = row_name;
    INSERT INTO drift_events (target, kind, name, operation)
    VALUES (owner, row_kind, row_name, TG_OP);

    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER resources_drift
    BEFORE INSERT OR UPDATE OR DELETE ON resources
    FOR EACH ROW EXECUTE FUNCTION ritmo_resources_drift();
