"""Aligned host buffers and the numpy dtypes distrain moves over the wire.

TensorFlow adopts a host buffer without copying (through DLPack, or as a ``numpy_function``
result) only when it is aligned to 64 bytes; numpy's own allocations are aligned to 16.
"""
from __future__ import annotations

import math
import sys
import threading

import numpy as np

__all__ = ["ALIGNMENT", "aligned_empty", "aligned_like", "is_aligned", "bfloat16",
           "wire_dtype_for", "FLOAT_DTYPES", "pooled_bytes"]

ALIGNMENT = 64

try:  # ml_dtypes ships with TensorFlow; distrain's numpy-only paths work without it.
    from ml_dtypes import bfloat16
except ImportError:  # pragma: no cover - TensorFlow always brings ml_dtypes
    bfloat16 = None

FLOAT_DTYPES = tuple(np.dtype(d) for d in ("float16", "float32", "float64")) + (
    (np.dtype(bfloat16),) if bfloat16 is not None else ())


def aligned_empty(shape, dtype) -> np.ndarray:
    """Allocates an uninitialised C-contiguous array whose data starts on a 64-byte boundary.

    Args:
        shape: the array's shape.
        dtype: its dtype.

    Returns:
        A writable array that TensorFlow can adopt without a copy.
    """
    dtype = np.dtype(dtype)
    shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(shape)
    count = math.prod(int(d) for d in shape)
    nbytes = count * dtype.itemsize
    raw = _raw(nbytes + ALIGNMENT)
    start = (-raw.ctypes.data) % ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


_POOL_MIN_BYTES = 1 << 20       # smaller allocations come from malloc's own free lists
_POOL_MAX_BUFFERS = 16
_POOL_MAX_BYTES = 1 << 30
_pool: list[np.ndarray] = []      # large allocations, handed out again once unreferenced
_pool_lock = threading.Lock()


def _references(buffers: list) -> list[int]:
    """How many references each buffer has, counted the same way for every call."""
    return [sys.getrefcount(b) for _, b in enumerate(buffers)]


# What _references counts for a pooled buffer nothing else refers to (the pool's list, the
# loop's name and the argument), measured through the same function.
_IDLE_REFS = _references([np.empty(0, np.uint8)])[0]


def _raw(nbytes: int) -> np.ndarray:
    """``nbytes`` of uint8, from the pool when an unreferenced buffer fits.

    A large fresh allocation is mapped anew by malloc and costs a page fault per 4 KiB on
    first touch (a 64 MB result: 14-20 ms here, against 6 ms to write it once mapped). Every
    view of a buffer (a result, a tensor TensorFlow adopted through DLPack) holds a
    reference to it, so a buffer whose only references are the pool's is free to reuse.
    """
    if nbytes < _POOL_MIN_BYTES:
        return np.empty(nbytes, np.uint8)
    with _pool_lock:
        for index, refs in enumerate(_references(_pool)):
            if refs <= _IDLE_REFS and nbytes <= _pool[index].size <= 2 * nbytes:
                raw = _pool.pop(index)
                _pool.append(raw)      # most recently used last
                return raw[:nbytes]
        raw = np.empty(nbytes, np.uint8)
        idle = [i for i, refs in enumerate(_references(_pool)) if refs <= _IDLE_REFS]
        while idle and (len(_pool) >= _POOL_MAX_BUFFERS or
                        sum(b.size for b in _pool) + nbytes > _POOL_MAX_BYTES):
            del _pool[idle.pop(0)]    # the least recently used first
            idle = [i - 1 for i in idle]
        if len(_pool) < _POOL_MAX_BUFFERS and \
                sum(b.size for b in _pool) + nbytes <= _POOL_MAX_BYTES:
            _pool.append(raw)         # else every pooled buffer is in use: not kept
        return raw[:nbytes]


def pooled_bytes() -> int:
    """The bytes of the large buffers the pool keeps for reuse (in use or idle)."""
    with _pool_lock:
        return sum(b.size for b in _pool)


def aligned_like(arrays) -> tuple[np.ndarray, list[np.ndarray]]:
    """Uninitialised arrays shaped as ``arrays``, each on a 64-byte boundary, carved from one
    allocation (one ``aligned_empty`` per tensor cost a 47-tensor allreduce 0.45 ms).

    Args:
        arrays: arrays (or anything with ``shape``, ``dtype`` and ``nbytes``).

    Returns:
        ``(block, views)``: the uint8 allocation, and one writable array per input in it,
        none overlapping another.
    """
    offsets, cursor = [], 0
    for a in arrays:
        offsets.append(cursor)
        cursor += -(-a.nbytes // ALIGNMENT) * ALIGNMENT
    block = aligned_empty((cursor,), np.uint8)
    return block, [block[o:o + a.nbytes].view(a.dtype).reshape(a.shape)
                   for a, o in zip(arrays, offsets)]


def is_aligned(array: np.ndarray) -> bool:
    """True when ``array`` starts on a 64-byte boundary."""
    return array.ctypes.data % ALIGNMENT == 0


def wire_dtype_for(dtype, wire_dtype: str | None) -> np.dtype:
    """The dtype a tensor travels in: the compression's for wider floats, else its own.

    Args:
        dtype: the tensor's dtype.
        wire_dtype: the compression's wire dtype, ``"float16"``, ``"bfloat16"`` or None.

    Returns:
        The wire dtype.
    """
    dtype = np.dtype(dtype)
    if wire_dtype is None or dtype not in FLOAT_DTYPES:
        return dtype
    narrow = np.dtype(bfloat16) if wire_dtype == "bfloat16" else np.dtype(wire_dtype)
    return narrow if narrow.itemsize < dtype.itemsize else dtype
