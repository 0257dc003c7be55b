-- The rows `ferry replay` sends again: $1 workflow, $2 since (inclusive), $3 until (exclusive),
-- $4 key or NULL, $5 most rows. Delivered originals only (state done, not themselves replays),
-- oldest first, with the number of the next replay of each (one more than the highest so far:
-- replay keys are '<key>#replay-<n>').
SELECT o.id AS original_id, o.key AS original_key, o.done_at, o.payload::text AS payload,
       COALESCE((SELECT max(CAST(substr(r.key, length(o.key) + 9) AS BIGINT))
                   FROM ferry_outbox r WHERE r.replay_of = o.id), 0) + 1 AS next_n
  FROM ferry_outbox o
 WHERE o.workflow = $1 AND o.state = 'done' AND o.replay_of IS NULL
   AND o.done_at >= $2 AND o.done_at < $3 AND ($4::text IS NULL OR o.key = $4)
 ORDER BY o.id LIMIT $5
