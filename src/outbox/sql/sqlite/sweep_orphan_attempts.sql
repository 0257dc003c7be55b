-- Attempts with ids in (?1, ?2] whose outbox row no longer exists. A range of ids per
-- statement, so the write lock is held for milliseconds.
DELETE FROM ferry_attempts
 WHERE id > ?1 AND id <= ?2
   AND NOT EXISTS (SELECT 1 FROM ferry_outbox o WHERE o.id = ferry_attempts.outbox_id)
