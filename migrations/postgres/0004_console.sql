-- Ferry outbox, PostgreSQL, migration 0004: what the operator console reads and writes.
--
--   * ferry_totals: rows that reached `done`, per workflow, all time (since this migration; rows
--     already done are counted in below). The overview and `ferry status` read this small table
--     instead of counting done rows, so they stay cheap at any history size.
--   * ferry_minutes: rows that reached `done` or `dead`, per minute and workflow, for the
--     deliveries-per-minute chart; two days are kept.
--   * ferry_actions, ferry_action_rows: the audit of operator actions (retry, cancel, bulk), who,
--     when, why and which rows, written by the operator actions of every front door.
--   * ferry_outbox_created: newest-first browsing and time ranges without reading the table.
--
-- Both counters are kept by one statement-level trigger with transition tables. It reads only
-- the rows the statement changed, runs after the row changes are made (it changes nothing about
-- how an outcome is recorded: the same statements, the same rows, the same transition checks),
-- and writes nothing unless a row moved into `done` or `dead`. Claims and lease renewals cost
-- one scan of their own transition tables.
--
-- Counter rows are keyed by database session (slot = pg_backend_pid()): a relay's transaction
-- only ever updates its own session's rows, so no two transactions wait for each other's
-- commit, and no lock order between them can deadlock. Readers sum the slots; the prune job
-- folds the rows of sessions that have ended into slot 0 (Store::fold_counters).

CREATE TABLE ferry_totals (
    workflow  TEXT    NOT NULL,
    slot      INTEGER NOT NULL,
    done      BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (workflow, slot)
);
COMMENT ON TABLE ferry_totals IS 'Rows that reached done, per workflow (sum the slots: one per database session, 0 for ended ones). Kept by a trigger; not reduced by pruning.';

CREATE TABLE ferry_minutes (
    minute    TIMESTAMPTZ NOT NULL,
    workflow  TEXT        NOT NULL,
    slot      INTEGER     NOT NULL,
    done      BIGINT      NOT NULL DEFAULT 0,
    dead      BIGINT      NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, workflow, slot)
);
COMMENT ON TABLE ferry_minutes IS 'Rows that reached done or dead per minute and workflow (sum the slots); two days kept.';

-- The schema comes from the trigger (TG_TABLE_SCHEMA), not from the session's search_path: an
-- operator's UPDATE from psql with another search_path must not fail here. The transition tables
-- are read by static SQL into arrays; the writes are built per call with the schema quoted.
CREATE FUNCTION ferry_outbox_count_settled() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    wfs   text[];
    dones bigint[];
    deads bigint[];
BEGIN
    SELECT array_agg(m.workflow), array_agg(m.done), array_agg(m.dead)
      INTO wfs, dones, deads
      FROM (SELECT n.workflow,
                   count(*) FILTER (WHERE n.state = 'done') AS done,
                   count(*) FILTER (WHERE n.state = 'dead') AS dead
              FROM ferry_settled_new n
              JOIN ferry_settled_old o ON o.id = n.id
             WHERE n.state IN ('done', 'dead') AND o.state <> n.state
             GROUP BY n.workflow) m;
    IF wfs IS NULL THEN
        RETURN NULL;
    END IF;
    -- Two days of minutes are kept; the first statement of each minute drops older ones.
    EXECUTE format(
        'DELETE FROM %1$I.ferry_minutes
          WHERE minute < date_trunc(''minute'', now()) - interval ''2 days''
            AND NOT EXISTS (SELECT 1 FROM %1$I.ferry_minutes WHERE minute = date_trunc(''minute'', now()))',
        TG_TABLE_SCHEMA);
    EXECUTE format(
        'WITH m AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS m(workflow, done, dead)),
              t AS (INSERT INTO %1$I.ferry_totals AS t (workflow, slot, done)
                    SELECT workflow, $4, done FROM m WHERE done > 0
                    ON CONFLICT (workflow, slot) DO UPDATE SET done = t.done + EXCLUDED.done)
         INSERT INTO %1$I.ferry_minutes AS x (minute, workflow, slot, done, dead)
         SELECT date_trunc(''minute'', now()), workflow, $4, done, dead FROM m
         ON CONFLICT (minute, workflow, slot)
         DO UPDATE SET done = x.done + EXCLUDED.done, dead = x.dead + EXCLUDED.dead',
        TG_TABLE_SCHEMA)
    USING wfs, dones, deads, pg_backend_pid();
    RETURN NULL;
END $$;

-- No column list (UPDATE OF state): PostgreSQL allows transition tables only on triggers
-- without one.
CREATE TRIGGER ferry_outbox_count_settled
    AFTER UPDATE ON ferry_outbox
    REFERENCING OLD TABLE AS ferry_settled_old NEW TABLE AS ferry_settled_new
    FOR EACH STATEMENT
    EXECUTE FUNCTION ferry_outbox_count_settled();

-- Rows already done count towards the totals (one read of the done rows, once).
INSERT INTO ferry_totals (workflow, slot, done)
SELECT workflow, 0, count(*) FROM ferry_outbox WHERE state = 'done' GROUP BY workflow;

-- The audit of operator actions (retry, cancel, bulk, release, pause, resume). One row per action; ferry_action_rows names every row it
-- changed (a bulk action: each of them), so a row's page can say who retried or cancelled it.
CREATE TABLE ferry_actions (
    id        BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor     TEXT        NOT NULL CHECK (length(actor) BETWEEN 1 AND 200),
    action    TEXT        NOT NULL CHECK (action IN ('retry', 'cancel', 'bulk_retry', 'bulk_cancel', 'release', 'pause', 'resume')),
    outbox_id BIGINT,                 -- the row of a single-row action
    filter    JSONB,                  -- the filter of a bulk action
    reason    TEXT,
    matched   BIGINT      NOT NULL DEFAULT 0,
    changed   BIGINT      NOT NULL DEFAULT 0
);
COMMENT ON TABLE ferry_actions IS 'Operator actions: who (actor: cli:<user>, console:<name>), when, why (reason), which rows.';

CREATE TABLE ferry_action_rows (
    outbox_id BIGINT NOT NULL,
    action_id BIGINT NOT NULL,
    PRIMARY KEY (outbox_id, action_id)
);

-- Newest-first browsing and time ranges (the console lists rows by created_at, id). The one
-- index this migration adds to ferry_outbox. Building it holds off writes to the table for as
-- long as it takes (about a second per million rows); on a large, busy table build it first
-- with the same statement and CONCURRENTLY (CREATE INDEX CONCURRENTLY IF NOT EXISTS …), and this
-- migration leaves it as it is.
CREATE INDEX IF NOT EXISTS ferry_outbox_created ON ferry_outbox (created_at, id);
