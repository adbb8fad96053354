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
process set, the raw call on the matching sub-communicator; the other ranks wait. Each
figure is the slowest rank's median over ``--iters`` runs after ``--warmup``, a barrier
before each.
"""
from __future__ import annotations

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


def run(op: str, megabytes: float, process_set, iters: int, warmup: int,
        median_time) -> dict | None:
    """Times ``op`` both ways; returns the figures on the set's first rank, None elsewhere.

    Args:
        op: one of :data:`OPS`.
        megabytes: the tensor's size.
        process_set: a registered process set (``collectives.global_process_set`` for all).
        iters, warmup: timed and untimed repetitions.
        median_time: ``(fn, comm, iters, warmup) -> slowest rank's median seconds``.
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
        raw = median_time(_raw_call(op, sub, MPI, data), sub, iters, warmup)
        ours = median_time(_distrain_call(op, tensor, part_tensor, process_set, members[0]),
                           sub, iters, warmup)
        if sub.Get_rank() == 0:
            result = {"op": op, "ranks": size, "process_set": members if subset else None,
                      "megabytes": round(count * 4 / 1e6, 1),
                      "distrain_ms": round(ours * 1e3, 2), "raw_mpi_ms": round(raw * 1e3, 2),
                      "ratio": round(ours / raw, 3) if raw > 0 else None}
        sub.Free()
    world.Barrier()
    return result
