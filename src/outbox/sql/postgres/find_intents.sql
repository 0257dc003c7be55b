SELECT id, key, state FROM ferry_outbox WHERE workflow = $1 AND key = ANY($2)
