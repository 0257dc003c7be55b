-- The schema whose notifications this relay's waiter answers (the NOTIFY payload).
SELECT current_schema()::text
