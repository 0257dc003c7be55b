-- A held row was delivered but its workflow's on-done SQL failed (rolled back to the savepoint
-- taken before mark_done): dead with the reason. $1 id, $2 claim token, $3 reason, $4 HTTP
-- status.
UPDATE ferry_outbox SET state = 'dead', claim_token = NULL, last_error = $3,
       last_status = $4, updated_at = now()
 WHERE id = $1 AND claim_token = $2 AND state = 'sending'
