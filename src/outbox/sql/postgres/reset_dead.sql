-- Reset every dead row ($1: of this workflow only, or NULL for all).
UPDATE ferry_outbox SET state = 'pending'
 WHERE state = 'dead' AND ($1::text IS NULL OR workflow = $1)
