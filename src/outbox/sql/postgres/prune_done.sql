-- One batch of the prune: at most $2 done rows finished more than $1 milliseconds ago. The
-- statement-level delete trigger removes their attempts in the same statement.
DELETE FROM ferry_outbox WHERE id IN (
    SELECT id FROM ferry_outbox
     WHERE state = 'done' AND done_at < now() - $1 * interval '1 millisecond'
     LIMIT $2)
