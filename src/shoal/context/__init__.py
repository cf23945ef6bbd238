"""What user code sees: ctx (params, folders, upstream results, checkpoints, should_stop).
Knows nothing of backends.
"""
