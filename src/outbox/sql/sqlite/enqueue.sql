-- One intent: ?1 workflow, ?2 key, ?3 payload (JSON text), ?4 ordering key (text or NULL).
INSERT INTO ferry_outbox (workflow, key, payload, ordering_key) VALUES (?1, ?2, ?3, ?4)
ON CONFLICT (workflow, key) DO NOTHING
RETURNING id
