-- Record the outcomes of a batch of held rows in one statement, each only if the row is still
-- `sending` under the token it was claimed with. Parallel arrays, one element per row: $1 ids
-- (bigint[]), $2 claim tokens (uuid[]), $3 next states (text[]), $4 waits before due again in
-- milliseconds (bigint[], used for retry_wait), $5 whether the claim's attempt is refunded
-- (bool[]; last_error and last_status are then kept), $6 errors (text[]), $7 HTTP statuses
-- (int[]). Returns the (id, token) of every row recorded.
UPDATE ferry_outbox AS o SET
       state = u.state,
       due_at = CASE WHEN u.state = 'retry_wait'
                     THEN now() + u.wait_ms * interval '1 millisecond'
                     ELSE o.due_at END,
       attempts = CASE WHEN u.refund THEN GREATEST(o.attempts - 1, 0) ELSE o.attempts END,
       claim_token = NULL,
       last_error = CASE WHEN u.refund THEN o.last_error ELSE u.error END,
       last_status = CASE WHEN u.refund THEN o.last_status ELSE u.status END,
       done_at = CASE WHEN u.state = 'done' THEN now() END,
       updated_at = now()
  FROM UNNEST($1::bigint[], $2::uuid[], $3::text[], $4::bigint[], $5::bool[],
              $6::text[], $7::int[]) AS u(id, token, state, wait_ms, refund, error, status)
 WHERE o.id = u.id AND o.claim_token = u.token AND o.state = 'sending'
RETURNING u.id, u.token
