-- Mark one held row done, before its workflow's on-done SQL runs in the same transaction: $1 id,
-- $2 claim token, $3 HTTP status. Changes nothing (0 rows) if the token no longer matches.
UPDATE ferry_outbox SET state = 'done', claim_token = NULL, last_error = NULL,
       last_status = $3, done_at = now(), updated_at = now()
 WHERE id = $1 AND claim_token = $2 AND state = 'sending'
