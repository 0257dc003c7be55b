-- Resume: $1 kind, $2 name. Returns the rows removed (0 or 1) and wakes idle relays, whose rows
-- of the resumed workflows are due again.
WITH gone AS (DELETE FROM ferry_paused WHERE kind = $1 AND name = $2 RETURNING 1)
SELECT (SELECT count(*) FROM gone) AS removed, pg_notify('ferry_outbox', current_schema())::text AS notified
