"""distrain's collective API, with Horovod's names: the one module the layers above and the
Horovod faces import.

Each name is defined in the module that holds its concern: starting and the world in
:mod:`distrain.runtime`, process sets in :mod:`distrain.process_sets`, reductions in
:mod:`distrain.reducing`, gathers and alltoall in :mod:`distrain.gathering`, broadcasts in
:mod:`distrain.broadcasting`, barrier and join in :mod:`distrain.sync_points`, build and
runtime queries in :mod:`distrain.basics`.

Every collective takes numpy arrays, tf.Tensor or tf.Variable, and returns the kind it was
given (a tf.Variable's result is a tf.Tensor, as in Horovod: a reduced value is not a
variable) with the same dtype. Inside ``tf.function`` each call is one graph op; TensorFlow
values are differentiable, with Horovod's gradients.

Example:
    >>> import distrain as hvd
    >>> hvd.init()
    >>> hvd.allreduce(np.ones(3), op=hvd.Sum)   # doctest: +SKIP
    array([2., 2., 2.])                          # on 2 ranks
"""
from __future__ import annotations

import inspect

from distrain import gradients  # noqa: F401  registers the collectives' gradients
from distrain import process_sets as _process_sets
from distrain import runtime
from distrain.backends import Backend
from distrain.basics import (ccl_built, check_num_rank_power_of_2, cuda_built, ddl_built,
                             gloo_built, gloo_enabled, is_homogeneous, local_rank_op,
                             local_size_op, mpi_built, mpi_enabled, mpi_threads_supported,
                             nccl_built, process_set_included_op, rank_op, rocm_built,
                             size_op, start_timeline, stop_timeline, sycl_built)
from distrain.broadcasting import (broadcast, broadcast_, broadcast_global_variables,
                                   broadcast_object, broadcast_object_fn, broadcast_variables)
from distrain.engine.bucket_queue import close_process_queue
from distrain.engine.tensors import as_written
from distrain.gathering import allgather, allgather_object, alltoall, grouped_allgather
from distrain.process_sets import (ProcessSet, add_process_set, global_process_set,
                                   remove_process_set)
from distrain.reducing import (allreduce, grouped_allreduce, grouped_reducescatter,
                               reducescatter)
from distrain.runtime import (NotInitializedError, allreduce_runner, backend_name, chunk_bytes,
                              cross_rank, cross_size, fusion_threshold, is_initialized,
                              local_rank, local_size, message_allreduce, native_backend, rank,
                              set_fusion, size)
from distrain.sync_points import barrier, join

__all__ = [
    "NotInitializedError", "init", "shutdown", "is_initialized", "backend", "rank", "size",
    "local_rank", "local_size", "cross_rank", "cross_size",
    "allreduce", "grouped_allreduce", "reducescatter", "grouped_reducescatter",
    "allgather", "grouped_allgather", "alltoall", "allgather_object",
    "broadcast", "broadcast_", "broadcast_variables", "broadcast_global_variables",
    "broadcast_object", "broadcast_object_fn", "barrier", "join",
    "ProcessSet", "global_process_set", "add_process_set", "remove_process_set",
    "rank_op", "size_op", "local_rank_op", "local_size_op", "process_set_included_op",
    "mpi_built", "mpi_enabled", "gloo_built", "gloo_enabled", "nccl_built", "cuda_built",
    "rocm_built", "ddl_built", "ccl_built", "sycl_built", "mpi_threads_supported",
    "is_homogeneous", "start_timeline", "stop_timeline", "check_num_rank_power_of_2",
    "backend_name", "fusion_threshold", "chunk_bytes", "set_fusion", "message_allreduce",
    "allreduce_runner", "native_backend",
]


def init(comm=None, process_sets=None, backend: str | None = None) -> None:
    """Starts distrain on this rank; safe to call more than once.

    Args:
        comm: Horovod's first argument. distrain also takes a backend name here
            (``init("local")``); an mpi4py communicator or a list of ranks, which Horovod
            uses as the world, is not supported.
        process_sets: :class:`ProcessSet` objects to register (every rank the same list), or
            ``"dynamic"`` to allow :func:`add_process_set` later.
        backend: ``mpi``, ``horovod``, ``local`` or ``auto``; ``DISTRAIN_BACKEND`` when None.

    Raises:
        ValueError: unknown backend; a process set names a rank outside the world, or twice.
        NotImplementedError: ``comm`` is a communicator or a list of ranks.
        WorldError: the launcher's description and the backend disagree.
    """
    if isinstance(comm, str):
        backend, comm = backend or comm, None
    if comm is not None:
        raise NotImplementedError("init(comm=...) is not supported: distrain's world is "
                                  "every rank the launcher started; use process sets "
                                  "(init(process_sets=[hvd.ProcessSet(ranks)])) instead")
    runtime.start(backend, process_sets)
    _process_sets.setup(process_sets)


def shutdown() -> None:
    """Stops the backend; :func:`init` may be called again afterwards."""
    close_process_queue()
    _process_sets.clear()
    runtime.stop()


def backend() -> Backend:
    """The running backend of the whole world, for the collective layer; the layers above
    use this module's functions instead.

    Raises:
        NotInitializedError: before :func:`init`.
    """
    return runtime.backend()


# Inside tf.function, AutoGraph calls each public function as written (engine.tensors).
for _name in __all__:
    if inspect.isfunction(globals()[_name]):
        as_written(globals()[_name])
del _name
