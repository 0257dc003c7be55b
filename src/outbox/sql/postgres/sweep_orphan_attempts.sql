-- Attempts with ids in ($1, $2] whose outbox row no longer exists. A range of ids per
-- statement: short statements, and no plan that reads the whole of both tables at once.
DELETE FROM ferry_attempts a
 WHERE a.id > $1 AND a.id <= $2
   AND NOT EXISTS (SELECT 1 FROM ferry_outbox o WHERE o.id = a.outbox_id)
