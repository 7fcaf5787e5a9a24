-- Operator controls (issue 24).
--
-- Who suspended a target and when, so `status` can say it; when the poller last asked the
-- remote where the branch is, so a target is due one interval after that check rather than
-- after its last run (a manual sync no longer pushes the next check out); and which targets a
-- webhook delivery left alone because they were suspended.

ALTER TABLE targets
    ADD COLUMN suspended_by       text,
    ADD COLUMN suspended_at       timestamptz,
    ADD COLUMN last_head_check_at timestamptz;

ALTER TABLE webhook_deliveries
    ADD COLUMN skipped_targets text[] NOT NULL DEFAULT '{}';
