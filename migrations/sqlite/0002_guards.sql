-- Ferry outbox, SQLite, second migration: what plain SQL may put into ferry_outbox, attempt rows
-- removed with their outbox row, and the attempt outcome 'aborted'.
--
-- Guards are triggers, not CHECK constraints: SQLite cannot add a CHECK to an existing table
-- without rebuilding it, and a rebuild of a deployed ferry_outbox would copy every row under the
-- write lock and fail on the very rows these guards are about (an oversized payload, a key with
-- a NUL inserted before this migration). Triggers apply to every INSERT and to UPDATEs of the
-- guarded columns from now on, and leave existing rows to the relay, which handles them: an
-- oversized payload is made dead at claim time without being loaded, and a due_at that is not a
-- timestamp is repaired below. RAISE(ABORT) also lets the error say which rule was broken.

-- Values as the relay reads them: text (a BLOB in a TEXT column is kept as a BLOB and neither
-- reads back as a string nor measures in characters), no NUL (length() and json_valid() stop at
-- the first NUL, so 'k' || char(0) || <anything> passed the length CHECK and
-- '{"ok":1}' || char(0) || 'garbage' passed json_valid and was POSTed verbatim), a payload of at
-- most 1 MiB (ferry::outbox::MAX_PAYLOAD_BYTES; octet_length counts every byte, NULs included),
-- and a due_at in the one format every Ferry timestamp has ('YYYY-MM-DDTHH:MM:SS.SSSZ', UTC):
-- due rows are found by comparing due_at as text with strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), so
-- anything else ('tomorrow' sorts after every date) leaves the row pending forever, and
-- ferry_stuck cannot see it. The format test is a round trip: strftime with a modifier
-- normalises (a '+01:00' offset, a missing fraction, 2026-02-30) and gives NULL for what is not
-- a time at all, so only the canonical text of a real UTC instant comes back unchanged.
CREATE TRIGGER ferry_outbox_guard_insert
    BEFORE INSERT ON ferry_outbox
    FOR EACH ROW
    WHEN octet_length(NEW.payload) > 1048576
         OR typeof(NEW.workflow) = 'blob' OR typeof(NEW.key) = 'blob' OR typeof(NEW.payload) = 'blob'
         OR instr(CAST(NEW.workflow AS BLOB), x'00') > 0
         OR instr(CAST(NEW.key AS BLOB), x'00') > 0
         OR instr(CAST(NEW.payload AS BLOB), x'00') > 0
         OR NEW.due_at IS NOT strftime('%Y-%m-%dT%H:%M:%fZ', NEW.due_at, '+0 seconds')
BEGIN
    SELECT RAISE(ABORT, 'ferry: payload is over the limit of 1048576 bytes (1 MiB)')
     WHERE octet_length(NEW.payload) > 1048576;
    SELECT RAISE(ABORT, 'ferry: workflow, key and payload must be text, not a BLOB')
     WHERE typeof(NEW.workflow) = 'blob' OR typeof(NEW.key) = 'blob' OR typeof(NEW.payload) = 'blob';
    SELECT RAISE(ABORT, 'ferry: workflow, key and payload must not contain a NUL character')
     WHERE instr(CAST(NEW.workflow AS BLOB), x'00') > 0
        OR instr(CAST(NEW.key AS BLOB), x'00') > 0
        OR instr(CAST(NEW.payload AS BLOB), x'00') > 0;
    SELECT RAISE(ABORT, 'ferry: due_at must be a UTC timestamp written as YYYY-MM-DDTHH:MM:SS.SSSZ, e.g. strftime(''%Y-%m-%dT%H:%M:%fZ'', ''now'', ''+1 hour'')')
     WHERE NEW.due_at IS NOT strftime('%Y-%m-%dT%H:%M:%fZ', NEW.due_at, '+0 seconds');
END;

CREATE TRIGGER ferry_outbox_guard_update
    BEFORE UPDATE OF workflow, key, payload ON ferry_outbox
    FOR EACH ROW
    WHEN octet_length(NEW.payload) > 1048576
         OR typeof(NEW.workflow) = 'blob' OR typeof(NEW.key) = 'blob' OR typeof(NEW.payload) = 'blob'
         OR instr(CAST(NEW.workflow AS BLOB), x'00') > 0
         OR instr(CAST(NEW.key AS BLOB), x'00') > 0
         OR instr(CAST(NEW.payload AS BLOB), x'00') > 0
