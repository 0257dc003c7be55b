-- The attempt history of a batch, one row per element of the parallel arrays.
INSERT INTO ferry_attempts
       (outbox_id, attempt, started_at, duration_ms, outcome, http_status, error, response_excerpt)
SELECT * FROM UNNEST($1::bigint[], $2::int[], $3::timestamptz[], $4::float8[],
                     $5::text[], $6::int[], $7::text[], $8::text[])
