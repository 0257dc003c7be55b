-- Renew the lease of one row still held: ?1 id, ?2 its claim token, ?3 the lease as a date
-- modifier from now. A row whose token changed is left alone.
UPDATE ferry_outbox SET due_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?3)
 WHERE id = ?1 AND claim_token = ?2 AND state = 'sending'
