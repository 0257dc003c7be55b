-- The rows `ferry replay` sends again: ?1 workflow, ?2 since (inclusive), ?3 until (exclusive),
-- both as '%Y-%m-%dT%H:%M:%fZ' text, ?4 key or NULL, ?5 most rows. See postgres/.
SELECT o.id AS original_id, o.key AS original_key, o.done_at, o.payload AS payload,
       COALESCE((SELECT max(CAST(substr(r.key, length(o.key) + 9) AS INTEGER))
                   FROM ferry_outbox r WHERE r.replay_of = o.id), 0) + 1 AS next_n
  FROM ferry_outbox o
 WHERE o.workflow = ?1 AND o.state = 'done' AND o.replay_of IS NULL
   AND o.done_at >= ?2 AND o.done_at < ?3 AND (?4 IS NULL OR o.key = ?4)
 ORDER BY o.id LIMIT ?5
