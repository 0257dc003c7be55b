-- Ferry outbox, PostgreSQL, third migration: ferry_enqueue(), enqueueing from any language.
--
--   SELECT ferry_enqueue('partner_hoa_don', 'HD-0001', '{"billCode": "HD-0001"}');
--
-- Call it in the transaction of the business change: the intent commits or rolls back with it.
-- It returns the row's id; for a (workflow, key) already enqueued it adds nothing and returns the
-- existing row's id (a retried webhook enqueues once), whatever that row's state. The same
-- checks as plain SQL apply (names of 1 to 200 and 1 to 500 characters, payloads of at most
-- 1 MiB, no NULLs); the document itself is validated by the relay, as for any row.
--
-- SECURITY INVOKER (the default): the caller needs INSERT and SELECT on ferry_outbox, as for a
-- plain INSERT. The function's search_path is pinned to the schema it is created in, so it finds
-- Ferry's table whatever the caller's search_path (call it as <schema>.ferry_enqueue(…) when
-- Ferry's schema is not on that path).

CREATE FUNCTION ferry_enqueue(workflow text, key text, payload jsonb) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    row_id bigint;
BEGIN
    LOOP
        -- ON CONFLICT DO NOTHING waits for a concurrent transaction inserting the same key; if
        -- that one commits, nothing is inserted here and the SELECT sees its row (each statement
        -- takes a new snapshot under READ COMMITTED). If the row vanished in between (deleted),
        -- try again.
        INSERT INTO ferry_outbox (workflow, key, payload)
        VALUES (ferry_enqueue.workflow, ferry_enqueue.key, ferry_enqueue.payload)
        ON CONFLICT ON CONSTRAINT ferry_outbox_workflow_key DO NOTHING
        RETURNING id INTO row_id;
        IF row_id IS NOT NULL THEN
            RETURN row_id;
        END IF;
        SELECT o.id INTO row_id FROM ferry_outbox o
         WHERE o.workflow = ferry_enqueue.workflow AND o.key = ferry_enqueue.key;
        IF row_id IS NOT NULL THEN
            RETURN row_id;
        END IF;
    END LOOP;
END $$;

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION ferry_enqueue(text, text, jsonb) SET search_path = %I, pg_temp',
                   current_schema());
END $$;

COMMENT ON FUNCTION ferry_enqueue(text, text, jsonb) IS
    'Ferry: enqueue an export intent in the caller''s transaction; returns the outbox row id (the existing one for a (workflow, key) already enqueued).';
