-- A row's attempt history in the order it was recorded.
SELECT attempt, started_at, duration_ms, outcome, http_status, error, response_excerpt
  FROM ferry_attempts WHERE outbox_id = $1 ORDER BY id
