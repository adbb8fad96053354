"""Points where ranks wait for each other: barrier, and Horovod's join for uneven data.

A rank that runs out of data calls :func:`join`. Until every rank has joined, it takes part
in the others' allreduces with zeros (an Average still divides by every rank, as in
Horovod), so their training goes on; any other collective raises on the live ranks, as in
Horovod. ``join`` returns the rank that joined last, the same on every rank.

Example:
    >>> for batch in my_shard:                 # doctest: +SKIP
    ...     train_step(batch)                  # its allreduces go on past the shorter shards
    >>> last = hvd.join()                      # doctest: +SKIP
"""
from __future__ import annotations

from distrain import runtime
from distrain.engine.bucket_queue import drain_process_queue
from distrain.op_bridge import horovod_errors
from distrain.process_sets import backend_for

__all__ = ["barrier", "join"]


def barrier(process_set=None) -> None:
    """Returns once every rank (of ``process_set``, all by default) has called it."""
    active = backend_for(process_set, "Barrier")
    drain_process_queue()
    active.barrier()


@horovod_errors
def join() -> int:
    """Waits, taking part in the other ranks' allreduces with zeros, until every rank has
    joined.

    Returns:
        The global rank that joined last.

    Raises:
        ValueError: the negotiation is off (``DISTRAIN_CHECK_SIGNATURES=0``).
    """
    active = runtime.backend()
    drain_process_queue()
    return active.join()
