"""The job index: a SQLite file on the head node, one row per job and restart (docs/jobindex.md)."""
