"""Run one task, a bundle or a pack anywhere: folder, env, log, call or command, atomic result
file. Knows nothing of the database.
"""
