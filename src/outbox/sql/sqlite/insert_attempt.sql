-- One attempt; ?3 started_at as 'YYYY-MM-DDTHH:MM:SS.SSSZ'.
INSERT INTO ferry_attempts
       (outbox_id, attempt, started_at, duration_ms, outcome, http_status, error, response_excerpt)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
