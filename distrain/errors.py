"""Errors a user can fix, reported as one line and exit code 2."""
from __future__ import annotations

__all__ = ["UsageError", "USAGE_EXIT_CODE", "RESIZE_EXIT_CODE"]

USAGE_EXIT_CODE = 2
# Every rank of an elastic job exits with this after saving its checkpoint when distrain-run
# asked it to stop for a resize (EX_TEMPFAIL: "try again", at the new size).
RESIZE_EXIT_CODE = 75


class UsageError(Exception):
    """Bad input: the message names the problem and what to do instead."""
