-- Take tick ?2 (as 'YYYY-MM-DDTHH:MM:SS.SSSZ') of cron job ?1 for relay ?3: returns the job's
-- row only if no relay took this tick (or a later one) before.
INSERT INTO ferry_cron (job, last_tick, ran_at, ran_by)
VALUES (?1, ?2, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), ?3)
ON CONFLICT (job) DO UPDATE SET last_tick = excluded.last_tick,
       ran_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), ran_by = excluded.ran_by
 WHERE ferry_cron.last_tick < excluded.last_tick
RETURNING job
