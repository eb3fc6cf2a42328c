"""Errors that reach the user as one line and an exit code (0 ok, 1 gate/golden failed, 2 bad input,
3 internal, 4 the graph was busy for longer than the wait)."""
from __future__ import annotations


class PtError(Exception):
    exit_code = 3

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class UsageError(PtError):
    """Bad usage or bad input: a missing program, a wrong param, a broken rule file, no workspace."""

    exit_code = 2


class Busy(PtError):
    """Another process kept the graph locked for longer than the wait (PT_LOCK_WAIT): try again."""

    exit_code = 4


class GateFailed(PtError):
    """A gate or golden check failed; the message says which."""

    exit_code = 1


class InternalError(PtError):
    exit_code = 3
