-- Take tick $2 of cron job $1 for relay $3: returns the job's row only if no relay took this
-- tick (or a later one) before.
INSERT INTO ferry_cron (job, last_tick, ran_at, ran_by) VALUES ($1, $2, now(), $3)
ON CONFLICT (job) DO UPDATE SET last_tick = EXCLUDED.last_tick, ran_at = now(),
       ran_by = EXCLUDED.ran_by
 WHERE ferry_cron.last_tick < EXCLUDED.last_tick
RETURNING job
