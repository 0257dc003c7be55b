SELECT max(id) FROM ferry_attempts
