SELECT id FROM ferry_outbox WHERE id = ?1
