"""The running backend of this process: starting and stopping it, the rank's place in the
world, and the few facts the layers above may ask of it.

Example:
    >>> from distrain import runtime
    >>> runtime.start("local"); runtime.rank(), runtime.size()
    (0, 1)
"""
from __future__ import annotations

import numpy as np

from distrain import collective_timeline, failfast, horovod_settings
from distrain.backends import Backend, create_backend, resolve_backend
from distrain.environment import detect_world
from distrain.engine.bucket_queue import drain_process_queue
from distrain.ops import compressor_of

__all__ = ["NotInitializedError", "start", "stop", "is_initialized", "backend", "rank", "size",
           "local_rank", "local_size", "cross_rank", "cross_size", "backend_name",
           "fusion_threshold", "chunk_bytes", "message_allreduce", "allreduce_runner",
           "native_backend"]


class NotInitializedError(ValueError):
    """A collective or world query was used before :func:`distrain.init`."""


_backend: Backend | None = None


def start(name: str | None = None, process_sets=None) -> Backend:
    """Starts the backend once; later calls return the running one.

    On distrain's own backends the ``HOROVOD_*`` settings are applied first
    (:mod:`distrain.horovod_settings`), and a ``DISTRAIN_TIMELINE`` recording starts.

    Args:
        name: ``mpi``, ``horovod``, ``local`` or ``auto``; ``DISTRAIN_BACKEND`` when None.
        process_sets: ``init``'s ``process_sets``, for a backend that takes them as it starts
            (:func:`distrain.backends.create_backend`); registering them is
            :func:`distrain.process_sets.setup`'s.

    Raises:
        ValueError: unknown backend; a malformed ``HOROVOD_*`` setting.
        WorldError: the launcher's description and the backend disagree.
    """
    global _backend
    if _backend is None:
        world = detect_world()
        name = resolve_backend(name, world)
        own = name != "horovod"   # under Horovod's backend, Horovod reads HOROVOD_* itself
        if own:
            horovod_settings.apply()
        try:
            _backend = create_backend(name, world, process_sets)
        except BaseException:
            horovod_settings.undo()
            raise
        if _backend.world.size > 1:
            failfast.install(_backend.world.rank, _backend.abort)
        if own:
            horovod_settings.announce(_backend.world.rank)
            collective_timeline.start_from_setting(_backend.world.rank)
    return _backend


def stop() -> None:
    """Stops the backend; :func:`start` may be called again afterwards."""
    global _backend
    if _backend is not None:
        collective_timeline.stop_from_setting()
        _backend.shutdown()
        _backend = None
        failfast.uninstall()
        horovod_settings.undo()


def is_initialized() -> bool:
    """True between :func:`distrain.init` and :func:`distrain.shutdown`."""
    return _backend is not None


def backend() -> Backend:
    """The running backend of the whole world, for the collective layer; the layers above
    use the functions of :mod:`distrain.collectives` instead.

    Raises:
        NotInitializedError: before :func:`distrain.init`.
    """
    if _backend is None:
        raise NotInitializedError("distrain has not been initialized; call distrain.init() "
                                  "first")
    return _backend


def rank() -> int:
    """This process's rank, 0 <= rank < size."""
    return backend().world.rank


def size() -> int:
    """The number of ranks."""
    return backend().world.size


def local_rank() -> int:
    """This process's rank among the ranks on its host."""
    return backend().world.local_rank


def local_size() -> int:
    """The number of ranks on this host."""
    return backend().world.local_size


def cross_rank() -> int:
    """The index of this host."""
    return backend().world.cross_rank


def cross_size() -> int:
    """The number of hosts."""
    return backend().world.cross_size


def backend_name() -> str:
    """The running backend's name: ``mpi``, ``horovod`` or ``local``."""
    return backend().name


def fusion_threshold() -> int:
    """The most bytes one fusion bucket of the running backend holds."""
    return backend().fusion_threshold


def chunk_bytes() -> int:
    """The most bytes one message of the running backend carries."""
    return backend().chunk_bytes


def set_fusion(threshold: int, chunk_bytes: int) -> None:
    """Sets the running backend's fusion threshold and chunk size (bytes; 0: one message
    per tensor, and no chunking), for the collectives that follow on this rank. Every rank
    must set the same values, between the same collectives: an allreduce between ranks that
    differ raises :class:`~distrain.backends.base.CollectiveMismatchError` naming their values
    (where signatures are checked).

    Raises:
        NotImplementedError: the backend (Horovod's) does not fuse by distrain's plan.
    """
    backend().set_fusion(int(threshold), int(chunk_bytes))


def native_backend() -> bool:
    """True when the backend runs TensorFlow ops itself (Horovod's), not numpy collectives."""
    return backend().native_tensorflow


def allreduce_runner(op, compression, label: str):
    """A function reducing a list of numpy arrays with the running backend, for the queue.

    Args:
        op: a :class:`~distrain.ops.ReduceOp`.
        compression: a compressor or its name.
        label: shown in error and stall messages.
    """
    active, wire_dtype = backend(), compressor_of(compression).wire_dtype
    return lambda arrays: active.allreduce(arrays, op, wire_dtype, label)


def message_allreduce(buffer: np.ndarray) -> None:
    """Sums a float32 buffer across ranks in place, as one message, without negotiation or
    fusion: as the engine reduces each chunk of a bucket.

    What the cost model calibrates its per-message constants on; every rank must call it
    with the same size, at most :func:`chunk_bytes`.

    Args:
        buffer: this rank's values; the sum replaces them.
    """
    active = backend()
    drain_process_queue()
    active.message_allreduce(buffer)
