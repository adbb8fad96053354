"""Errors every rank raises together.

A problem that only some ranks see (rank 0's checkpoint directory, one rank's shard) must end
every rank the same way, instead of leaving the others waiting in the next collective.
"""
from __future__ import annotations

from typing import Callable, TypeVar

from distrain import collectives
from distrain.errors import UsageError

__all__ = ["agree"]

T = TypeVar("T")


def agree(action: Callable[[], T]) -> T:
    """Runs ``action`` on every rank; if any rank raises UsageError, every rank raises it.

    Args:
        action: what to run; every rank calls ``agree`` at the same point.

    Returns:
        ``action()``'s value.

    Raises:
        UsageError: the first rank's problem, on every rank, when any rank had one.
    """
    try:
        value, problem = action(), None
    except UsageError as exc:
        value, problem = None, str(exc)
    if collectives.size() > 1:
        problems = collectives.allgather_object(problem)
        problem = next((p for p in problems if p), None)
    if problem:
        raise UsageError(problem)
    return value
