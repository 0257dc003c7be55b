-- Intents of workflow $1: keys $2 (text[]) with payloads $3 (text[], JSON) and ordering keys $4
-- (text[], NULL elements for none). Returns the rows made; keys already present are left as
-- they are. WITH ORDINALITY keeps the given order, so ids follow it (the order of a group).
INSERT INTO ferry_outbox (workflow, key, payload, ordering_key)
SELECT $1, k, p::jsonb, g FROM UNNEST($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS t(k, p, g, n)
 ORDER BY n
ON CONFLICT (workflow, key) DO NOTHING
RETURNING id, key
