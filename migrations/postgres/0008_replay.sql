-- Ferry outbox, PostgreSQL, eighth migration: replay (ferry replay).
--
-- A replay sends a delivered document again on purpose: a NEW row (its own id, so a new
-- Idempotency-Key, and its own attempt history) whose replay_of names the original. The
-- original stays done. UNIQUE (workflow, key) is kept, so a replay takes the key
-- '<original key>#replay-<n>' (n = 1, 2, … per original). The workflow's on_done SQL is not run
-- for a replay (the original's already ran, and the replay's :key is not the business key).
--
-- A nullable column without a default rewrites nothing; no foreign key, so pruning the
-- original (done rows are pruned) leaves the replay's pointer as history.
ALTER TABLE ferry_outbox ADD COLUMN replay_of BIGINT;

COMMENT ON COLUMN ferry_outbox.replay_of IS
    'Set on a row made by ferry replay: the id of the delivered row it sends again.';

-- The replays of one original (their count names the next replay's key); tiny: only replays.
CREATE INDEX ferry_outbox_replay ON ferry_outbox (replay_of) WHERE replay_of IS NOT NULL;
