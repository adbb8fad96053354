"""Horovod's gradient tapes: ``DistributedGradientTape`` and
``PartialDistributedGradientTape``.

Example:
    >>> with tf.GradientTape() as tape:                                  # doctest: +SKIP
    ...     loss = loss_fn(y, model(x, training=True))
    >>> tape = hvd.PartialDistributedGradientTape(tape, local_layers=[model.layers[-1]])
    >>> grads = tape.gradient(loss, model.trainable_variables)           # doctest: +SKIP
"""
from __future__ import annotations

from distrain.engine.tensors import as_written
from distrain.ops import Average, Compression
from distrain.process_sets import global_process_set
from distrain.tensorflow.reduction import GradientReduction

__all__ = ["DistributedGradientTape", "PartialDistributedGradientTape", "local_variables"]


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
        gradient_predivide_factor: with Average, gradients are divided by this before the
            sum and by ``size / factor`` after it.
        num_groups: deprecated in Horovod for ``groups``; used as ``groups`` when that is
            None.
        groups: an int n (the gradients in n grouped allreduces of consecutive gradients)
            or lists of variables (each list one grouped allreduce, every other gradient
            alone); None: distrain's own fusion plan.
        process_set: the ranks that reduce together.
        scale_local_gradients: divide the gradients of local sources
            (:meth:`register_local_source`) by the set's size.

    Raises:
        ValueError: ``gradient_predivide_factor`` with an op other than Average;
            ``groups`` of the wrong kind.
    """

    def __init__(self, gradtape, device_dense="", device_sparse="",
                 compression=Compression.none, sparse_as_dense=False, op=Average,
                 gradient_predivide_factor=1.0, num_groups=0, groups=None,
                 process_set=global_process_set, scale_local_gradients=True):
        self._tape = gradtape
        self._reduction = GradientReduction.of(
            compression, sparse_as_dense, op, gradient_predivide_factor, num_groups, groups,
            process_set, scale_local_gradients, name="gradients")
        self.process_set = process_set
        self.scale_local_gradients = scale_local_gradients

    def __enter__(self):
        self._tape.__enter__()
        return self

    def __exit__(self, *exc):
        return self._tape.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._tape, name)

    def register_local_source(self, source) -> None:
        """Keeps ``source``'s gradient on this rank: it is not reduced (and is divided by
        the set's size when ``scale_local_gradients``)."""
        self._reduction.register_local(source)

    @as_written
    def gradient(self, target, sources, output_gradients=None, use_generic_names=False):
        """The wrapped tape's gradients, reduced across ranks (same structure).

        Args:
            target: the loss.
            sources: a variable, or a nested structure of them.
            output_gradients: as ``tf.GradientTape.gradient``.
            use_generic_names: accepted for Horovod's signature.
        """
        import tensorflow as tf
        grads = self._tape.gradient(target, sources, output_gradients)
        flat = tf.nest.flatten(grads, expand_composites=False)
        flat_sources = tf.nest.flatten(sources, expand_composites=False)
        reduced = self._reduction.reduce(flat, flat_sources)
        return tf.nest.pack_sequence_as(grads, reduced)


def local_variables(local_layers) -> list:
    """The trainable variables of Horovod's ``local_layers`` argument.

    Args:
        local_layers: None, a Keras layer, or a collection of Keras layers.

    Raises:
        ValueError: an entry is not a Keras layer (Horovod's message).
    """
    import keras
    if local_layers is None:
        return []
    if isinstance(local_layers, keras.layers.Layer):
        local_layers = [local_layers]
    local_layers = list(local_layers)
    if not all(isinstance(layer, keras.layers.Layer) for layer in local_layers):
        raise ValueError("All local layers must be of tf.keras.layers.Layer type.")
    return [v for layer in local_layers for v in layer.trainable_weights]


def PartialDistributedGradientTape(gradtape, device_dense="", device_sparse="",
                                   compression=Compression.none, sparse_as_dense=False,
                                   op=Average, gradient_predivide_factor=1.0, num_groups=0,
                                   groups=None, process_set=global_process_set,
                                   local_layers=None, scale_local_gradients=True):
    """A :class:`DistributedGradientTape` that leaves ``local_layers``' gradients on their
    rank (divided by the set's size when ``scale_local_gradients``, as Horovod does).

    Args:
        local_layers: a Keras layer or layers whose variables stay local; None makes it
            a plain :class:`DistributedGradientTape`.
        the rest: as :class:`DistributedGradientTape`.

    Raises:
        ValueError: an entry of ``local_layers`` is not a Keras layer.
    """
    variables = local_variables(local_layers)
    tape = DistributedGradientTape(gradtape, device_dense, device_sparse, compression,
                                   sparse_as_dense, op, gradient_predivide_factor, num_groups,
                                   groups, process_set, scale_local_gradients)
    for variable in variables:
        tape.register_local_source(variable)
    return tape
