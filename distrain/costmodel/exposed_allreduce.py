"""The allreduce left exposed when gradient buckets are reduced during backward.

With overlap (:mod:`distrain.overlap`), backward makes the last sub-model's gradients first;
each bucket (:func:`distrain.engine.bucket_queue.plan_buckets`) starts once backward has made
all of its gradients and the bucket before it is done, on one queue. The step then waits
only for what is still running when backward ends:

    ready_j  = sum of b_m for m >= j        (b_m: sub-model m's backward)
    start_k  = max(ready of bucket k, end_(k-1)),   end_k = start_k + T(bucket k)
    exposed  = max(end_last - ready_0, 0)

``b_m`` is :data:`BACKWARD_SHARE` of sub-model m's measured forward + backward (backward
computes two products per layer where forward computes one); ``T(bucket)`` is the
:class:`~distrain.costmodel.ring.CommModel`'s grouped allreduce of the bucket's tensors.
Gradients that fill a single bucket are reduced after backward, as without overlap.

Example (two sub-models of 3 ms, 2 ms of backward each; the last one's bucket runs from
2 to 3 ms, the first one's from 4 ms, when backward ends, to 5 ms)::

    >>> from distrain.costmodel.ring import CommModel
    >>> comm = CommModel(size=2, alpha=0.0, beta=1e-9)          # 1 GB/s, no latency
    >>> sizes = [(250_000,), (250_000,)]                        # 1 MB each, float32
    >>> round(exposed_allreduce([0.003, 0.003], [0, 1], sizes, ["float32"] * 2, comm,
    ...                         first_bucket_bytes=1, bucket_bytes=1) * 1e3, 6)   # ms
    1.0
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from distrain.costmodel.ring import CommModel
from distrain.engine.bucket_queue import plan_buckets

__all__ = ["BACKWARD_SHARE", "bucket_schedule", "exposed_allreduce",
           "recommended_bucket_bytes"]

BACKWARD_SHARE = 2 / 3


def bucket_schedule(submodel_seconds: Sequence[float], owners: Sequence[int], shapes,
                    dtypes, comm: CommModel, first_bucket_bytes: int, bucket_bytes: int,
                    size: int | None = None) -> tuple[float, list[tuple[float, float]]]:
    """When each bucket's allreduce runs, counted from the start of backward.

    Args:
        submodel_seconds: each sub-model's forward + backward, in forward order.
        owners: for each gradient (in the variables' order), its sub-model's index.
        shapes, dtypes: the gradients'.
        comm: the communication model.
        first_bucket_bytes, bucket_bytes: the bucket plan's limits.
        size: ranks (default: the model's measured size).

    Returns:
        ``(backward seconds, [(start, end) of each bucket in issue order])``; no buckets
        when the gradients fill one (they are reduced after backward).
    """
    backward = [BACKWARD_SHARE * s for s in submodel_seconds]
    ready_at = list(np.cumsum(backward[::-1])[::-1]) or [0.0]
    total = float(ready_at[0]) if backward else 0.0
    nbytes = [int(np.prod(s, dtype=np.int64)) * np.dtype(d).itemsize
              for s, d in zip(shapes, dtypes)]
    plan = plan_buckets(nbytes, first_bucket_bytes, bucket_bytes)
    if len(plan) < 2:
        return total, []
    runs, end = [], 0.0
    for bucket in plan:
        ready = max(float(ready_at[owners[i]]) if 0 <= owners[i] < len(backward) else total
                    for i in bucket)
        start = max(ready, end)
        end = start + comm.allreduce_time([shapes[i] for i in bucket],
                                          [dtypes[i] for i in bucket], size=size)
        runs.append((start, end))
    return total, runs


def exposed_allreduce(submodel_seconds, owners, shapes, dtypes, comm: CommModel,
                      first_bucket_bytes: int, bucket_bytes: int,
                      size: int | None = None) -> float:
    """Seconds of allreduce still running when backward ends (see the module).

    Returns:
        The exposed part; the whole grouped allreduce when the gradients fill one bucket.
    """
    total, runs = bucket_schedule(submodel_seconds, owners, shapes, dtypes, comm,
                                  first_bucket_bytes, bucket_bytes, size)
    if not runs:
        return comm.allreduce_time(shapes, dtypes, size=size)
    return max(runs[-1][1] - total, 0.0)


def recommended_bucket_bytes(submodel_seconds, owners, shapes, dtypes, comm: CommModel,
                             first_bucket_bytes: int, size: int | None = None) -> int:
    """The bucket limit, a power of two from 64 KiB to 64 MiB, that leaves the least
    allreduce exposed (the smallest such on a tie)."""
    best = None
    for power in range(16, 27):
        exposed = exposed_allreduce(submodel_seconds, owners, shapes, dtypes, comm,
                                    first_bucket_bytes, 1 << power, size)
        if best is None or exposed < best[0] - 1e-9:
            best = (exposed, 1 << power)
    return best[1]
