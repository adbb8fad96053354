"""Drop-in for ``import horovod.tensorflow as hvd``.

Example:
    >>> import distrain.tensorflow as hvd
    >>> hvd.init()
    >>> with tf.GradientTape() as tape:                     # doctest: +SKIP
    ...     loss = loss_fn(y, model(x, training=True))
    >>> tape = hvd.DistributedGradientTape(tape)            # doctest: +SKIP
    >>> grads = tape.gradient(loss, model.trainable_variables)   # averaged across ranks
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
                                  process_set_included_op, rank, rank_op, reducescatter,
                                  remove_process_set, rocm_built, shutdown, size, size_op,
                                  start_timeline, stop_timeline)
from distrain.ops import Adasum, Average, Compression, Max, Min, Product, Sum
from distrain.overlap import grouped_allreduce_async, overlapped_allreduce, synchronize

__all__ = [
    "init", "shutdown", "is_initialized", "rank", "size", "local_rank", "local_size",
    "cross_rank", "cross_size", "allreduce", "grouped_allreduce", "reducescatter",
    "grouped_reducescatter", "allgather", "grouped_allgather", "alltoall", "broadcast",
    "broadcast_", "broadcast_variables", "broadcast_global_variables", "broadcast_object",
    "broadcast_object_fn", "allgather_object", "barrier", "join", "ProcessSet",
    "global_process_set", "add_process_set", "remove_process_set", "rank_op", "size_op",
    "local_rank_op", "local_size_op", "process_set_included_op", "mpi_built", "mpi_enabled",
    "gloo_built", "gloo_enabled", "nccl_built", "cuda_built", "rocm_built", "ddl_built",
    "ccl_built", "mpi_threads_supported", "is_homogeneous", "start_timeline",
    "stop_timeline", "check_num_rank_power_of_2", "Average", "Sum", "Min", "Max",
    "Product", "Adasum", "Compression", "DistributedGradientTape", "reduce_gradients",
    "grouped_allreduce_async", "synchronize", "elastic",
]


def join():
    """Horovod's ``join()``: waits, taking part in the other ranks' allreduces with zeros,
    until every rank has joined (:func:`distrain.collectives.join`).

    Returns:
        The global rank that joined last, as an int32 scalar tensor (an op inside
        ``tf.function``).
    """
    return scalar_op(collectives.join)


def reduce_gradients(grads, compression=Compression.none, sparse_as_dense: bool = False,
                     op=Average, name: str = "gradients", process_set=global_process_set,
                     gradient_predivide_factor: float = 1.0) -> list:
    """Averages a gradient list across ranks: inside ``tf.function`` in buckets overlapped
    with backward (:mod:`distrain.overlap`), else in one grouped allreduce.

    ``None`` entries (variables the loss does not depend on) stay ``None``. Every rank must
    have ``None`` in the same places. On a rank outside ``process_set``, or a set of one
    rank, the gradients are returned as they are, as Horovod does.

    Args:
        grads: tf.Tensor, tf.IndexedSlices or None entries.
        compression: the wire compression.
        sparse_as_dense: reduce tf.IndexedSlices as dense tensors.
        op: ``Average``, ``Sum`` or ``Adasum``.
        name: shown in error and stall messages.
        process_set: the ranks that reduce together.
        gradient_predivide_factor: with Average, gradients are divided by this before the
            sum and by ``size / factor`` after it, as Horovod's.

    Returns:
        The reduced gradients, in order.

    Raises:
        ValueError: ``gradient_predivide_factor`` with an op other than Average.
    """
    import tensorflow as tf
    grads = list(grads)
    if gradient_predivide_factor != 1.0 and op is not Average:
        raise ValueError("gradient_predivide_factor not supported with op != Average")
    if process_set is not global_process_set and (
            not process_set.included() or process_set.size() <= 1):
        return grads
    present = [i for i, g in enumerate(grads) if g is not None]
    values = [grads[i] for i in present]
    if sparse_as_dense:
        values = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g
                  for g in values]
    reduced = overlapped_allreduce(values, op=op, compression=compression, name=name,
                                   process_set=process_set,
                                   prescale_factor=1.0 / gradient_predivide_factor,
                                   postscale_factor=gradient_predivide_factor)
    out = [None] * len(grads)
    for i, g in zip(present, reduced):
        out[i] = g
    return out


class DistributedGradientTape:
    """Wraps a ``tf.GradientTape`` so that ``gradient()`` returns rank-averaged gradients.

    Everything else is delegated to the wrapped tape. Works eagerly and inside
    ``tf.function``.

    Args:
        gradtape: the tape that recorded the forward pass.
        device_dense, device_sparse: accepted for Horovod compatibility; ignored (the host
            runs the collectives).
        compression: ``Compression.none``, ``.fp16`` or ``.bf16``.
        sparse_as_dense: reduce tf.IndexedSlices as dense tensors.
        op: ``Average`` (default), ``Sum`` or ``Adasum``.
        gradient_predivide_factor: see :func:`reduce_gradients`.
        num_groups, groups: accepted for Horovod's signature; distrain fuses every gradient
            by its own plan.
        process_set: the ranks that reduce together.
        scale_local_gradients: accepted for Horovod's signature (it concerns local layers).
    """

    def __init__(self, gradtape, device_dense="", device_sparse="",
                 compression=Compression.none, sparse_as_dense=False, op=Average,
                 gradient_predivide_factor=1.0, num_groups=0, groups=None,
                 process_set=global_process_set, scale_local_gradients=True):
        if gradient_predivide_factor != 1.0 and op is not Average:
            raise ValueError("gradient_predivide_factor not supported with op != Average")
        self._tape = gradtape
        self._compression = compression
        self._sparse_as_dense = sparse_as_dense
        self._op = op
        self._predivide = gradient_predivide_factor
        self._process_set = process_set

    def __enter__(self):
        self._tape.__enter__()
        return self

    def __exit__(self, *exc):
        return self._tape.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._tape, name)

    def gradient(self, target, sources, output_gradients=None, **kwargs):
        """The wrapped tape's gradients, averaged across ranks (same structure)."""
        import tensorflow as tf
        grads = self._tape.gradient(target, sources, output_gradients, **kwargs)
        flat = tf.nest.flatten(grads, expand_composites=False)
        reduced = reduce_gradients(flat, self._compression, self._sparse_as_dense, self._op,
                                   process_set=self._process_set,
                                   gradient_predivide_factor=self._predivide)
        return tf.nest.pack_sequence_as(grads, reduced)
