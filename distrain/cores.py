"""A host's cores and each rank's share of them: the one count of cores in distrain.

The launcher, the rank wrapper (which gives each program its thread defaults), the training
program and the benchmarks all ask here. Standard library only: the rank wrapper, started as
``python -I -S``, imports it.
"""
from __future__ import annotations

import os

__all__ = ["usable_cores", "threads_per_rank", "thread_defaults"]


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, or the host's count off Linux."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def threads_per_rank(local_size: int, cores: int | None = None) -> int:
    """A rank's fair share of the host's cores, at least 1.

    Args:
        local_size: the number of ranks on this host.
        cores: the cores to share; :func:`usable_cores` when None.

    Example:
        >>> threads_per_rank(3, cores=8)
        2
    """
    cores = usable_cores() if cores is None else cores
    return max(1, cores // max(1, local_size))


def thread_defaults(environ, names, local_size: int, cores: int) -> dict[str, str]:
    """The thread-count variables to add for one rank.

    Args:
        environ: the rank's environment; variables set there (non-empty) are kept.
        names: the thread-count variables (``OMP_NUM_THREADS``, ``TF_NUM_INTRAOP_THREADS``).
        local_size: the number of ranks on this host.
        cores: the cores this process may run on.

    Returns:
        ``{name: str(threads_per_rank(local_size, cores))}`` for each name not yet set.
    """
    threads = str(threads_per_rank(local_size, cores))
    return {name: threads for name in names if not environ.get(name)}
