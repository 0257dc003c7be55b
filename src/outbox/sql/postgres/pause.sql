-- Pause: $1 kind ('workflow' or 'target'), $2 name, $3 who, $4 why. Pausing again keeps the
-- first time and takes the latest who and why.
INSERT INTO ferry_paused (kind, name, paused_by, reason) VALUES ($1, $2, $3, $4)
ON CONFLICT (kind, name) DO UPDATE SET paused_by = excluded.paused_by, reason = excluded.reason
