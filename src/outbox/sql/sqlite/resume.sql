-- Resume: ?1 kind, ?2 name (the store wakes its relays; other processes see the commit).
DELETE FROM ferry_paused WHERE kind = ?1 AND name = ?2
