-- Ferry outbox, SQLite, eighth migration: replay (ferry replay). See
-- migrations/postgres/0008_replay.sql.
ALTER TABLE ferry_outbox ADD COLUMN replay_of INTEGER;

CREATE INDEX ferry_outbox_replay ON ferry_outbox (replay_of) WHERE replay_of IS NOT NULL;
