"""The fused collective engine: pack, reduce or broadcast in chunks, unpack, scale.

It works on numpy arrays and knows nothing of MPI: a *transport* moves the bytes. Each pass
over memory is counted: a large tensor is reduced straight from its own memory into the
output that is returned; small tensors pay one packing copy, into which the averaging
pre-scale is folded, and are returned as views of the reduced buffer (each member starts on
a 64-byte boundary, so TensorFlow adopts it without copying). A bucket cast to a narrower
wire dtype is unpacked with one more copy, back into the tensors' own dtype. A float32
bucket sent as float16 is packed (and scaled) in float32 and converted in one pass where
:mod:`distrain.engine.halfprec` has a faster conversion than numpy's.
"""
from __future__ import annotations

import threading
from typing import Protocol, Sequence

import numpy as np

from distrain.engine.buffers import FLOAT_DTYPES, aligned_empty, aligned_like
from distrain.engine.fusion import Bucket, Direct, chunks, plan_fusion
from distrain.engine.halfprec import cast_into, fast_half
from distrain.ops import ReduceOp

__all__ = ["Transport", "FusedEngine"]

_PLANS_KEPT = 64


class Transport(Protocol):
    """Moves contiguous 1-D buffers between ranks."""

    size: int

    def allreduce(self, send: np.ndarray | None, recv: np.ndarray, op: ReduceOp) -> None:
        """Reduces ``send`` (or ``recv`` in place when ``send`` is None) into ``recv``."""

    def bcast(self, buf: np.ndarray, root: int) -> None:
        """Broadcasts a uint8 buffer from ``root``."""

    def allgatherv(self, send: np.ndarray, recv: np.ndarray, counts: Sequence[int]) -> None:
        """Gathers uint8 buffers of ``counts[r]`` bytes from each rank into ``recv``."""

    def alltoallv(self, send: np.ndarray, recv: np.ndarray, send_counts: Sequence[int],
                  recv_counts: Sequence[int]) -> None:
        """Sends ``send_counts[r]`` bytes of ``send`` to rank ``r``, in rank order; receives
        ``recv_counts[r]`` bytes from each into ``recv``."""

    def reduce_scatter(self, send: np.ndarray, recv: np.ndarray, counts: Sequence[int],
                       op: ReduceOp) -> None:
        """Reduces ``send`` across ranks; rank ``r`` keeps ``counts[r]`` elements of it."""

    def sendrecv(self, send: np.ndarray, recv: np.ndarray, peer: int) -> None:
        """Swaps uint8 buffers with rank ``peer``."""


