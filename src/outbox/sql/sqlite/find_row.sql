SELECT id, workflow, key, state, attempts, due_at, last_error, last_status,
       created_at, updated_at, done_at, payload
  FROM ferry_outbox WHERE workflow = ?1 AND key = ?2
