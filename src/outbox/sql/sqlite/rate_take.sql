-- Take one request of a target's rate limit (GCRA on the database clock; tat in Unix seconds,
-- REAL): ?1 target, ?2 the emission interval per/requests in seconds, ?3 the tolerance in
-- seconds. Allowed (a row comes back) when tat - now <= tolerance; then
-- tat = max(tat, now) + interval. A single writer makes it atomic.
INSERT INTO ferry_rate (target, tat)
VALUES (?1, (julianday('now') - 2440587.5) * 86400.0 + ?2)
ON CONFLICT (target) DO UPDATE
   SET tat = max(tat, (julianday('now') - 2440587.5) * 86400.0) + ?2
 WHERE tat - (julianday('now') - 2440587.5) * 86400.0 <= ?3
RETURNING 0
