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

from distrain import elastic
from distrain.collectives import (allgather, allreduce, barrier, broadcast,
                                  broadcast_variables, cross_rank, cross_size,
                                  grouped_allreduce, init, is_initialized, local_rank,
                                  local_size, rank, shutdown, size)
from distrain.ops import Average, Compression, Max, Min, Sum
from distrain.overlap import grouped_allreduce_async, overlapped_allreduce, synchronize

__all__ = [
    "init", "shutdown", "is_initialized", "rank", "size", "local_rank", "local_size",
    "cross_rank", "cross_size", "allreduce", "grouped_allreduce", "broadcast",
    "broadcast_variables", "allgather", "barrier", "Average", "Sum", "Min", "Max",
    "Compression", "DistributedGradientTape", "reduce_gradients", "grouped_allreduce_async",
    "synchronize", "elastic",
]


def reduce_gradients(grads, compression=Compression.none, sparse_as_dense: bool = False,
                     op=Average, name: str = "gradients") -> list:
    """Averages a gradient list across ranks: inside ``tf.function`` in buckets overlapped
    with backward (:mod:`distrain.overlap`), else in one grouped allreduce.

    ``None`` entries (variables the loss does not depend on) stay ``None``. Every rank must
    have ``None`` in the same places.

    Args:
        grads: tf.Tensor, tf.IndexedSlices or None entries.
        compression: the wire compression.
        sparse_as_dense: reduce tf.IndexedSlices as dense tensors.
        op: ``Average`` or ``Sum``.
        name: shown in error and stall messages.

    Returns:
        The reduced gradients, in order.
    """
    import tensorflow as tf
    grads = list(grads)
    present = [i for i, g in enumerate(grads) if g is not None]
    values = [grads[i] for i in present]
    if sparse_as_dense:
        values = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g
                  for g in values]
    reduced = overlapped_allreduce(values, op=op, compression=compression, name=name)
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
        op: ``Average`` (default) or ``Sum``.
    """

    def __init__(self, gradtape, device_dense="", device_sparse="",
                 compression=Compression.none, sparse_as_dense=False, op=Average, **unused):
        self._tape = gradtape
        self._compression = compression
        self._sparse_as_dense = sparse_as_dense
        self._op = op

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
        reduced = reduce_gradients(flat, self._compression, self._sparse_as_dense, self._op)
        return tf.nest.pack_sequence_as(grads, reduced)
