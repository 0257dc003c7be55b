-- Changes whenever another connection or process commits to the database file.
PRAGMA data_version
