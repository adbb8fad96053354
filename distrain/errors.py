"""Errors a user can fix, reported as one line and exit code 2."""
from __future__ import annotations

__all__ = ["UsageError", "USAGE_EXIT_CODE"]

USAGE_EXIT_CODE = 2


class UsageError(Exception):
    """Bad input: the message names the problem and what to do instead."""
