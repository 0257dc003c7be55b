SELECT workflow, state, rows, oldest_due_age_s FROM ferry_status ORDER BY workflow, state
