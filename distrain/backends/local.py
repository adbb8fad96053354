"""The ``local`` backend: one process, no MPI. Collectives return copies of their inputs."""
from __future__ import annotations

import os
import sys

import numpy as np

from distrain.backends.base import Backend
from distrain.environment import World
from distrain.engine.fusion import DEFAULT_CHUNK_BYTES, DEFAULT_FUSION_THRESHOLD
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


class LocalBackend(Backend):
    """Size 1. Compression still casts, so results match what one rank of many would see."""

    name = "local"

    def __init__(self, world: World | None = None):
        super().__init__(world or World())
        self.engine = FusedEngine(SelfTransport(), DEFAULT_FUSION_THRESHOLD,
                                  DEFAULT_CHUNK_BYTES)

    def allreduce(self, arrays, op, compression_dtype, label):
        return self.engine.allreduce(arrays, op, compression_dtype)

    def broadcast(self, arrays, root, label):
        return self.engine.broadcast(arrays, root, True)

    def allgather(self, array, label):
        return self.engine.allgather(np.ascontiguousarray(array), [array.shape[0]])

    def gather_objects(self, obj):
        return [obj]

    def barrier(self):
        pass

    def abort(self, code):
        sys.stderr.flush()
        os._exit(code)
