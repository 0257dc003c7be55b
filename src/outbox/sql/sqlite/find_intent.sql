SELECT id, state FROM ferry_outbox WHERE workflow = ?1 AND key = ?2
