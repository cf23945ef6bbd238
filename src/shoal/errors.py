"""Errors shoal raises for user mistakes.

A :class:`ShoalError` is a user error: the CLI prints its message (no traceback) and exits
with status 2. Its message names what is wrong (the step, the dimension) and how to fix it.
"""

from __future__ import annotations


class ShoalError(Exception):
    """A user error: bad definition, bad command line, bad state on disk."""

    exit_code = 2


class SpecError(ShoalError):
    """An invalid experiment definition (grid, steps, dependencies, templates)."""


class ConfigError(ShoalError):
    """A bad ``--config`` value, config file, or unknown config key."""


class LockedError(ShoalError):
    """Another controller holds the run root."""
