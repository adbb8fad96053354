"""The host's share of a grouped allreduce, timed on the gradients' real shapes.

Everything distrain's allreduce does on this rank besides moving bytes between ranks: taking
TensorFlow's memory as numpy arrays, building and hashing the signature the ranks compare,
planning the fusion, packing small tensors into buckets (with the averaging pre-scale),
unpacking, scaling large tensors, and handing the results back to TensorFlow. It runs the
backend's own code over a negotiation and a transport that send nothing
(:func:`distrain.backends.host_share_backend`), so the measured time is the allreduce less
its messages; :class:`distrain.costmodel.ring.CommModel` adds those.

With one rank the backend is the local one (a copy), so the term is the whole allreduce.
"""
from __future__ import annotations

from distrain.backends import host_share_backend
from distrain.engine.tensors import Kind, from_numpy, to_numpy
from distrain.ops import ReduceOp

__all__ = ["host_allreduce"]


def host_allreduce(gradients: list, size: int, fusion_threshold: int, chunk_bytes: int,
                   wire_dtype: str | None = None):
    """A zero-argument callable doing this rank's share of averaging ``gradients``.

    Args:
        gradients: tensors with the shapes and dtypes of the model's gradients.
        size: the world size the allreduce runs at (it decides the averaging passes).
        fusion_threshold: the fusion bucket size.
        chunk_bytes: the largest message.
        wire_dtype: the compression's wire dtype (its casts are part of the host's share).

    Returns:
        The callable; it returns the averaged tensors, fresh each call, as the real
        allreduce does, so the optimizer update can be timed on them.
    """
    backend = host_share_backend(size, fusion_threshold, chunk_bytes)

    def run():
        arrays = [to_numpy(g) for g in gradients]
        outputs = backend.allreduce(arrays, ReduceOp.AVERAGE, wire_dtype, "host share")
        return [from_numpy(o, Kind.TENSOR) for o in outputs]

    return run
