-- A replay of row ?1 under key ?2. See postgres/.
INSERT INTO ferry_outbox (workflow, key, ordering_key, payload, replay_of)
SELECT workflow, ?2, ordering_key, payload, id FROM ferry_outbox WHERE id = ?1
RETURNING id
