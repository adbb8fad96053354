"""Overlapping the gradient allreduce with backward: buckets in the order gradients become
ready, and one background thread that runs collectives in the order they were issued.

Backward computes the last layer's gradients first, so the gradients are cut into buckets in
reverse order: a small first bucket (it is ready earliest, and its transfer starts while most
of backward is still to come), then buckets of up to ``bucket_bytes`` (PyTorch DDP's 25 MB).
Inside ``tf.function`` each bucket is one stateful op that hands its bucket to the
:class:`CollectiveQueue` and returns at once; TensorFlow runs such ops in program order on
every rank, so every rank issues the same collectives in the same order, and the queue's one
thread runs them in that order while TensorFlow goes on computing. A synchronous collective
waits until the queue is idle first, so collectives never interleave differently on
different ranks, and never run on two threads at once (MPI's ``serialized`` level).

Example:
    >>> plan_buckets([4, 4, 4, 4], first_bucket_bytes=4, bucket_bytes=8)
    [(3,), (2, 1), (0,)]
"""
from __future__ import annotations

import concurrent.futures
import itertools
import threading
from typing import Callable, Sequence

__all__ = ["plan_buckets", "CollectiveQueue", "process_queue", "drain_process_queue",
           "close_process_queue", "on_queue_thread", "DEFAULT_BUCKET_BYTES",
           "DEFAULT_FIRST_BUCKET_BYTES"]

DEFAULT_BUCKET_BYTES = 25 * 1024 * 1024
DEFAULT_FIRST_BUCKET_BYTES = 1024 * 1024


def plan_buckets(nbytes: Sequence[int], first_bucket_bytes: int,
                 bucket_bytes: int) -> list[tuple[int, ...]]:
    """Cuts tensors into buckets from the last to the first, the first bucket small.

    A bucket closes once it holds at least its limit (``first_bucket_bytes`` for the first,
    ``bucket_bytes`` after), so a tensor larger than the limit is a bucket of its own.

    Args:
        nbytes: each tensor's size in bytes, in the variables' (forward) order.
        first_bucket_bytes: the first bucket's limit.
        bucket_bytes: every later bucket's limit.

    Returns:
        Buckets of tensor indices, in the order they are issued (each in reverse order).
    """
    buckets, current, filled = [], [], 0
    for index in reversed(range(len(nbytes))):
        current.append(index)
        filled += nbytes[index]
        if filled >= (bucket_bytes if buckets else first_bucket_bytes):
            buckets.append(tuple(current))
            current, filled = [], 0
    if current:
        buckets.append(tuple(current))
    return buckets


_thread = threading.local()


def on_queue_thread() -> bool:
    """True on a :class:`CollectiveQueue`'s thread: a transport there waits for the network
    by polling with short sleeps, leaving the core to the computation it overlaps with,
    where a blocking MPI call would spin on it."""
    return getattr(_thread, "queue", False)


def _mark_queue_thread() -> None:
    _thread.queue = True


class CollectiveQueue:
    """Runs collectives on one background thread, in the order they were submitted.

    Handles are integers, so a ``tf.function`` op can carry one to the op that waits for it.
    """

    def __init__(self):
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="distrain-collectives",
            initializer=_mark_queue_thread)
        self._futures: dict[int, concurrent.futures.Future] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[], object]) -> int:
        """Queues ``fn``; returns its handle for :meth:`wait`."""
        with self._lock:
            handle = next(self._ids)
            self._futures[handle] = self._executor.submit(fn)
        return handle

    def wait(self, handle: int):
        """``fn``'s result, once it has run (its exception, if it raised).

        Raises:
            KeyError: an unknown handle, or one already waited for.
        """
        with self._lock:
            future = self._futures.pop(handle)
        return future.result()

    def drain(self) -> None:
        """Returns once everything submitted so far has run (results stay for :meth:`wait`)."""
        with self._lock:
            pending = list(self._futures.values())
        if pending:
            concurrent.futures.wait(pending)

    def pending(self) -> int:
        """How many handles have not been waited for."""
        with self._lock:
            return len(self._futures)

    def close(self) -> None:
        """Finishes what is queued and stops the thread."""
        self._executor.shutdown(wait=True)


_process_queue: CollectiveQueue | None = None


def process_queue() -> CollectiveQueue:
    """This process's queue of overlapped collectives, made on first use."""
    global _process_queue
    if _process_queue is None:
        _process_queue = CollectiveQueue()
    return _process_queue


def drain_process_queue() -> None:
    """Waits until the overlapped collectives issued so far have run (none: returns at once);
    every synchronous collective calls it first, so each rank keeps its issue order."""
    if _process_queue is not None:
        _process_queue.drain()


def close_process_queue() -> None:
    """Finishes and stops the queue (at :func:`distrain.shutdown`)."""
    global _process_queue
    if _process_queue is not None:
        _process_queue.close()
        _process_queue = None
