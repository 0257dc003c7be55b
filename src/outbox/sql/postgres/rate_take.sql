-- Take one request of a target's rate limit (GCRA on the database clock): $1 target, $2 the
-- emission interval per/requests in microseconds (bigint), $3 the tolerance in microseconds.
-- Allowed when tat - now() <= tolerance; then tat = greatest(tat, now()) + interval. Returns 0
-- when allowed, otherwise the microseconds to wait before asking again. One statement: the
-- upsert locks the target's row, so concurrent relays take turns on it.
WITH took AS (
    INSERT INTO ferry_rate AS r (target, tat)
    VALUES ($1, clock_timestamp() + $2 * interval '1 microsecond')
    ON CONFLICT (target) DO UPDATE
       SET tat = greatest(r.tat, clock_timestamp()) + $2 * interval '1 microsecond'
     WHERE r.tat - clock_timestamp() <= $3 * interval '1 microsecond'
    RETURNING 1)
SELECT CASE WHEN EXISTS (SELECT 1 FROM took) THEN 0::bigint
            ELSE COALESCE((SELECT greatest(1, (EXTRACT(EPOCH FROM (tat - clock_timestamp())) * 1e6)::bigint - $3)
                             FROM ferry_rate WHERE target = $1), 1)
       END AS wait_us
