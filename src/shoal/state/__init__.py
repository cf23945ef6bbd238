"""The store of tasks and attempts (SQLite, WAL), task statuses, result files, the root lock.
Knows nothing of scheduling.
"""
