-- One intent: $1 workflow, $2 key, $3 payload (JSON text), $4 ordering key (text or NULL).
-- ON CONFLICT DO NOTHING waits for a concurrent uncommitted insert of the same key and then
-- yields nothing; find_intent then sees the committed row.
INSERT INTO ferry_outbox (workflow, key, payload, ordering_key) VALUES ($1, $2, $3::jsonb, $4)
ON CONFLICT (workflow, key) DO NOTHING
RETURNING id
