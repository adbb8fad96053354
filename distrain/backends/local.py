"""The ``local`` backend: one process, no MPI. Collectives return copies of their inputs."""
from __future__ import annotations

import os
import sys

import numpy as np

from distrain.backends.base import CollectiveArgumentError, EngineBackend
from distrain.environment import World
from distrain.ops import ReduceOp
from distrain.engine.fusion import DEFAULT_FUSION_THRESHOLD, ONE_HOST_CHUNK_BYTES
from distrain.engine.exchange import alltoall, reducescatter, splits_problem
from distrain.engine.fused import FusedEngine

__all__ = ["LocalBackend", "SelfTransport"]


class SelfTransport:
    """A world of one: in-place reductions are no-ops; the rest copies."""

    size = 1

    def allreduce(self, send, recv, op):
        if send is not None:
            recv[...] = send

    def bcast(self, buf, root):
        pass

    def allgatherv(self, send, recv, counts):
        recv[:send.size] = send

    def alltoallv(self, send, recv, send_counts, recv_counts):
        recv[:send.size] = send

    def reduce_scatter(self, send, recv, counts, op):
        recv[...] = send

    def sendrecv(self, send, recv, peer):
        recv[...] = send


class LocalBackend(EngineBackend):
    """Size 1. Compression still casts, so results match what one rank of many would see.

    Args:
        world: the launcher's description (rank 0 of 1 when None).
        fusion_threshold: the fusion bucket size.
        chunk_bytes: the largest message.
    """

    name = "local"

    def __init__(self, world: World | None = None,
                 fusion_threshold: int = DEFAULT_FUSION_THRESHOLD,
                 chunk_bytes: int = ONE_HOST_CHUNK_BYTES):
        super().__init__(world or World())
        self.engine = FusedEngine(SelfTransport(), fusion_threshold, chunk_bytes)

    def allreduce(self, arrays, op, wire_dtype, label):
        return self.engine.allreduce(arrays, op, wire_dtype)

    def broadcast(self, arrays, root, label):
        return self.engine.broadcast(arrays, root, True)

    def allgather(self, array, label):
        return self.engine.allgather(np.ascontiguousarray(array), [array.shape[0]])

    def alltoall(self, array, splits, label):
        problem = splits_problem(array, splits, 1)
        if problem:
            raise CollectiveArgumentError(problem)
        rows = [array.shape[0]] if splits is None else [int(splits[0])]
        return alltoall(self.engine.transport, np.ascontiguousarray(array), rows, rows), \
            np.asarray(rows, np.int32)

    def reducescatter(self, arrays, op, wire_dtype, label):
        return reducescatter(self.engine.transport, 0, arrays, op, wire_dtype)

    def subset(self, ranks):
        return self if list(ranks) == [0] else None

    def join(self):
        return 0

    def message_allreduce(self, buffer):
        self.engine.transport.allreduce(None, buffer, ReduceOp.SUM)

    def allgather_object(self, obj):
        return [obj]

    def barrier(self):
        pass

    def abort(self, code):
        sys.stderr.flush()
        os._exit(code)
