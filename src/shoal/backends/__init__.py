"""Backends: where tasks run. ``local`` (a pool of worker processes) and, later, ``slurm``."""
