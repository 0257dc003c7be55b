-- A replay of row $1 under key $2: a new pending row with the original's workflow, ordering key
-- and payload, and replay_of naming it. Its own id is its Idempotency-Key.
INSERT INTO ferry_outbox (workflow, key, ordering_key, payload, replay_of)
SELECT workflow, $2, ordering_key, payload, id FROM ferry_outbox WHERE id = $1
RETURNING id
