-- Ferry outbox, SQLite, sixth migration: ordered delivery (ordering keys, blocked groups,
-- release), pause and resume, and per-target rate limits. See
-- migrations/postgres/0006_order_and_flow.sql; the same schema in SQLite's dialect.
ALTER TABLE ferry_outbox ADD COLUMN ordering_key TEXT
    CHECK (ordering_key IS NULL OR (typeof(ordering_key) = 'text'
                                    AND length(ordering_key) BETWEEN 1 AND 500));
ALTER TABLE ferry_outbox ADD COLUMN released_at TEXT;
ALTER TABLE ferry_outbox ADD COLUMN released_by TEXT;
ALTER TABLE ferry_outbox ADD COLUMN release_reason TEXT;

CREATE INDEX ferry_outbox_order ON ferry_outbox (ordering_key, id)
    WHERE ordering_key IS NOT NULL AND state <> 'done';

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

CREATE TABLE ferry_paused (
    kind       TEXT NOT NULL CHECK (kind IN ('workflow', 'target')),
    name       TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    paused_by  TEXT,
    reason     TEXT,
    paused_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (kind, name)
);

-- tat as julian-day seconds (REAL): the GCRA arithmetic stays in one number.
CREATE TABLE ferry_rate (
    target  TEXT PRIMARY KEY,
    tat     REAL NOT NULL
);
