"""The definition: Experiment, Grid, Step, what a step needs around it, resources, checks.
Knows nothing of files or processes.
"""
