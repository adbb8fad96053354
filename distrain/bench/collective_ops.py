"""``python -m distrain.bench allreduce --op alltoall|reducescatter|allgather|broadcast``:
one distrain collective against the matching raw mpi4py call on the same bytes.

| ``--op`` | distrain | raw mpi4py |
|---|---|---|
| allreduce (with ``--process-set``) | ``allreduce(t, op=Sum)`` | ``Allreduce`` |
| alltoall | ``alltoall(t)`` (even split) | ``Alltoallv`` |
| reducescatter | ``reducescatter(t, op=Sum)`` | ``Reduce_scatter`` |
| allgather | ``allgather(t)`` (each rank's part) | ``Allgatherv`` |
| broadcast | ``broadcast(t, root_rank=0)`` | ``Bcast`` |

``t`` is a float32 ``tf.Tensor`` of ``--megabytes`` (each rank's part of it for allgather).
With ``--process-set R,R,...`` both run on those ranks only: distrain's on a registered
process set, the raw call on the matching sub-communicator; the other ranks wait. The two
calls alternate (raw first on even iterations, distrain first on odd ones), so both see
the same state of the host; each figure is the slowest rank's median over ``--iters``
runs after ``--warmup``, a barrier before each.

Run it under ``distrain-run``: its ranks allocate on transparent huge pages
(:func:`distrain.run.command.with_huge_pages`). Under a bare ``mpirun`` a tensor's memory
is on 4 KiB pages while the raw call's numpy buffers are on huge pages, and Open MPI's
single-copy transfer reads the former up to 3x slower.
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from distrain import collectives
from distrain.ops import Sum

__all__ = ["OPS", "run"]

OPS = ("allreduce", "alltoall", "reducescatter", "allgather", "broadcast")


def _raw_call(op: str, comm, MPI, data: np.ndarray):
    """The raw mpi4py call of ``op`` on ``data`` over ``comm``, as a function of no argument."""
    size = comm.Get_size()
    out = np.empty_like(data)
    part = data.size // size
    counts = [part] * size
    displs = [i * part for i in range(size)]
    if op == "allreduce":
        return lambda: comm.Allreduce([data, MPI.FLOAT], [out, MPI.FLOAT], MPI.SUM)
    if op == "alltoall":
        return lambda: comm.Alltoallv([data, (counts, displs), MPI.FLOAT],
                                      [out, (counts, displs), MPI.FLOAT])
    if op == "reducescatter":
        mine = np.empty(part, np.float32)
        return lambda: comm.Reduce_scatter([data[:part * size], MPI.FLOAT],
                                           [mine, MPI.FLOAT], counts, MPI.SUM)
    if op == "allgather":
        return lambda: comm.Allgatherv([data[:part], MPI.FLOAT],
                                       [out, (counts, displs), MPI.FLOAT])
    return lambda: comm.Bcast([data, MPI.FLOAT], 0)


def _distrain_call(op: str, tensor, part_tensor, process_set, root: int):
    if op == "allreduce":
        return lambda: collectives.allreduce(tensor, op=Sum, process_set=process_set)
    if op == "alltoall":
        return lambda: collectives.alltoall(tensor, process_set=process_set)
    if op == "reducescatter":
        return lambda: collectives.reducescatter(tensor, op=Sum, process_set=process_set)
    if op == "allgather":
        return lambda: collectives.allgather(part_tensor, process_set=process_set)
    return lambda: collectives.broadcast(tensor, root_rank=root, process_set=process_set)


def paired_times(fns, comm, iters: int, warmup: int) -> list[list[float]]:
    """This rank's seconds of each of ``fns`` in each timed iteration (``[fn][iteration]``),
    called in turn (the order reversed every other iteration), a barrier before each call."""
    times: list[list[float]] = [[] for _ in fns]
    for iteration in range(warmup + iters):
        order = range(len(fns)) if iteration % 2 == 0 else reversed(range(len(fns)))
        for index in order:
            comm.Barrier()
            start = time.perf_counter()
            fns[index]()
            if iteration >= warmup:
                times[index].append(time.perf_counter() - start)
    return times


def paired_medians(fns, comm, iters: int, warmup: int) -> list[float]:
    """The slowest rank's median seconds of each of ``fns``, timed by :func:`paired_times`."""
    from mpi4py import MPI

    return [comm.allreduce(statistics.median(t), op=MPI.MAX)
            for t in paired_times(fns, comm, iters, warmup)]


def run(op: str, megabytes: float, process_set, iters: int, warmup: int) -> dict | None:
    """Times ``op`` both ways; returns the figures on the set's first rank, None elsewhere.

    Args:
        op: one of :data:`OPS`.
        megabytes: the tensor's size.
        process_set: a registered process set (``collectives.global_process_set`` for all).
        iters, warmup: timed and untimed repetitions.
    """
    import tensorflow as tf
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    rank = world.Get_rank()
    members = process_set.ranks
    subset = process_set is not collectives.global_process_set
    sub = world.Split(0 if rank in members else MPI.UNDEFINED, key=rank)
    result = None
    if rank in members:
        size = sub.Get_size()
        count = max(size, int(megabytes * 1e6 // 4) // size * size)
        data = np.random.default_rng(rank).standard_normal(count).astype(np.float32)
        tensor = tf.constant(data)
        part_tensor = tf.constant(data[:count // size])
        raw, ours = paired_medians(
            [_raw_call(op, sub, MPI, data),
             _distrain_call(op, tensor, part_tensor, process_set, members[0])],
            sub, iters, warmup)
        if sub.Get_rank() == 0:
            result = {"op": op, "ranks": size, "process_set": members if subset else None,
                      "megabytes": round(count * 4 / 1e6, 1),
                      "distrain_ms": round(ours * 1e3, 2), "raw_mpi_ms": round(raw * 1e3, 2),
                      "ratio": round(ours / raw, 3) if raw > 0 else None}
        sub.Free()
    world.Barrier()
    return result
