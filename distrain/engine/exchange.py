"""Alltoall and reducescatter over a transport: how rows are split, packed and unpacked.

Both move the first dimension of tensors between ranks. Horovod's split of a first dimension
of ``n`` rows over ``size`` ranks gives every rank ``n // size`` rows and the first
``n % size`` ranks one more (:func:`even_split`). A grouped reducescatter packs every tensor's
rows for rank 0, then for rank 1, ... into one buffer per wire dtype, so each dtype is one
``Reduce_scatter`` call whatever the number of tensors.

Example:
    >>> even_split(10, 4)
    [3, 3, 2, 2]
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from distrain.engine.buffers import FLOAT_DTYPES, aligned_empty, wire_dtype_for
from distrain.ops import ReduceOp

__all__ = ["even_split", "alltoall", "reducescatter", "splits_problem"]


def even_split(rows: int, size: int) -> list[int]:
    """Horovod's split of ``rows`` over ``size`` ranks: the first ``rows % size`` get one
    more."""
    base, extra = divmod(int(rows), size)
    return [base + (r < extra) for r in range(size)]


def _row_elements(array: np.ndarray) -> int:
    return math.prod(array.shape[1:])


def alltoall(transport, array: np.ndarray, send_rows: Sequence[int],
             recv_rows: Sequence[int]) -> np.ndarray:
    """Sends ``send_rows[r]`` consecutive rows of ``array`` to rank ``r``; receives
    ``recv_rows[r]`` rows from each.

    Args:
        transport: moves the bytes (``alltoallv`` of uint8 buffers).
        array: this rank's C-contiguous array (at least 1-D).
        send_rows: rows for each rank, summing to ``array.shape[0]``.
        recv_rows: rows from each rank.

    Returns:
        An aligned array of ``sum(recv_rows)`` rows, rank 0's first.
    """
    row_bytes = _row_elements(array) * array.itemsize
    out = aligned_empty((int(sum(recv_rows)),) + tuple(array.shape[1:]), array.dtype)
    transport.alltoallv(array.reshape(-1).view(np.uint8), out.reshape(-1).view(np.uint8),
                        [int(r) * row_bytes for r in send_rows],
                        [int(r) * row_bytes for r in recv_rows])
    return out


def reducescatter(transport, rank: int, arrays: Sequence[np.ndarray], op: ReduceOp,
                  wire_dtype: str | None = None) -> list[np.ndarray]:
    """Reduces every array across ranks and keeps this rank's rows of each.

    Args:
        transport: moves the bytes (``reduce_scatter`` of typed buffers).
        rank: this rank.
        arrays: C-contiguous arrays of at least one dimension, the same on every rank.
        op: Sum or Average (Average: floats scaled by 1/size before the sum, integers
            divided after it, rounding toward zero).
        wire_dtype: the wire dtype of floating-point arrays, or None.

    Returns:
        Aligned arrays: ``even_split(a.shape[0], size)[rank]`` rows of each input.
    """
    size = transport.size
    splits = [even_split(a.shape[0], size) for a in arrays]
    outputs: list = [None] * len(arrays)
    groups: dict = {}
    for index, a in enumerate(arrays):
        groups.setdefault(wire_dtype_for(a.dtype, wire_dtype), []).append(index)
    for dtype, members in groups.items():
        counts = [sum(splits[i][r] * _row_elements(arrays[i]) for i in members)
                  for r in range(size)]
        prescale = op is ReduceOp.AVERAGE and size > 1 and dtype in FLOAT_DTYPES
        if len(members) == 1 and arrays[members[0]].dtype == dtype and \
                op is not ReduceOp.AVERAGE:
            # one array on the wire as it is: its ranks' rows are already in rank order
            i = members[0]
            out = aligned_empty((splits[i][rank],) + tuple(arrays[i].shape[1:]), dtype)
            transport.reduce_scatter(arrays[i].reshape(-1), out.reshape(-1), counts, op)
            outputs[i] = out
            continue
        send = aligned_empty((sum(counts),), dtype)
        at = 0
        for r in range(size):
            for i in members:
                rows, row = splits[i][r], _row_elements(arrays[i])
                first = sum(splits[i][:r])
                src = arrays[i].reshape(-1)[first * row:(first + rows) * row]
                dst = send[at:at + src.size]
                if prescale:
                    np.multiply(src, np.float32(1.0 / size), out=dst, casting="unsafe")
                else:
                    np.copyto(dst, src, casting="unsafe")
                at += rows * row
        recv = aligned_empty((counts[rank],), dtype)
        transport.reduce_scatter(send, recv, counts, op)
        at = 0
        for i in members:
            shape = (splits[i][rank],) + tuple(arrays[i].shape[1:])
            out = aligned_empty(shape, arrays[i].dtype)
            np.copyto(out.reshape(-1), recv[at:at + out.size], casting="unsafe")
            at += out.size
            if op is ReduceOp.AVERAGE and not prescale and size > 1:
                if out.dtype in FLOAT_DTYPES:
                    np.multiply(out, np.asarray(1.0 / size, out.dtype), out=out)
                else:
                    out[...] = np.trunc(out / size)
            outputs[i] = out
    return outputs


def splits_problem(array, splits, size: int) -> str:
    """What is wrong with an alltoall's arguments on this rank ('' when nothing), in
    Horovod's words."""
    if array.ndim == 0:
        return "alltoall needs a tensor of at least one dimension, not a scalar"
    rows = array.shape[0]
    if splits is None:
        return "" if rows % size == 0 else (
            "splits not provided, but first dimension of tensor is not an even multiple of "
            "the number of workers.")
    if len(splits) != size:
        return "Number of entries in splits does not equal number of workers."
    if any(s < 0 for s in splits):
        return "splits entries must not be negative."
    if sum(splits) > rows:
        return "Sum of splits entries is greater than the first dimension of tensor."
    return ""
