"""Adasum: the scale-invariant pairwise combination of gradients, reduced over a recursive
vector-halving / distance-doubling schedule (the CPU algorithm of Maleki et al., "Scaling
Distributed Training with Adaptive Summation", MLSys 2021, as Horovod runs it).

Two vectors combine as ``adasum(a, b) = (1 - a.b / (2|a|^2)) a + (1 - a.b / (2|b|^2)) b``
(a coefficient is 1 where its vector's squared norm is below 1e-8): orthogonal gradients
add, equal ones average. Over ``2^k`` ranks the result is the binary tree of pairwise
combinations: ranks ``2i`` and ``2i+1`` first, then pairs of pairs, and so on.

The schedule moves each rank's data ``2 (1 - 1/p)`` times, like a ring: at level ``l`` a rank
and the rank ``2^l`` away swap halves of what they hold, each keeps one half and combines its
two copies of it; the dot products and norms of a level are partial sums over the halves,
summed across the ``2^(l+1)`` ranks that hold the pieces of the whole vector. A distance-
doubling allgather then rebuilds the vector on every rank. Every tensor of a grouped call
has its own dot products, so combining them in one buffer equals combining each alone.
Products are accumulated in float64.

Example:
    >>> a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    >>> combine_pair(a, b)         # orthogonal: summed
    array([1., 1.])
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["combine_pair", "adasum", "ADASUM_DTYPES"]

ADASUM_DTYPES = tuple(np.dtype(d) for d in ("float16", "float32", "float64"))
_NEGLIGIBLE = 1e-8


def _coefficients(dot: np.ndarray, anorm: np.ndarray, bnorm: np.ndarray):
    with np.errstate(divide="ignore", invalid="ignore"):
        acoeff = np.where(anorm >= _NEGLIGIBLE, 1.0 - dot / (2.0 * anorm), 1.0)
        bcoeff = np.where(bnorm >= _NEGLIGIBLE, 1.0 - dot / (2.0 * bnorm), 1.0)
    return acoeff, bcoeff


def combine_pair(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The Adasum of two whole vectors (the reference the schedule must equal).

    Args:
        a, b: arrays of one shape and dtype.

    Returns:
        ``adasum(a, b)`` in ``a``'s dtype.
    """
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    acoeff, bcoeff = _coefficients(np.dot(a64, b64), np.dot(a64, a64), np.dot(b64, b64))
    return (acoeff * a64 + bcoeff * b64).astype(a.dtype).reshape(a.shape)


def _segment_sums(x: np.ndarray, y: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Per tensor ``[x.y, x.x, y.y]`` over the part ``[lo, hi)`` each holds, float64."""
    sums = np.zeros((len(bounds), 3))
    for t, (lo, hi) in enumerate(bounds):
        if hi > lo:
            xs, ys = x[lo:hi].astype(np.float64), y[lo:hi].astype(np.float64)
            sums[t] = (np.dot(xs, ys), np.dot(xs, xs), np.dot(ys, ys))
    return sums


def _clip(offsets: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Each tensor's ``[start, stop)`` in the flat buffer, cut to ``[lo, hi)``, relative to
    ``lo``."""
    starts = np.clip(offsets[:-1], lo, hi) - lo
    stops = np.clip(offsets[1:], lo, hi) - lo
    return np.stack([starts, stops], axis=1)


def adasum(transport, rank: int, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The Adasum of every rank's arrays, each array combined on its own.

    Args:
        transport: ``size`` (a power of two) and ``sendrecv(send, recv, peer)`` of uint8
            buffers.
        rank: this rank.
        arrays: float16/32/64 C-contiguous arrays of one dtype, the same shapes on every
            rank.

    Returns:
        New arrays of the inputs' shapes and dtype, equal on every rank.
    """
    size = transport.size
    dtype = arrays[0].dtype if arrays else np.dtype(np.float32)
    sizes = [a.size for a in arrays]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    buf = np.empty(int(offsets[-1]), dtype)
    for a, start in zip(arrays, offsets[:-1]):
        buf[start:start + a.size] = a.reshape(-1)
    lo, hi, held = 0, buf.size, []
    distance = 1
    while distance < size:
        peer = rank ^ distance
        mid = lo + (hi - lo) // 2
        lower = rank & distance == 0
        keep, give = ((lo, mid), (mid, hi)) if lower else ((mid, hi), (lo, mid))
        theirs = np.empty(keep[1] - keep[0], dtype)
        transport.sendrecv(np.ascontiguousarray(buf[give[0]:give[1]]).view(np.uint8),
                           theirs.view(np.uint8), peer)
        mine = buf[keep[0]:keep[1]]
        # a: the half of the lower-numbered side of the pair, b: the upper's, on every rank
        a, b = (mine, theirs) if lower else (theirs, mine)
        bounds = _clip(offsets, keep[0], keep[1])
        sums = _segment_sums(a, b, bounds)
        group = distance * 2
        sums = _group_sum(transport, rank, sums, group)
        acoeff, bcoeff = _coefficients(sums[:, 0], sums[:, 1], sums[:, 2])
        for t, (start, stop) in enumerate(bounds):
            if stop > start:
                combined = acoeff[t] * a[start:stop].astype(np.float64) + \
                    bcoeff[t] * b[start:stop].astype(np.float64)
                mine[start:stop] = combined.astype(dtype)
        held.append((lo, hi, give))
        lo, hi = keep
        distance = group
    for (outer_lo, outer_hi, give) in reversed(held):
        distance //= 2
        peer = rank ^ distance
        received = np.empty(give[1] - give[0], dtype)
        transport.sendrecv(np.ascontiguousarray(buf[lo:hi]).view(np.uint8),
                           received.view(np.uint8), peer)
        buf[give[0]:give[1]] = received
        lo, hi = outer_lo, outer_hi
    return [buf[start:start + a.size].reshape(a.shape).copy()
            for a, start in zip(arrays, offsets[:-1])]


def _group_sum(transport, rank: int, sums: np.ndarray, group: int) -> np.ndarray:
    """Sums ``sums`` over the ``group`` ranks that share this rank's bits above ``group``,
    by distance doubling; every member ends with the same bits (additions commute)."""
    distance = 1
    while distance < group:
        theirs = np.empty_like(sums)
        transport.sendrecv(sums.view(np.uint8).reshape(-1), theirs.view(np.uint8).reshape(-1),
                           rank ^ distance)
        sums = sums + theirs
        distance *= 2
    return sums