BEGIN
    SELECT RAISE(ABORT, 'ferry: payload is over the limit of 1048576 bytes (1 MiB)')
     WHERE octet_length(NEW.payload) > 1048576;
    SELECT RAISE(ABORT, 'ferry: workflow, key and payload must be text, not a BLOB')
     WHERE typeof(NEW.workflow) = 'blob' OR typeof(NEW.key) = 'blob' OR typeof(NEW.payload) = 'blob';
    SELECT RAISE(ABORT, 'ferry: workflow, key and payload must not contain a NUL character')
     WHERE instr(CAST(NEW.workflow AS BLOB), x'00') > 0
        OR instr(CAST(NEW.key AS BLOB), x'00') > 0
        OR instr(CAST(NEW.payload AS BLOB), x'00') > 0;
END;

-- Separate from the trigger above because every claim, completion and lease renewal sets due_at:
-- this one tests only due_at, and only when it changes.
CREATE TRIGGER ferry_outbox_guard_due_at
    BEFORE UPDATE OF due_at ON ferry_outbox
    FOR EACH ROW
    WHEN NEW.due_at IS NOT OLD.due_at
         AND NEW.due_at IS NOT strftime('%Y-%m-%dT%H:%M:%fZ', NEW.due_at, '+0 seconds')
BEGIN
    SELECT RAISE(ABORT, 'ferry: due_at must be a UTC timestamp written as YYYY-MM-DDTHH:MM:SS.SSSZ, e.g. strftime(''%Y-%m-%dT%H:%M:%fZ'', ''now'', ''+1 hour'')');
END;

-- Live rows whose due_at is not in the canonical format were invisible to the claim (or due at
-- the wrong time): a time SQLite understands is rewritten canonically, anything else is due now.
UPDATE ferry_outbox
   SET due_at = COALESCE(strftime('%Y-%m-%dT%H:%M:%fZ', due_at, '+0 seconds'),
                         strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
 WHERE state IN ('pending', 'retry_wait', 'sending')
   AND due_at IS NOT strftime('%Y-%m-%dT%H:%M:%fZ', due_at, '+0 seconds');

-- ferry_attempts.outcome gains 'aborted' (a request cut off when the shutdown grace period
-- ended). A CHECK cannot be changed in place: rebuild the table with its data, its index and its
-- AUTOINCREMENT sequence (ids are never reused). ferry_dead reads ferry_attempts, and SQLite
-- refuses to rename a table while a view names a table that does not exist, so the view is
-- dropped and made again around the rebuild.
DROP VIEW ferry_dead;

CREATE TABLE ferry_attempts_new (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    outbox_id        INTEGER NOT NULL,  -- ferry_outbox.id; no FOREIGN KEY: see 0001
    attempt          INTEGER NOT NULL,
    started_at       TEXT    NOT NULL,
    duration_ms      REAL    NOT NULL,
    outcome          TEXT    NOT NULL CHECK (outcome IN ('done', 'retry', 'dead', 'aborted')),
    http_status      INTEGER,
    error            TEXT,
    response_excerpt TEXT
);
INSERT INTO ferry_attempts_new
       (id, outbox_id, attempt, started_at, duration_ms, outcome, http_status, error, response_excerpt)
SELECT id, outbox_id, attempt, started_at, duration_ms, outcome, http_status, error, response_excerpt
  FROM ferry_attempts;
DELETE FROM sqlite_sequence WHERE name = 'ferry_attempts_new';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'ferry_attempts_new', seq FROM sqlite_sequence WHERE name = 'ferry_attempts';
DROP TABLE ferry_attempts;
ALTER TABLE ferry_attempts_new RENAME TO ferry_attempts;
CREATE INDEX ferry_attempts_outbox ON ferry_attempts (outbox_id, id);

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

-- A row's attempts go with the row, however it is deleted (the prune job, or an operator's
-- DELETE of a row a relay still holds). There is still no foreign key (see 0001: its check was
-- the largest cost of recording an outcome); this costs one index probe per deleted row.
CREATE TRIGGER ferry_outbox_delete_attempts
    AFTER DELETE ON ferry_outbox
    FOR EACH ROW
BEGIN
    DELETE FROM ferry_attempts WHERE outbox_id = OLD.id;
END;
