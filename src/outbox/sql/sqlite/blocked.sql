-- The `ferry_blocked` view: groups held by a dead row, oldest blocker first.
SELECT ordering_key, blocking_id, workflow, key, reason, waiting FROM ferry_blocked
 ORDER BY blocking_id
