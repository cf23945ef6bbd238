"""Steps x grid into tasks, edges by projection, input files, fingerprints; what runs and why.
Knows nothing of how tasks run.
"""
