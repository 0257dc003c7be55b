-- An operator's release of a dead row: $1 id, $2 who, $3 why. The row stays dead (its history
-- and reason are kept) but no longer holds back the later rows of its ordering group.
UPDATE ferry_outbox SET released_at = now(), released_by = $2, release_reason = $3
 WHERE id = $1 AND state = 'dead'
