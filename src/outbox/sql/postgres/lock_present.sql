-- Which of the rows $1 (bigint[]) still exist. FOR KEY SHARE keeps a row that still exists from
-- being deleted until the completing transaction commits, so the delete trigger of a DELETE
-- that follows sees the stale attempt written with it and removes it with the row (no orphan);
-- a DELETE that committed first leaves nothing to lock.
SELECT id FROM ferry_outbox WHERE id = ANY($1::bigint[]) FOR KEY SHARE
