-- After a refused rate_take: ?1 target, ?2 tolerance in seconds; seconds to wait.
SELECT max(0.001, tat - (julianday('now') - 2440587.5) * 86400.0 - ?2) FROM ferry_rate WHERE target = ?1
