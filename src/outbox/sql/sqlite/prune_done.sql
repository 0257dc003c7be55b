-- One batch of the prune: at most ?2 done rows finished before now moved by the date modifier
-- ?1 ('-1814400.000 seconds'). The delete trigger removes their attempts with them.
DELETE FROM ferry_outbox WHERE id IN (
    SELECT id FROM ferry_outbox
     WHERE state = 'done' AND done_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?1)
     LIMIT ?2)
