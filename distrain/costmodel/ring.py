"""The communication model: a ring allreduce per MPI message, plus the host's own costs.

A ring allreduce of ``n`` bytes over ``p`` ranks sends ``2(p-1)`` messages per rank and moves
``2(p-1)/p x n`` bytes through each link, so it takes

    T(n, p) = 2(p-1) alpha + 2(p-1)/p x n x beta.

distrain's grouped allreduce is one negotiation, then the fusion plan's messages (buckets and
direct tensors, each cut into chunks of ``chunk_bytes``), then the copies that pack, unpack and
scale. Its predicted time is

    T = call_overhead + tensor_overhead x tensors + sum over chunks T(chunk, p)
        + gamma x copied bytes

with ``alpha`` and ``beta`` fitted to a sweep of raw allreduces up to the chunk size and
``gamma``, ``call_overhead`` and ``tensor_overhead`` timed on this host
(:mod:`distrain.costmodel.calibrate`). At the world size it was measured at, a message's time
is read off the sweep itself (``curve``, piecewise linear between its sizes), since no line
follows a transport whose protocol changes with the message size: on one host a 1 MiB
message took 0.50 ms where the line through the smallest sizes and the chunk said 0.12, and
over namespace links at 4 ranks a 256 KiB one 47.5 ms against 19.7. The line stays for other
world sizes (the what-if rows) and for messages beyond the sweep.

Example:
    >>> comm = CommModel(size=4, alpha=1e-5, beta=1e-9)
    >>> round(comm.message_time(1 << 20) * 1e3, 3)   # 6 x 10 us + 1.5 x 1 MiB x 1 ns
    1.633
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Mapping, Sequence

import numpy as np

from distrain.engine.fusion import DEFAULT_CHUNK_BYTES, DEFAULT_FUSION_THRESHOLD, Direct, chunks, \
    plan_fusion

__all__ = ["CommModel", "fit_alpha_beta", "ring_time", "WHATIF_SIZES"]

WHATIF_SIZES = tuple(2 ** k for k in range(9))  # 1, 2, 4, ..., 256


def ring_time(nbytes: float, size: int, alpha: float, beta: float) -> float:
    """``2(p-1) alpha + 2(p-1)/p x n x beta``; 0 for one rank.

    Args:
        nbytes: the message size.
        size: ranks, p.
        alpha: latency per step, seconds.
        beta: seconds per byte.
    """
    if size <= 1:
        return 0.0
    return 2 * (size - 1) * alpha + 2 * (size - 1) / size * nbytes * beta


def fit_alpha_beta(sizes: Sequence[float], seconds: Sequence[float], ranks: int):
    """Least-squares ``alpha`` and ``beta`` from allreduce times of several message sizes.

    Fits ``t = c0 + c1 x n`` and reads ``c0 = 2(p-1) alpha``, ``c1 = 2(p-1)/p x beta``.
    The fit minimizes relative residuals (weights ``1/t``): the sweep spans 256 B to MiBs,
    and a plain least-squares line is set by the large messages alone, leaving the
    latency, which the small ones measure, to their noise.

    Args:
        sizes: message sizes in bytes.
        seconds: the measured time of each.
        ranks: the world size the sweep ran at (> 1).

    Returns:
        ``(alpha, beta)``, each at least 0.

    Raises:
        ValueError: fewer than two sizes, or one rank.
    """
    if len(sizes) < 2 or ranks < 2:
        raise ValueError("fitting alpha and beta needs two or more sizes and ranks")
    seconds = np.asarray(seconds, float)
    c1, c0 = np.polyfit(np.asarray(sizes, float), seconds, 1, w=1 / np.maximum(seconds, 1e-12))
    alpha = max(float(c0), 0.0) / (2 * (ranks - 1))
    beta = max(float(c1), 0.0) * ranks / (2 * (ranks - 1))
    return alpha, beta


def _messages(plan, shapes, dtypes):
    """``(count, itemsize, host passes)`` of each direct or fused message in ``plan``.

    A direct tensor costs one pass on the host (averaging its output); a bucket one (the
    pack; its members are returned in place), or two when it is cast to a narrower wire
    dtype (the pack, and the unpack back into the tensors' dtype).
    """
    for group in plan:
        if isinstance(group, Direct):
            yield (int(np.prod(shapes[group.index], dtype=np.int64)),
                   np.dtype(dtypes[group.index]).itemsize, 1)
        else:
            cast = any(np.dtype(dtypes[i]) != group.dtype for i in group.members)
            yield group.count, group.dtype.itemsize, 2 if cast else 1


@dataclasses.dataclass(frozen=True)
class CommModel:
    """Predicts distrain's grouped allreduce time.

    Attributes:
        size: the world size the constants were measured at.
        alpha: ring latency per step (s).
        beta: ring seconds per byte.
        gamma: host copy seconds per byte (packing, unpacking, scaling).
        call_overhead: fixed cost of one grouped call (negotiation, planning), seconds.
        tensor_overhead: cost per tensor in a call (conversion, bookkeeping), seconds.
        chunk_bytes: the largest MPI message.
        fusion_threshold: the fusion bucket size.
        wire_dtype: the job's compression (``"float16"``, ``"bfloat16"``) or None: float
            tensors are packed and sent in it. A property of the job, not of the link: it is
            never cached with the constants.
        curve: the calibration sweep, ``(bytes, seconds)`` of one message at ``size`` ranks,
            smallest first; empty when the constants were given by hand.
        calibration: where the constants came from, as the report shows it
            (:func:`distrain.costmodel.calibrate.load_or_calibrate`): ``source``
            (``measured``, ``cache``), ``measured_at`` (Unix time), ``load`` (rank 0's
            host's one-minute load average per core then), ``problem`` (why a fit was not
            cached), ``path``; empty for constants given by hand.
    """

    size: int
    alpha: float
    beta: float
    gamma: float = 0.0
    call_overhead: float = 0.0
    tensor_overhead: float = 0.0
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    fusion_threshold: int = DEFAULT_FUSION_THRESHOLD
    calibration: Mapping = dataclasses.field(default_factory=dict, compare=False)
    wire_dtype: str | None = None
    curve: tuple = ()

    def message_time(self, nbytes: float, size: int | None = None) -> float:
        """The time of one message at ``size`` ranks (default: the measured size): read off
        the sweep at the measured size up to its largest message, the ring line elsewhere.

        Example:
            >>> comm = CommModel(size=2, alpha=1e-6, beta=1e-9,
            ...                  curve=((256, 4e-6), (1 << 20, 5e-4)))
            >>> round(comm.message_time(1 << 19) * 1e6, 1)     # on the sweep
            251.9
            >>> round(comm.message_time(1 << 19, size=4) * 1e6, 1)     # the line
            792.4
        """
        size = self.size if size is None else size
        if self.curve and size == self.size and nbytes <= self.curve[-1][0]:
            sizes, seconds = self._curve_axes
            return float(np.interp(nbytes, sizes, seconds))
        return ring_time(nbytes, size, self.alpha, self.beta)

    @functools.cached_property
    def _curve_axes(self) -> tuple[np.ndarray, np.ndarray]:
        """The curve's sizes and times as arrays, made once (a prediction asks per chunk)."""
        sizes, seconds = zip(*self.curve)
        return np.asarray(sizes, float), np.asarray(seconds, float)

    def allreduce_time(self, shapes: Sequence, dtypes: Sequence, size: int | None = None,
                       fusion_threshold: int | None = None, host: float | None = None) -> float:
        """Predicted time of one grouped allreduce of tensors with these shapes and dtypes.

        Args:
            shapes: each tensor's shape.
            dtypes: each tensor's dtype.
            size: ranks (default: the measured size).
            fusion_threshold: the bucket size (default: the measured run's).
            host: the host's share, when timed on the real tensors
                (:mod:`distrain.costmodel.host`); replaces the per-tensor and copy terms,
                and at one rank the call overhead too (the host's share is the whole call).

        Returns:
            Seconds.
        """
        size = self.size if size is None else size
        threshold = self.fusion_threshold if fusion_threshold is None else fusion_threshold
        plan = plan_fusion(shapes, dtypes, threshold, self.chunk_bytes, self.wire_dtype)
        if host is not None:  # at one rank the host's share is the whole call
            total = host + (self.call_overhead if size > 1 else 0.0)
        else:
            total = self.call_overhead + self.tensor_overhead * len(shapes)
        for count, itemsize, copies in _messages(plan, shapes, dtypes):
            if host is None:
                total += self.gamma * copies * count * itemsize
            for start, stop in chunks(count, itemsize, self.chunk_bytes):
                total += self.message_time((stop - start) * itemsize, size)
        return total

    def allgather_time(self, nbytes: float, size: int | None = None) -> float:
        """Predicted time of one allgather of ``nbytes`` from each rank: a call, and a ring
        of ``p - 1`` steps each passing one rank's part, ``(p-1) (alpha + n beta)``."""
        size = self.size if size is None else size
        if size <= 1:
            return 0.0
        return self.call_overhead + (size - 1) * (self.alpha + nbytes * self.beta)

    def sparse_time(self, rows: int, row_bytes: int, size: int | None = None) -> float:
        """Predicted time of averaging one ``tf.IndexedSlices`` gradient of ``rows`` rows of
        ``row_bytes`` each: distrain (as Horovod) allgathers its values and its (int64)
        indices instead of reducing the dense tensor."""
        return (self.allgather_time(rows * row_bytes, size)
                + self.allgather_time(rows * 8, size))

    def recommended_fusion_threshold(self, size: int | None = None) -> int:
        """The smallest bucket whose latency is at most 5 % of its transfer time.

        ``2(p-1) alpha <= 0.05 x 2(p-1)/p x n x beta`` gives ``n >= 20 p alpha / beta``;
        rounded up to a power of two and kept within 64 KiB .. 256 MiB.
        """
        size = self.size if size is None else size
        if self.beta <= 0 or size <= 1:
            return self.fusion_threshold
        need = 20 * size * self.alpha / self.beta
        power = 1 << max(16, int(np.ceil(np.log2(max(need, 1)))))
        return int(min(power, 256 << 20))
