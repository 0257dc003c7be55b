-- Ferry outbox, SQLite: the W3C trace context of an intent (OpenTelemetry). The same column and
-- the same rule as migrations/postgres/0007_traceparent.sql, which explains them:
--   INSERT INTO ferry_outbox (workflow, key, payload, traceparent) VALUES (…, '00-…-…-01');
--
-- SQLite has no regular expressions: 55 characters of lowercase hex and '-', with exactly the
-- three '-' in their places, is the same rule as PostgreSQL's pattern. Triggers, not a CHECK
-- (SQLite cannot add one to an existing table without rebuilding it).
ALTER TABLE ferry_outbox ADD COLUMN traceparent TEXT;

CREATE TRIGGER ferry_outbox_traceparent_insert
    BEFORE INSERT ON ferry_outbox
    FOR EACH ROW
    WHEN NEW.traceparent IS NOT NULL AND NOT (
        typeof(NEW.traceparent) = 'text'
        AND length(NEW.traceparent) = 55
        AND NEW.traceparent NOT GLOB '*[^0-9a-f-]*'
        AND length(replace(NEW.traceparent, '-', '')) = 52
        AND substr(NEW.traceparent, 3, 1) = '-'
        AND substr(NEW.traceparent, 36, 1) = '-'
        AND substr(NEW.traceparent, 53, 1) = '-'
        AND substr(NEW.traceparent, 1, 2) <> 'ff'
        AND substr(NEW.traceparent, 4, 32) <> '00000000000000000000000000000000'
        AND substr(NEW.traceparent, 37, 16) <> '0000000000000000')
BEGIN
    SELECT RAISE(ABORT, 'ferry: traceparent is not a W3C traceparent (00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>, lowercase, ids not all zeros)');
END;

CREATE TRIGGER ferry_outbox_traceparent_update
    BEFORE UPDATE OF traceparent ON ferry_outbox
    FOR EACH ROW
    WHEN NEW.traceparent IS NOT NULL AND NOT (
        typeof(NEW.traceparent) = 'text'
        AND length(NEW.traceparent) = 55
        AND NEW.traceparent NOT GLOB '*[^0-9a-f-]*'
        AND length(replace(NEW.traceparent, '-', '')) = 52
        AND substr(NEW.traceparent, 3, 1) = '-'
        AND substr(NEW.traceparent, 36, 1) = '-'
        AND substr(NEW.traceparent, 53, 1) = '-'
        AND substr(NEW.traceparent, 1, 2) <> 'ff'
        AND substr(NEW.traceparent, 4, 32) <> '00000000000000000000000000000000'
        AND substr(NEW.traceparent, 37, 16) <> '0000000000000000')
BEGIN
    SELECT RAISE(ABORT, 'ferry: traceparent is not a W3C traceparent (00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>, lowercase, ids not all zeros)');
END;
