-- Record the outcome of one held row, only if it is still `sending` under the token it was
-- claimed with: ?1 next state, ?2 wait before due again as a date modifier (used for
-- retry_wait), ?3 whether the claim's attempt is refunded (last_error and last_status are then
-- kept), ?4 error, ?5 HTTP status, ?6 id, ?7 claim token.
UPDATE ferry_outbox SET
       state = ?1,
       due_at = CASE WHEN ?1 = 'retry_wait' THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?2)
                     ELSE due_at END,
       attempts = CASE WHEN ?3 THEN max(attempts - 1, 0) ELSE attempts END,
       claim_token = NULL,
       last_error = CASE WHEN ?3 THEN last_error ELSE ?4 END,
       last_status = CASE WHEN ?3 THEN last_status ELSE ?5 END,
       done_at = CASE WHEN ?1 = 'done' THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now') END,
       updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
 WHERE id = ?6 AND claim_token = ?7 AND state = 'sending'
