-- ?1 state or NULL, ?2 workflow or NULL, ?3 most rows; newest first.
SELECT id, workflow, key, state, attempts, due_at, last_error, last_status,
       created_at, updated_at, done_at, payload
  FROM ferry_outbox
 WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR workflow = ?2)
 ORDER BY id DESC LIMIT ?3
