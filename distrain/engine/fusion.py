"""Tensor fusion: how a list of tensors is cut into MPI messages.

Small tensors are packed into one buffer per wire dtype ("bucket") up to the fusion threshold,
so one collective carries many of them. Large tensors that need no cast are reduced straight
from their own memory: copying them into a bucket would cost a pass over memory that the
reduction itself does not need. Every message is then split into chunks of at most
``chunk_bytes``, because mid-sized messages reduce faster than one very large one. The
default depends on where the ranks are: 16 MiB when they share one host (the size that did
best in both of this VM's shared-memory states), 1 MiB across hosts (over 1 Gbit TCP,
ResNet-50's allreduce took 1,243-1,348 ms in 1 MiB chunks against 1,563 ms in 16 MiB); see
docs/benchmarks.md.

The plan is a pure function of the tensors' shapes and dtypes, so every rank computes the same
plan and issues the same collectives in the same order.

Example:
    >>> plan_fusion([(4,), (1 << 20,)], ["float32", "float32"], threshold=1024,
    ...             direct_min_bytes=4096)
    [Direct(index=1), Bucket(dtype=dtype('float32'), members=(0,), offsets=(0,), count=4)]
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from distrain.engine.buffers import ALIGNMENT, wire_dtype_for

__all__ = ["Direct", "Bucket", "plan_fusion", "chunks", "DEFAULT_FUSION_THRESHOLD",
           "DEFAULT_CHUNK_BYTES", "ONE_HOST_CHUNK_BYTES", "default_chunk_bytes"]

DEFAULT_FUSION_THRESHOLD = 64 * 1024 * 1024
DEFAULT_CHUNK_BYTES = 1024 * 1024             # ranks on more than one host
ONE_HOST_CHUNK_BYTES = 16 * 1024 * 1024       # every rank on one host (shared memory)


def default_chunk_bytes(hosts: int) -> int:
    """The chunk size for a world spread over ``hosts`` hosts."""
    return ONE_HOST_CHUNK_BYTES if hosts <= 1 else DEFAULT_CHUNK_BYTES


@dataclasses.dataclass(frozen=True)
class Direct:
    """One tensor reduced from its own memory into a fresh output."""

    index: int


@dataclasses.dataclass(frozen=True)
class Bucket:
    """Tensors packed into one buffer of ``count`` elements of ``dtype``.

    Attributes:
        dtype: the wire dtype.
        members: indices of the tensors, in packing order.
        offsets: each member's first element in the buffer, on a 64-byte boundary (so a
            member's reduced values can be handed to TensorFlow in place).
        count: the buffer's length in elements, the padding between members included.
    """

    dtype: np.dtype
    members: tuple[int, ...]
    offsets: tuple[int, ...]
    count: int


def plan_fusion(shapes: Sequence[Sequence[int]], dtypes: Sequence, threshold: int,
                direct_min_bytes: int, wire_dtype: str | None = None):
    """Cuts a tensor list into direct reductions and fusion buckets.

    Args:
        shapes: each tensor's shape.
        dtypes: each tensor's dtype.
        threshold: the most bytes one bucket holds; 0 puts every tensor in its own message.
        direct_min_bytes: tensors this large that need no cast are reduced straight from
            their own memory; 0 or less: none is (every tensor is packed).
        wire_dtype: the wire dtype of floating-point tensors, or None.

    Returns:
        A list of :class:`Direct` and :class:`Bucket`, in the order they are issued. Empty
        tensors appear in none of them.
    """
    plan: list = []
    open_buckets: dict[np.dtype, list[tuple[int, int]]] = {}
    used: dict[np.dtype, int] = {}

    def close(dtype):
        members = open_buckets.pop(dtype)
        del used[dtype]
        offsets, cursor = [], 0
        step = max(1, ALIGNMENT // dtype.itemsize)
        for _, count in members:
            cursor = -(-cursor // step) * step
            offsets.append(cursor)
            cursor += count
        plan.append(Bucket(dtype, tuple(m[0] for m in members), tuple(offsets), cursor))

    for index, (shape, dtype) in enumerate(zip(shapes, dtypes)):
        dtype = np.dtype(dtype)
        count = math.prod(int(d) for d in shape)
        if count == 0:
            continue
        sent_as = wire_dtype_for(dtype, wire_dtype)
        nbytes = count * sent_as.itemsize
        if sent_as == dtype and 0 < direct_min_bytes <= nbytes:
            plan.append(Direct(index))
            continue
        if sent_as in open_buckets and used[sent_as] + nbytes > threshold:
            close(sent_as)
        open_buckets.setdefault(sent_as, []).append((index, count))
        used[sent_as] = used.get(sent_as, 0) + nbytes
    for dtype in list(open_buckets):
        close(dtype)
    return plan


def chunks(count: int, itemsize: int, chunk_bytes: int):
    """Yields ``(start, stop)`` element ranges of at most ``chunk_bytes`` each.

    Args:
        count: elements in the message.
        itemsize: bytes per element.
        chunk_bytes: the most bytes in one range; 0 or less means one range.
    """
    step = count if chunk_bytes <= 0 else max(1, chunk_bytes // itemsize)
    for start in range(0, count, step):
        yield start, min(count, start + step)
