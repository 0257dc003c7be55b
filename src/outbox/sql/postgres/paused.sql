-- Everything paused, by kind and name.
SELECT kind, name, paused_by, reason, paused_at FROM ferry_paused ORDER BY kind, name
