-- Ferry outbox, SQLite, migration 0004: what the operator console reads and writes. Same tables
-- and meaning as migrations/postgres/0004_console.sql:
--
--   * ferry_totals: rows that reached `done`, per workflow, all time (rows already done are
--     counted in below); read instead of counting done rows.
--   * ferry_minutes: rows that reached `done` or `dead` per minute and workflow; two days kept.
--   * ferry_actions, ferry_action_rows: the audit of operator actions.
--   * ferry_outbox_created, ferry_outbox_workflow_created: newest-first browsing and time
--     ranges.
--
-- The counters are kept by a row trigger that fires only when a row's state moves into `done`
-- or `dead`; it runs after the change and alters nothing about how outcomes are recorded. One
-- writer at a time (SQLite), so a single slot (0) per counter is enough.

CREATE TABLE ferry_totals (
    workflow  TEXT    NOT NULL,
    slot      INTEGER NOT NULL,
    done      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (workflow, slot)
);

CREATE TABLE ferry_minutes (
    minute    TEXT    NOT NULL,   -- 'YYYY-MM-DDTHH:MM:00.000Z'
    workflow  TEXT    NOT NULL,
    slot      INTEGER NOT NULL,
    done      INTEGER NOT NULL DEFAULT 0,
    dead      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, workflow, slot)
);

CREATE TRIGGER ferry_outbox_count_settled
    AFTER UPDATE OF state ON ferry_outbox
    FOR EACH ROW
    WHEN NEW.state IN ('done', 'dead') AND OLD.state <> NEW.state
BEGIN
    -- Two days of minutes are kept; the first change of each minute drops older ones.
    DELETE FROM ferry_minutes
     WHERE minute < strftime('%Y-%m-%dT%H:%M:00.000Z', 'now', '-2 days')
       AND NOT EXISTS (SELECT 1 FROM ferry_minutes
                        WHERE minute = strftime('%Y-%m-%dT%H:%M:00.000Z', 'now'));
    INSERT INTO ferry_totals (workflow, slot, done)
    SELECT NEW.workflow, 0, 1 WHERE NEW.state = 'done'
    ON CONFLICT (workflow, slot) DO UPDATE SET done = done + 1;
    INSERT INTO ferry_minutes (minute, workflow, slot, done, dead)
    VALUES (strftime('%Y-%m-%dT%H:%M:00.000Z', 'now'), NEW.workflow, 0,
            NEW.state = 'done', NEW.state = 'dead')
    ON CONFLICT (minute, workflow, slot)
    DO UPDATE SET done = done + excluded.done, dead = dead + excluded.dead;
END;

INSERT INTO ferry_totals (workflow, slot, done)
SELECT workflow, 0, count(*) FROM ferry_outbox WHERE state = 'done' GROUP BY workflow;

CREATE TABLE ferry_actions (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    actor     TEXT    NOT NULL CHECK (length(actor) BETWEEN 1 AND 200),
    action    TEXT    NOT NULL CHECK (action IN ('retry', 'cancel', 'bulk_retry', 'bulk_cancel', 'release', 'pause', 'resume')),
    outbox_id INTEGER,
    filter    TEXT    CHECK (filter IS NULL OR json_valid(filter)),
    reason    TEXT,
    matched   INTEGER NOT NULL DEFAULT 0,
    changed   INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE ferry_action_rows (
    outbox_id INTEGER NOT NULL,
    action_id INTEGER NOT NULL,
    PRIMARY KEY (outbox_id, action_id)
) WITHOUT ROWID;

-- Newest-first pages and time ranges, of all rows and of one workflow. The rowid (id) is part
-- of every SQLite index entry, so these order by (created_at, id). Neither column changes after
-- the insert, and SQLite updates only the indexes of columns an UPDATE sets: claims and outcomes
-- never touch them. (Without the second, SQLite serves `workflow = ?` from the (workflow, key)
-- index and sorts a quarter of the table: seconds at a million rows.)
CREATE INDEX IF NOT EXISTS ferry_outbox_created ON ferry_outbox (created_at);
CREATE INDEX IF NOT EXISTS ferry_outbox_workflow_created ON ferry_outbox (workflow, created_at);
