"""Drop-in for ``import horovod.tensorflow as hvd``.

Example:
    >>> import distrain.tensorflow as hvd
    >>> hvd.init()
    >>> with tf.GradientTape() as tape:                     # doctest: +SKIP
    ...     loss = loss_fn(y, model(x, training=True))
    >>> tape = hvd.DistributedGradientTape(tape)            # doctest: +SKIP
    >>> grads = tape.gradient(loss, model.trainable_variables)   # averaged across ranks

``SyncBatchNormalization`` (:mod:`distrain.tensorflow.sync_batch_norm`) loads Keras and
TensorFlow on first use, so importing this module stays light.
"""
from __future__ import annotations

from distrain import collectives, elastic
from distrain.basics import scalar_op
from distrain.collectives import (ProcessSet, add_process_set, allgather, allgather_object,
                                  allreduce, alltoall, barrier, broadcast, broadcast_,
                                  broadcast_global_variables, broadcast_object,
                                  broadcast_object_fn, broadcast_variables, ccl_built,
                                  check_num_rank_power_of_2, cross_rank, cross_size,
                                  cuda_built, ddl_built, gloo_built, gloo_enabled,
                                  global_process_set, grouped_allgather, grouped_allreduce,
                                  grouped_reducescatter, init, is_homogeneous, is_initialized,
                                  local_rank, local_rank_op, local_size, local_size_op,
                                  mpi_built, mpi_enabled, mpi_threads_supported, nccl_built,
                                  sycl_built,
                                  process_set_included_op, rank, rank_op, reducescatter,
                                  remove_process_set, rocm_built, shutdown, size, size_op,
                                  start_timeline, stop_timeline)
from distrain.ops import Adasum, Average, Compression, Max, Min, Product, Sum
from distrain.overlap import grouped_allreduce_async, synchronize
from distrain.tensorflow.reduction import reduce_gradients
from distrain.tensorflow.tape import DistributedGradientTape, PartialDistributedGradientTape

__all__ = [
    "init", "shutdown", "is_initialized", "rank", "size", "local_rank", "local_size",
    "cross_rank", "cross_size", "allreduce", "grouped_allreduce", "reducescatter",
    "grouped_reducescatter", "allgather", "grouped_allgather", "alltoall", "broadcast",
    "broadcast_", "broadcast_variables", "broadcast_global_variables", "broadcast_object",
    "broadcast_object_fn", "allgather_object", "barrier", "join", "ProcessSet",
    "global_process_set", "add_process_set", "remove_process_set", "rank_op", "size_op",
    "local_rank_op", "local_size_op", "process_set_included_op", "mpi_built", "mpi_enabled",
    "gloo_built", "gloo_enabled", "nccl_built", "cuda_built", "rocm_built", "ddl_built",
    "ccl_built", "sycl_built", "mpi_threads_supported", "is_homogeneous", "start_timeline",
    "stop_timeline", "check_num_rank_power_of_2", "Average", "Sum", "Min", "Max",
    "Product", "Adasum", "Compression", "DistributedGradientTape",
    "PartialDistributedGradientTape", "reduce_gradients",
    "grouped_allreduce_async", "synchronize", "elastic", "SyncBatchNormalization",
]


def __getattr__(name):
    if name == "SyncBatchNormalization":  # subclasses a Keras layer: imports Keras
        from distrain.tensorflow.sync_batch_norm import SyncBatchNormalization
        globals()[name] = SyncBatchNormalization
        return SyncBatchNormalization
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def join():
    """Horovod's ``join()``: waits, taking part in the other ranks' allreduces with zeros,
    until every rank has joined (:func:`distrain.collectives.join`).

    Returns:
        The global rank that joined last, as an int32 scalar tensor (an op inside
        ``tf.function``).
    """
    return scalar_op(collectives.join)
