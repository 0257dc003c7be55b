-- Ferry outbox, SQLite, eighth migration: replay (ferry replay). See
-- migrations/postgres/0008_replay.sql.
ALTER TABLE ferry_outbox ADD COLUMN replay_of INTEGER;
