"""The host's share of a grouped allreduce, timed on the gradients' real shapes.

Everything distrain's allreduce does on this rank besides moving bytes between ranks: taking
TensorFlow's memory as numpy arrays, building the signature the ranks compare, planning the
fusion, packing small tensors into buckets (with the averaging pre-scale), unpacking,
scaling large tensors, and handing the results back to TensorFlow. It runs the same engine
the backends run, over a transport that moves nothing between ranks, so the measured time
is the allreduce less its messages; :class:`distrain.costmodel.ring.CommModel` adds those.

With one rank the transport is the local backend's own (a copy), so the term is the whole
allreduce.
"""
from __future__ import annotations

from distrain.backends.local import SelfTransport
from distrain.backends.mpi import allreduce_signature, signature_hash
from distrain.ops import ReduceOp
from distrain.engine.fused import FusedEngine
from distrain.engine.tensors import Kind, from_numpy, to_numpy

__all__ = ["host_allreduce"]


class _NoWire:
    """A transport of ``size`` ranks whose messages take no time: reductions leave the
    output as it is."""

    def __init__(self, size: int):
        self.size = size

    def allreduce(self, send, recv, op):
        pass


def host_allreduce(gradients: list, size: int, fusion_threshold: int, chunk_bytes: int):
    """A zero-argument callable doing this rank's share of averaging ``gradients``.

    Args:
        gradients: tensors with the shapes and dtypes of the model's gradients.
        size: the world size the allreduce runs at (it decides the averaging passes).
        fusion_threshold: the fusion bucket size.
        chunk_bytes: the largest message.

    Returns:
        The callable; it returns the averaged tensors, fresh each call, as the real
        allreduce does, so the optimizer update can be timed on them.
    """
    transport = SelfTransport() if size <= 1 else _NoWire(size)
    engine = FusedEngine(transport, fusion_threshold, chunk_bytes)

    def run():
        arrays = [to_numpy(g) for g in gradients]
        if size > 1:
            signature_hash("allreduce|" + allreduce_signature(ReduceOp.AVERAGE, None, arrays))
        outputs = engine.allreduce(arrays, ReduceOp.AVERAGE, None)
        return [from_numpy(o, Kind.TENSOR) for o in outputs]

    return run
