-- An operator's move of one row: ?1 id, ?2 the state it must still be in, ?3 the new state, ?4 a
-- reason for last_error (NULL keeps it). Any claim is revoked; the reset trigger does the rest
-- of a move to pending.
UPDATE ferry_outbox SET state = ?3, claim_token = NULL,
       last_error = COALESCE(?4, last_error), updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
 WHERE id = ?1 AND state = ?2
