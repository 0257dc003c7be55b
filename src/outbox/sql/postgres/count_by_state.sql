-- Reads the whole table, done rows included.
SELECT state, count(*) AS rows FROM ferry_outbox GROUP BY state ORDER BY state
