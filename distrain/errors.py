"""Errors a user can fix, reported as one line and exit code 2
(:attr:`distrain.protocol.ExitCode.USAGE`)."""
from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """Bad input: the message names the problem and what to do instead."""
