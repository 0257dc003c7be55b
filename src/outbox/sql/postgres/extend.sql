-- Renew the leases of rows still held: $1 ids (bigint[]), $2 their claim tokens (uuid[]), $3 the
-- lease in milliseconds from the database's now. Rows whose token changed are left alone.
UPDATE ferry_outbox AS o SET due_at = now() + $3 * interval '1 millisecond'
  FROM UNNEST($1::bigint[], $2::uuid[]) AS u(id, token)
 WHERE o.id = u.id AND o.claim_token = u.token AND o.state = 'sending'
