-- Claim due rows, run inside BEGIN IMMEDIATE so the read of due rows and their lease happen
-- under the database's single write lock: ?1 the claim's token (text), ?2 the lease as a date
-- modifier ('+60.000 seconds'), ?3 most rows, ?4 workflows to leave alone (a JSON array), ?5
-- the payload limit in bytes, ?6 the batch's payload budget in bytes, ?7 the reason given to a
-- row over the limit, a printf() pattern whose %d is its size.
--
-- The same contract as PostgreSQL's claim: the same payload budget (`sized`: the first row,
-- then as long as the running total fits) and the same handling of payloads over the limit.
-- The same ordering rule as PostgreSQL's claim: a row with an ordering_key waits while an
-- earlier row of its group is neither done nor a released dead row (ferry_outbox_order answers
-- the probe); the write lock makes the probe and the lease one step.
-- octet_length of a column reads the size from the record header, not the value; the one
-- rewrite of an oversized row that makes it dead is the only time SQLite reads it again, and
-- its payload is not returned.
WITH due AS (
    SELECT id, due_at, octet_length(payload) AS bytes FROM ferry_outbox c
     WHERE state IN ('pending', 'retry_wait', 'sending')
       AND due_at <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
       AND workflow NOT IN (SELECT value FROM json_each(?4))
       AND (c.ordering_key IS NULL OR NOT EXISTS (
            SELECT 1 FROM ferry_outbox e
             WHERE e.ordering_key = c.ordering_key AND e.id < c.id AND e.state <> 'done'
               AND (e.state <> 'dead' OR e.released_at IS NULL)))
     ORDER BY due_at LIMIT ?3),
sized AS (
    SELECT id, row_number() OVER w AS n,
           sum(CASE WHEN bytes > ?5 THEN 0 ELSE bytes END) OVER w AS running
      FROM due
    WINDOW w AS (ORDER BY due_at, id ROWS UNBOUNDED PRECEDING))
UPDATE ferry_outbox SET
       state = CASE WHEN octet_length(payload) > ?5 THEN 'dead' ELSE 'sending' END,
       claim_token = CASE WHEN octet_length(payload) > ?5 THEN NULL ELSE ?1 END,
       attempts = CASE WHEN octet_length(payload) > ?5 THEN attempts ELSE attempts + 1 END,
       due_at = CASE WHEN octet_length(payload) > ?5 THEN due_at
                     ELSE strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?2) END,
       last_error = CASE WHEN octet_length(payload) > ?5
                         THEN printf(?7, octet_length(payload)) ELSE last_error END,
       last_status = CASE WHEN octet_length(payload) > ?5 THEN NULL ELSE last_status END,
       updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
 WHERE id IN (SELECT id FROM sized WHERE n = 1 OR running <= ?6)
RETURNING id, workflow, key,
          CASE WHEN octet_length(payload) > ?5 THEN NULL ELSE payload END AS payload,
          attempts, created_at, octet_length(payload) AS payload_bytes
