-- Ferry outbox, PostgreSQL, second migration: a size limit on payloads written by plain SQL, a
-- finite due_at, attempt rows removed with their outbox row, and the attempt outcome 'aborted'.
--
-- NUL needs no guard here: text and jsonb refuse it (chr(0), E'\000' and a '\u0000' escape in
-- JSON are all errors), so keys, workflows and payloads cannot carry one.

-- Payloads of at most 1 MiB (ferry::outbox::MAX_PAYLOAD_BYTES), measured as the JSON text the
-- relay reads (payload::text, jsonb's own rendering). A trigger and not a CHECK constraint:
--   * a CHECK is evaluated on every UPDATE of the row, so each claim, completion and lease
--     renewal would render the payload again (and fetch it from TOAST, which those updates
--     otherwise never touch); this trigger fires only on INSERT and on UPDATEs that set payload;
--   * a CHECK added NOT VALID (to keep the migration from failing on rows inserted before it)
--     still refuses any later UPDATE of such a row, so the relay could not even make it dead:
--     one old oversized row would fail every claim. The claim handles those rows instead (dead
--     with the reason, without loading the payload).
CREATE FUNCTION ferry_outbox_refuse_payload() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ferry: payload of outbox row (%, %) is % bytes, over the limit of 1048576 bytes (1 MiB)',
        NEW.workflow, NEW.key, octet_length(NEW.payload::text)
        USING ERRCODE = 'check_violation';
END $$;

CREATE TRIGGER ferry_outbox_payload_limit
    BEFORE INSERT OR UPDATE OF payload ON ferry_outbox
    FOR EACH ROW
    WHEN (octet_length(NEW.payload::text) > 1048576)
    EXECUTE FUNCTION ferry_outbox_refuse_payload();

-- due_at must be a real instant: 'infinity' is never due (a pending row would wait forever,
-- and ferry_stuck lists only sending rows). Any other timestamptz is fine; unlike SQLite's text
-- timestamps, the type itself refuses anything that is not a time.
CREATE FUNCTION ferry_outbox_refuse_due_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ferry: due_at of outbox row (%, %) must be a finite timestamp, not %',
        NEW.workflow, NEW.key, NEW.due_at
        USING ERRCODE = 'check_violation';
END $$;

CREATE TRIGGER ferry_outbox_due_at_finite
    BEFORE INSERT OR UPDATE OF due_at ON ferry_outbox
    FOR EACH ROW
    WHEN (NOT isfinite(NEW.due_at))
    EXECUTE FUNCTION ferry_outbox_refuse_due_at();

UPDATE ferry_outbox SET due_at = now()
 WHERE state IN ('pending', 'retry_wait', 'sending') AND due_at = 'infinity';

-- A row's attempts go with the row, however it is deleted (the prune job, or an operator's
-- DELETE of a row a relay still holds). Still no foreign key (see 0001: its per-row check and
-- parent lock were the largest cost of recording an outcome). One statement-level trigger
-- with a transition table: a prune of 5000 rows costs one DELETE, not 5000. The ids are passed
-- as an array to a statement built per call, so the plan is made for this call's number of ids
-- (an index scan on ferry_attempts_outbox for a few rows) instead of a plan cached from
-- another call; the schema comes from the trigger, not from the session's search_path.
CREATE FUNCTION ferry_outbox_delete_attempts() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
BEGIN
    ids := ARRAY(SELECT id FROM ferry_gone);
    IF cardinality(ids) > 0 THEN
        EXECUTE format('DELETE FROM %I.ferry_attempts WHERE outbox_id = ANY ($1)', TG_TABLE_SCHEMA)
            USING ids;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER ferry_outbox_delete_attempts
    AFTER DELETE ON ferry_outbox
    REFERENCING OLD TABLE AS ferry_gone
    FOR EACH STATEMENT
    EXECUTE FUNCTION ferry_outbox_delete_attempts();

-- ferry_attempts.outcome gains 'aborted' (a request cut off when the shutdown grace period
-- ended). NOT VALID: every existing row satisfied the narrower CHECK and so satisfies this one;
-- validating would only scan the whole table under this migration's exclusive lock, blocking
-- the relays' outcome recording meanwhile. New and updated rows are checked all the same.
ALTER TABLE ferry_attempts
    DROP CONSTRAINT ferry_attempts_outcome_check,
    ADD CONSTRAINT ferry_attempts_outcome_check
        CHECK (outcome IN ('done', 'retry', 'dead', 'aborted')) NOT VALID;
