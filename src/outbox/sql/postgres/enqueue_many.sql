-- Intents of workflow $1: keys $2 (text[]) with payloads $3 (text[], JSON). Returns the rows
-- made; keys already present are left as they are.
INSERT INTO ferry_outbox (workflow, key, payload)
SELECT $1, k, p::jsonb FROM UNNEST($2::text[], $3::text[]) AS t(k, p)
ON CONFLICT (workflow, key) DO NOTHING
RETURNING id, key
