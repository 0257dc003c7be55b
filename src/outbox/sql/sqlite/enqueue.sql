-- One intent: ?1 workflow, ?2 key, ?3 payload (JSON text).
INSERT INTO ferry_outbox (workflow, key, payload) VALUES (?1, ?2, ?3)
ON CONFLICT (workflow, key) DO NOTHING
RETURNING id