class FusedEngine:
    """Runs grouped allreduce, broadcast and allgather over a transport.

    Args:
        transport: the byte mover.
        fusion_threshold: the most bytes one fusion bucket holds.
        chunk_bytes: the most bytes in one transport call.
    """

    def __init__(self, transport: Transport, fusion_threshold: int, chunk_bytes: int):
        self.transport = transport
        self.fusion_threshold = fusion_threshold
        self.chunk_bytes = chunk_bytes
        self._buffers: dict = {}   # by wire dtype, and "staging"
        self._plans: dict = {}
        self.lock = threading.RLock()

    def _plan(self, arrays, wire_dtype):
        """The fusion plan, remembered: a training step asks for the same one every time
        (planning resnet's 47 gradients took about half a millisecond a call)."""
        shapes, dtypes = tuple(a.shape for a in arrays), tuple(a.dtype for a in arrays)
        key = (shapes, dtypes, self.fusion_threshold, self.chunk_bytes, wire_dtype)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= _PLANS_KEPT:
                self._plans.clear()
            plan = self._plans[key] = plan_fusion(
                shapes, dtypes, threshold=self.fusion_threshold,
                direct_min_bytes=self.chunk_bytes, wire_dtype=wire_dtype)
        return plan

    def _fusion_buffer(self, dtype: np.dtype, count: int) -> np.ndarray:
        buf = self._buffers.get(dtype)
        if buf is None or buf.size < count:
            buf = aligned_empty((max(count, 1),), dtype)
            self._buffers[dtype] = buf
        return buf[:count]

    def _reduce(self, send: np.ndarray | None, recv: np.ndarray, op: ReduceOp) -> None:
        for start, stop in chunks(recv.size, recv.itemsize, self.chunk_bytes):
            self.transport.allreduce(None if send is None else send[start:stop],
                                     recv[start:stop], op)

    def allreduce(self, arrays: Sequence[np.ndarray], op: ReduceOp,
                  wire_dtype: str | None = None) -> list[np.ndarray]:
        """Reduces every array across ranks.

        Args:
            arrays: C-contiguous arrays, the same shapes and dtypes on every rank.
            op: the reduction.
            wire_dtype: the wire dtype of floating-point arrays, or None.

        Returns:
            New aligned arrays, one per input, with the inputs' shapes and dtypes.
        """
        size = self.transport.size
        outputs: list = [None] * len(arrays)
        plan = self._plan(arrays, wire_dtype)
        with self.lock:
            for group in plan:
                if isinstance(group, Direct):
                    src = arrays[group.index]
                    out = aligned_empty(src.shape, src.dtype)
                    self._reduce(src.reshape(-1), out.reshape(-1), op)
                    outputs[group.index] = _finish_average(out, op, size)
                else:
                    self._reduce_bucket(arrays, group, op, outputs)
        for i, a in enumerate(arrays):
            if outputs[i] is None:  # empty tensors
                outputs[i] = aligned_empty(a.shape, a.dtype)
        return outputs

    def _reduce_bucket(self, arrays, bucket: Bucket, op: ReduceOp, outputs: list) -> None:
        size = self.transport.size
        prescale = op is ReduceOp.AVERAGE and size > 1 and bucket.dtype in FLOAT_DTYPES
        members = [arrays[index] for index in bucket.members]
        in_place = all(a.dtype == bucket.dtype for a in members)
        staged = None if in_place else self._staging(arrays, bucket)
        if in_place:
            # the reduced bucket is the output: each member's values are returned as a view
            # of it (pooled, so the next step reuses it once these are released)
            buf = aligned_empty((bucket.count,), bucket.dtype)
        else:
            buf = self._fusion_buffer(bucket.dtype, bucket.count)
        packed = buf if staged is None else staged
        end = 0
        for src, offset in zip(members, bucket.offsets):
            if offset > end:   # padding: zeros, so a reused buffer's old bits reduce quietly
                packed[end:offset] = 0
            src = src.reshape(-1)
            end = offset + src.size
            dst = packed[offset:end]
            if prescale:
                np.multiply(src, np.float32(1.0 / size), out=dst, casting="unsafe")
            else:
                np.copyto(dst, src, casting="unsafe")
        if staged is not None:
            cast_into(buf, staged)
        self._reduce(None, buf, op)
        if staged is not None:
            cast_into(staged, buf)
        if in_place:
            views = [buf[offset:offset + src.size].reshape(src.shape)
                     for src, offset in zip(members, bucket.offsets)]
        else:
            views = aligned_like(members)[1]
            for src, offset, out in zip(members, bucket.offsets, views):
                np.copyto(out.reshape(-1), packed[offset:offset + src.size], casting="unsafe")
        for index, out in zip(bucket.members, views):
            outputs[index] = out if prescale else _finish_average(out, op, size)

    def _staging(self, arrays, bucket: Bucket) -> np.ndarray | None:
        """A float32 buffer to pack a float16 bucket of float32 tensors in, where converting
        it in one pass is faster than numpy's per-element cast; else None."""
        if bucket.dtype != np.float16 or fast_half(bucket.count) is None or any(
                arrays[i].dtype != np.float32 for i in bucket.members):
            return None
        buf = self._buffers.get("staging")
        if buf is None or buf.size < bucket.count:
            buf = aligned_empty((bucket.count,), np.float32)
            self._buffers["staging"] = buf
        return buf[:bucket.count]

    def broadcast(self, arrays: Sequence[np.ndarray], root: int,
                  is_root: bool) -> list[np.ndarray]:
        """Broadcasts every array from ``root`` in one fused, chunked message.

        One array travels from the root's own memory, and the root gets that array back
        (Horovod's root returns its input): a 64 MB broadcast's copy into a message buffer
        cost the root 5 ms here.

        Args:
            arrays: C-contiguous arrays, the same shapes and dtypes on every rank.
            root: the sending rank.
            is_root: True on ``root``.

        Returns:
            Root's values: on the root, ``arrays`` itself when there is one; elsewhere
            aligned arrays (views of one buffer).
        """
        if len(arrays) == 1:
            out = arrays[0] if is_root else aligned_empty(arrays[0].shape, arrays[0].dtype)
            buf, outputs = out.reshape(-1).view(np.uint8), [out]
        else:
            buf, outputs = aligned_like(arrays)
            if is_root:
                for a, out in zip(arrays, outputs):
                    np.copyto(out, a)
        with self.lock:
            for start, stop in chunks(buf.size, 1, self.chunk_bytes):
                self.transport.bcast(buf[start:stop], root)
        return outputs

    def allgather(self, array: np.ndarray, first_dims: Sequence[int]) -> np.ndarray:
        """Concatenates every rank's array along the first dimension.

        Args:
            array: this rank's C-contiguous array (at least 1-D).
            first_dims: every rank's first dimension, in rank order.

        Returns:
            An aligned array of shape ``(sum(first_dims),) + array.shape[1:]``.
        """
        row_bytes = int(np.prod(array.shape[1:], dtype=np.int64)) * array.itemsize
        out = aligned_empty((int(sum(first_dims)),) + tuple(array.shape[1:]), array.dtype)
        with self.lock:
            self.transport.allgatherv(array.reshape(-1).view(np.uint8),
                                      out.reshape(-1).view(np.uint8),
                                      [d * row_bytes for d in first_dims])
        return out


def _finish_average(out: np.ndarray, op: ReduceOp, size: int) -> np.ndarray:
    """Turns a sum into a mean in place: floats scale, integers round toward zero."""
    if op is not ReduceOp.AVERAGE or size == 1:
        return out
    if out.dtype in FLOAT_DTYPES:
        np.multiply(out, np.asarray(1.0 / size, out.dtype), out=out)
    else:
        out[...] = np.trunc(out / size)
    return out
