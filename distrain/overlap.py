"""Collectives that run while TensorFlow computes: the gradient allreduce overlapped with
backward, and Horovod's ``allreduce_async`` / ``synchronize`` pair.

Inside ``tf.function``, :func:`overlapped_allreduce` cuts the gradients into buckets in the
order backward makes them (:func:`distrain.engine.bucket_queue.plan_buckets`; a small first bucket,
then ``DISTRAIN_BUCKET_BYTES``, 25 MiB) and issues each bucket's allreduce as soon as its
gradients exist, on one background thread (:class:`~distrain.engine.bucket_queue.CollectiveQueue`);
TensorFlow keeps computing the rest of backward meanwhile, and the results are waited for
only where they are used. Every collective of :mod:`distrain.collectives` first waits until
the queue is idle, so collectives keep one order on every rank. Overlap is off unless
``DISTRAIN_OVERLAP=1`` (or ``python -m distrain.train --overlap``): measured here, a model
whose gradients fill one bucket only pays the extra ops (cnn at 2 ranks: 11.3 against
10.2 ms a step). Without it, one grouped allreduce runs after backward; eager code, the
Horovod backend, sparse gradients, tensors of unknown size and gradients that fill a single
bucket (its allreduce could only start once backward is done) always take that path.

Example:
    >>> handle = distrain.grouped_allreduce_async([np.ones(3)])   # doctest: +SKIP
    >>> distrain.synchronize(handle)                               # doctest: +SKIP
    [array([1., 1., 1.])]
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from distrain import collectives
from distrain import environment as env
from distrain.engine.bucket_queue import (DEFAULT_BUCKET_BYTES, DEFAULT_FIRST_BUCKET_BYTES,
                                          plan_buckets, process_queue)
from distrain.engine.tensors import (Kind, from_numpy, graph_finish, graph_start,
                                     is_indexed_slices, is_symbolic, to_numpy, unconverted)
from distrain.ops import Adasum, Average, Compression, parse_op

__all__ = ["overlap_enabled", "bucket_sizes", "grouped_allreduce_async", "synchronize",
           "overlapped_allreduce", "start_overlapped_allreduce", "finish_overlapped_allreduce"]


def overlap_enabled(environ=None) -> bool:
    """True when ``DISTRAIN_OVERLAP`` is ``1`` (or ``true``/``yes``/``on``); off by default."""
    raw = env.setting(env.OVERLAP, "0", environ).strip().lower()
    return raw in ("1", "true", "yes", "on")


def bucket_sizes(environ=None) -> tuple[int, int]:
    """``(first bucket bytes, bucket bytes)`` from the environment or the defaults.

    Raises:
        ValueError: a setting is not a whole number of at least 1.
    """
    return (env.int_setting(env.FIRST_BUCKET_BYTES, DEFAULT_FIRST_BUCKET_BYTES, environ, 1),
            env.int_setting(env.BUCKET_BYTES, DEFAULT_BUCKET_BYTES, environ, 1))


def grouped_allreduce_async(tensors: Sequence, op=None, compression=Compression.none,
                            name=None) -> int:
    """Starts a grouped allreduce of numpy arrays or eager tensors in the background.

    The tensors must not change until :func:`synchronize` returns.

    Args:
        tensors: dense numeric arrays or eager tensors, the same on every rank.
        op, compression, name: as :func:`distrain.grouped_allreduce`.

    Returns:
        A handle for :func:`synchronize`.
    """
    arrays = [to_numpy(t) for t in tensors]
    label = name or f"grouped_allreduce_async of {len(arrays)} tensor(s)"
    return _start(arrays, collectives.allreduce_runner(parse_op(Average if op is None else op),
                                                       compression, label))


def synchronize(handle: int) -> list[np.ndarray]:
    """The results of :func:`grouped_allreduce_async` (or a bucket), once they are there.

    Raises:
        ValueError: as the collective did (ranks disagreeing on shapes, for one).
        KeyError: an unknown handle, or one already synchronized.
    """
    return process_queue().wait(int(handle))


def _start(arrays, run) -> int:
    return process_queue().submit(lambda: run(arrays))


def _plan(tensors):
    """The bucket plan for graph tensors of known sizes, or None."""
    sizes = []
    for t in tensors:
        count = t.shape.num_elements()
        if count is None:
            return None
        sizes.append(count * t.dtype.size)
    return plan_buckets(sizes, *bucket_sizes())


def start_overlapped_allreduce(tensors: Sequence, op=None, compression=Compression.none,
                               name: str = "gradients", enabled: bool | None = None):
    """Inside ``tf.function``: one start op per bucket; the caller finishes them.

    Args:
        tensors: graph tensors of known sizes, in the variables' order.
        op, compression, name: as :func:`distrain.grouped_allreduce`.
        enabled: overlap or not; :func:`overlap_enabled` when None.

    Returns:
        ``(tokens, plan)``: one scalar int64 handle tensor per bucket, in the order issued,
        and each bucket's tensor indices; :func:`synchronize` on a token's value gives its
        bucket's results in that order. None where overlap does not apply (see the module).
    """
    tensors = list(tensors)
    enabled = overlap_enabled() if enabled is None else enabled
    if not (tensors and enabled and is_symbolic(tensors)
            and not any(is_indexed_slices(t) for t in tensors)
            and not collectives.native_backend()):
        return None
    plan = _plan(tensors)
    if plan is None or len(plan) < 2:   # one bucket starts when backward ends: no overlap
        return None
    reduce_op = parse_op(Average if op is None else op)
    tokens = []
    for number, bucket in enumerate(plan):
        # the runner is made once, when the function is traced, not at every step
        # unconverted: the queue's thread runs it, outside the op that AutoGraph is off in
        run = unconverted(collectives.allreduce_runner(
            reduce_op, compression, f"{name} (bucket {number + 1} of {len(plan)})"))
        tokens.append(graph_start(lambda arrays, run=run: _start(arrays, run),
                                  [tensors[i] for i in bucket]))
    return tokens, plan


def finish_overlapped_allreduce(tokens, plan) -> list:
    """Eagerly, after the ``tf.function`` that started them: every bucket's results as
    tensors, in the variables' order.

    Args:
        tokens: the handles the start ops returned (eager tensors or ints).
        plan: each bucket's tensor indices, as :func:`start_overlapped_allreduce` gave them.
    """
    outputs: list = [None] * sum(len(bucket) for bucket in plan)
    for token, bucket in zip(tokens, plan):
        for index, array in zip(bucket, synchronize(int(token))):
            outputs[index] = from_numpy(array, Kind.TENSOR)
    return outputs


def overlapped_allreduce(tensors: Sequence, op=None, compression=Compression.none,
                         name: str = "gradients", process_set=None,
                         prescale_factor: float = 1.0, postscale_factor: float = 1.0) -> list:
    """Reduces gradients, overlapped with backward inside ``tf.function``.

    Args:
        tensors: the gradients (dense), in the variables' order.
        op, compression, name, process_set, prescale_factor, postscale_factor: as
            :func:`distrain.grouped_allreduce`; a process set other than the global one, or
            scale factors, reduce in one grouped allreduce (no overlap).

    Returns:
        The reduced tensors, in order. Where overlap does not apply, the result of one
        :func:`distrain.grouped_allreduce`.
    """
    tensors = list(tensors)
    plain = (process_set not in (None, collectives.global_process_set)
             or prescale_factor != 1.0 or postscale_factor != 1.0
             or parse_op(Average if op is None else op) is Adasum)
    started = None if plain else start_overlapped_allreduce(tensors, op, compression, name)
    if started is None:
        return collectives.grouped_allreduce(
            tensors, op=op, compression=compression, name=name,
            process_set=process_set or collectives.global_process_set,
            prescale_factor=prescale_factor, postscale_factor=postscale_factor)
    outputs: list = [None] * len(tensors)
    for token, bucket in zip(*started):
        for index, out in zip(bucket, graph_finish(synchronize, token,
                                                   [tensors[i] for i in bucket])):
            outputs[index] = out
    return outputs
