-- Claim due rows: $1 most rows (bigint), $2 the claim's token (uuid), $3 the lease in
-- milliseconds (bigint), $4 workflows to leave alone (text[]), $5 the payload limit in bytes
-- (bigint), $6 the batch's payload budget in bytes (bigint), $7 the reason given to a row over
-- the limit, a format() pattern whose %s is its size (text).
--
-- `due` picks due rows in due_at order through the partial index ferry_outbox_due (whose
-- predicate is exactly this state filter), locking each with FOR UPDATE SKIP LOCKED so
-- concurrent relays pass over rows another relay is claiming instead of waiting for it. The
-- UPDATE then leases them: the lease expiry goes into due_at, which makes an expired lease
-- simply "due" again for the same index scan. The statement commits on its own, so the locks
-- are held for microseconds; the lease, not a lock, keeps the row during delivery.
--
-- Ordering: a row with an ordering_key is due only while no earlier row of its group (any
-- workflow) is unfinished: not done, and not a dead row an operator released. One probe of
-- ferry_outbox_order per ordered candidate. Concurrent claims cannot take two rows of a group:
-- the later row's probe sees the earlier one unfinished (a row once done stays done), and one
-- claim statement takes at most a group's first unfinished row. A crash leaves the held row
-- `sending`, still unfinished, so its group waits for the lease to expire and that row is
-- delivered again first.
--
-- `taken` keeps the longest prefix (in due_at order) whose payloads, as the text sent back, add
-- up to at most the budget, and always the first row; rows past it stay due for the next claim.
-- A payload over the limit counts for nothing: such a row is made dead here with the reason,
-- and its payload is not returned (an UPDATE that does not set payload does not even fetch it
-- from TOAST).
WITH due AS (
    SELECT id, due_at, octet_length(payload::text)::bigint AS bytes FROM ferry_outbox c
     WHERE state IN ('pending', 'retry_wait', 'sending') AND due_at <= now()
       AND workflow <> ALL($4::text[])
       AND (c.ordering_key IS NULL OR NOT EXISTS (
            SELECT 1 FROM ferry_outbox e
             WHERE e.ordering_key = c.ordering_key AND e.id < c.id AND e.state <> 'done'
               AND (e.state <> 'dead' OR e.released_at IS NULL)))
     ORDER BY due_at
     LIMIT $1
     FOR UPDATE SKIP LOCKED),
sized AS (
    SELECT id, bytes, bytes > $5::bigint AS oversized,
           row_number() OVER w AS n,
           sum(CASE WHEN bytes > $5::bigint THEN 0 ELSE bytes END) OVER w AS running
      FROM due
    WINDOW w AS (ORDER BY due_at, id ROWS UNBOUNDED PRECEDING)),
taken AS (SELECT id, bytes, oversized FROM sized WHERE n = 1 OR running <= $6::bigint)
UPDATE ferry_outbox o SET
       state = CASE WHEN t.oversized THEN 'dead' ELSE 'sending' END,
       claim_token = CASE WHEN t.oversized THEN NULL ELSE $2 END,
       attempts = CASE WHEN t.oversized THEN o.attempts ELSE o.attempts + 1 END,
       due_at = CASE WHEN t.oversized THEN o.due_at
                     ELSE now() + $3 * interval '1 millisecond' END,
       last_error = CASE WHEN t.oversized THEN format($7::text, t.bytes) ELSE o.last_error END,
       last_status = CASE WHEN t.oversized THEN NULL ELSE o.last_status END,
       updated_at = now()
  FROM taken t WHERE o.id = t.id
RETURNING o.id, o.workflow, o.key,
          CASE WHEN t.oversized THEN NULL ELSE o.payload::text END AS payload,
          o.attempts, o.created_at, t.bytes AS payload_bytes
