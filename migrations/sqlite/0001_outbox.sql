-- Ferry outbox, SQLite (the embedded default). Same contract as the PostgreSQL schema; see
-- migrations/postgres/0001_outbox.sql for the state machine. Differences:
--   * timestamps are UTC text 'YYYY-MM-DDTHH:MM:SS.SSSZ' (they sort as they compare), taken from
--     SQLite's clock, which for an embedded database is the host's;
--   * payload is JSON text, checked with json_valid();
--   * idle relays in the writing process are woken in-process; other processes are seen by the
--     relay's poll of PRAGMA data_version.
--
-- Plain SQL works with every other column defaulted:
--   INSERT INTO ferry_outbox (workflow, key, payload) VALUES ('onec_invoice', '42', '{...}')
--   ON CONFLICT (workflow, key) DO NOTHING;

CREATE TABLE ferry_outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow      TEXT    NOT NULL CHECK (length(workflow) BETWEEN 1 AND 200),
    key           TEXT    NOT NULL CHECK (length(key) BETWEEN 1 AND 500),
    payload       TEXT    NOT NULL CHECK (json_valid(payload)),
    state         TEXT    NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'sending', 'retry_wait', 'done', 'dead')),
    attempts      INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    due_at        TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    claim_token   TEXT,
    last_error    TEXT,
    last_status   INTEGER,
    created_at    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    done_at       TEXT,
    CONSTRAINT ferry_outbox_workflow_key UNIQUE (workflow, key)
);

CREATE INDEX ferry_outbox_due ON ferry_outbox (due_at)
    WHERE state IN ('pending', 'retry_wait', 'sending');
CREATE INDEX ferry_outbox_dead ON ferry_outbox (workflow) WHERE state = 'dead';
-- The live branch of ferry_status, grouped by (workflow, state). Without it SQLite serves the
-- GROUP BY from the (workflow, key) index, reading every done row (measured: 17 % of a core
-- for the 2 s gauge refresh after a 1M-row drain). Unlike PostgreSQL, SQLite's claim keeps the
-- ordered ferry_outbox_due scan with this index present (checked by EXPLAIN QUERY PLAN).
CREATE INDEX ferry_outbox_live ON ferry_outbox (workflow, state)
    WHERE state IN ('pending', 'retry_wait', 'sending');
CREATE INDEX ferry_outbox_done_at ON ferry_outbox (done_at) WHERE state = 'done';

CREATE TABLE ferry_attempts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    outbox_id        INTEGER NOT NULL,  -- ferry_outbox.id; no FOREIGN KEY: see below
    attempt          INTEGER NOT NULL,
    started_at       TEXT    NOT NULL,
    duration_ms      REAL    NOT NULL,
    outcome          TEXT    NOT NULL CHECK (outcome IN ('done', 'retry', 'dead')),
    http_status      INTEGER,
    error            TEXT,
    response_excerpt TEXT
);
CREATE INDEX ferry_attempts_outbox ON ferry_attempts (outbox_id, id);
-- Deliberately no foreign key to ferry_outbox and no index on started_at: an attempt row is
-- written for every delivery, and the FK check (a trigger and a lock on the parent row) plus a
-- second index were the largest part of recording an outcome. Ferry writes attempts only for
-- rows it holds, and the prune job deletes a row's attempts with the row.

CREATE TRIGGER ferry_outbox_transition_guard
    BEFORE UPDATE OF state ON ferry_outbox
    FOR EACH ROW
    WHEN OLD.state <> NEW.state
         AND NEW.state IN ('pending', 'sending', 'retry_wait', 'done', 'dead')
         AND (OLD.state || '>' || NEW.state) NOT IN (
        'pending>sending', 'pending>dead',
        'sending>done', 'sending>retry_wait', 'sending>dead', 'sending>pending',
        'retry_wait>sending', 'retry_wait>dead', 'retry_wait>pending',
        'dead>pending')
BEGIN
    SELECT RAISE(ABORT, 'ferry: illegal state transition');
END;

-- Operator reset: fresh attempt budget, due now, any holder's claim revoked.
CREATE TRIGGER ferry_outbox_reset
    AFTER UPDATE OF state ON ferry_outbox
    FOR EACH ROW
    WHEN NEW.state = 'pending' AND OLD.state <> 'pending'
BEGIN
    UPDATE ferry_outbox
       SET attempts = 0,
           due_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
           claim_token = NULL,
           done_at = NULL,
           updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
     WHERE id = NEW.id;
END;

CREATE VIEW ferry_status AS
SELECT
    workflow,
    state,
    count(*)                                   AS rows,
    min(created_at)                            AS oldest_created_at,
    min(CASE WHEN due_at <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now') THEN due_at END) AS oldest_due_at,
    COALESCE((julianday('now') -
        julianday(min(CASE WHEN due_at <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now') THEN due_at END)))
        * 86400.0, 0.0)                        AS oldest_due_age_s
FROM ferry_outbox
WHERE state IN ('pending', 'retry_wait', 'sending')
GROUP BY workflow, state
UNION ALL
SELECT workflow, 'dead', count(*), min(created_at), NULL, 0.0
FROM ferry_outbox
WHERE state = 'dead'
GROUP BY workflow;

CREATE VIEW ferry_dead AS
SELECT
    o.id,
    o.workflow,
    o.key,
    o.attempts,
    o.last_status,
    o.last_error,
    o.created_at,
    o.updated_at AS dead_at,
    (SELECT count(*) FROM ferry_attempts a WHERE a.outbox_id = o.id) AS total_attempts
FROM ferry_outbox o
WHERE o.state = 'dead';

CREATE VIEW ferry_stuck AS
SELECT
    id,
    workflow,
    key,
    attempts,
    due_at                                                  AS lease_until,
    (julianday('now') - julianday(due_at)) * 86400.0        AS lease_expired_s,
    claim_token,
    updated_at                                              AS claimed_at
FROM ferry_outbox
WHERE state = 'sending' AND due_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now');

CREATE TABLE ferry_cron (
    job        TEXT PRIMARY KEY,
    last_tick  TEXT NOT NULL,
    ran_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    ran_by     TEXT
);
