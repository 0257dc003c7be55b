-- Ferry outbox, PostgreSQL, sixth migration: ordered delivery (ordering keys, blocked groups,
-- release), pause and resume, and per-target rate limits.
--
-- Ordering: rows with the same ordering_key (across workflows) are delivered one at a time, in
-- id order. A row is not claimed while an earlier row of its group is not done, unless that
-- earlier row is dead and was released by an operator (ferry release). Plain SQL:
--
--   INSERT INTO ferry_outbox (workflow, key, ordering_key, payload)
--   VALUES ('partner_phieu_nhap', 'PN-0001', 'warehouse-7', '{...}')
--   ON CONFLICT (workflow, key) DO NOTHING;
--
-- Adding nullable columns without defaults rewrites nothing. The CHECK is NOT VALID: every
-- existing row has a NULL ordering_key and satisfies it; validating would only scan the table
-- under this migration's lock.
ALTER TABLE ferry_outbox
    ADD COLUMN ordering_key   TEXT,
    ADD COLUMN released_at    TIMESTAMPTZ,
    ADD COLUMN released_by    TEXT,
    ADD COLUMN release_reason TEXT;

ALTER TABLE ferry_outbox
    ADD CONSTRAINT ferry_outbox_ordering_key_check
        CHECK (ordering_key IS NULL OR length(ordering_key) BETWEEN 1 AND 500) NOT VALID;

COMMENT ON COLUMN ferry_outbox.ordering_key IS
    'Rows with the same ordering key are delivered one at a time, in id order; NULL: unordered.';
COMMENT ON COLUMN ferry_outbox.released_at IS
    'A dead row released by an operator no longer holds back the later rows of its group.';

-- The claim's "earlier unfinished row of the group" probe: one index lookup per ordered
-- candidate. Done rows leave the index, so its size is the live ordered backlog. Its predicate
-- is not implied by the claim's state filter (it needs ordering_key IS NOT NULL), so the
-- planner never takes it for the claim's ordered scan of ferry_outbox_due (see 0001).
CREATE INDEX ferry_outbox_order ON ferry_outbox (ordering_key, id)
    WHERE ordering_key IS NOT NULL AND state <> 'done';

-- Groups held by a dead row: the group's earliest unfinished row is dead and not released.
CREATE VIEW ferry_blocked AS
SELECT
    o.ordering_key,
    o.id            AS blocking_id,
    o.workflow,
    o.key,
    o.last_error    AS reason,
    o.updated_at    AS dead_at,
    (SELECT count(*) FROM ferry_outbox w
      WHERE w.ordering_key = o.ordering_key AND w.id > o.id AND w.state <> 'done') AS waiting
FROM ferry_outbox o
WHERE o.state = 'dead' AND o.ordering_key IS NOT NULL AND o.released_at IS NULL
  AND NOT EXISTS (
      SELECT 1 FROM ferry_outbox e
       WHERE e.ordering_key = o.ordering_key AND e.id < o.id AND e.state <> 'done'
         AND (e.state <> 'dead' OR e.released_at IS NULL));

-- Pause and resume: a paused workflow, or every workflow of a paused target, is left alone by
-- every relay (each refreshes this set at least every 500 ms).
CREATE TABLE ferry_paused (
    kind       TEXT        NOT NULL CHECK (kind IN ('workflow', 'target')),
    name       TEXT        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    paused_by  TEXT,
    reason     TEXT,
    paused_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, name)
);

-- Rate limits per target, shared by every relay: a GCRA whose theoretical arrival time (tat)
-- lives here and is moved on the database's clock, one UPDATE ... RETURNING per request.
CREATE TABLE ferry_rate (
    target  TEXT        PRIMARY KEY,
    tat     TIMESTAMPTZ NOT NULL
);
