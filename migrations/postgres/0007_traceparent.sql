-- Ferry outbox, PostgreSQL: the W3C trace context of an intent (OpenTelemetry).
--
-- traceparent (nullable) is the producer's context as a W3C `traceparent` header value,
-- version-traceid-parentid-flags in lowercase hex, e.g.
--   00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
-- Each delivery attempt of the row is a span whose parent is this context, and the request to
-- the target carries the attempt's `traceparent` (see the README, "Tracing"). Plain SQL may set
-- it:
--   INSERT INTO ferry_outbox (workflow, key, payload, traceparent) VALUES (…, '00-…-…-01');
--
-- The format is checked by a trigger on INSERT and on UPDATEs that set the column (not a CHECK
-- constraint, which would run on every claim and completion of every row and make adding the
-- column scan the table): 55 characters, lowercase hex, version not ff, neither id all zeros.
ALTER TABLE ferry_outbox ADD COLUMN traceparent text;

CREATE FUNCTION ferry_outbox_refuse_traceparent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ferry: traceparent of outbox row (%, %) is not a W3C traceparent (00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>, lowercase, ids not all zeros)',
        NEW.workflow, NEW.key
        USING ERRCODE = 'check_violation';
END $$;

CREATE TRIGGER ferry_outbox_traceparent_format
    BEFORE INSERT OR UPDATE OF traceparent ON ferry_outbox
    FOR EACH ROW
    WHEN (NEW.traceparent IS NOT NULL AND NOT (
        NEW.traceparent ~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
        AND left(NEW.traceparent, 2) <> 'ff'
        AND substr(NEW.traceparent, 4, 32) <> repeat('0', 32)
        AND substr(NEW.traceparent, 37, 16) <> repeat('0', 16)))
    EXECUTE FUNCTION ferry_outbox_refuse_traceparent();
