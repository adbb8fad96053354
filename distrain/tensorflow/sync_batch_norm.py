"""``SyncBatchNormalization``: batch normalization whose training statistics cover the batch
of every rank, as Horovod 0.28.1's ``hvd.SyncBatchNormalization``.

In training, each rank sums its rows' values, squares and count per channel; one allreduce
(Sum) of the three gives every rank the global batch's mean and variance, so the layer's
output and its moving statistics are those of ``keras.layers.BatchNormalization`` given the
concatenation of every rank's batch. The allreduce is differentiable (its gradient is the
allreduce of the upstream gradients, :mod:`distrain.gradients`), so the gradient of this
rank's input includes the other ranks' losses through the shared statistics, and averaged
weight gradients (``DistributedGradientTape``, ``DistributedOptimizer``) are those of one
process on the global batch. In inference the moving statistics are used, with no
collective.

The statistics are computed in ``BatchNormalization._moments``, the hook Horovod overrides
too; everything else (masks, ``renorm``, the moving averages, float16 inputs, Keras 2's
``virtual_batch_size``) is Keras's own. The hook's signature differs between Keras 2
(TensorFlow 2.15) and Keras 3, and this module overrides the one the loaded Keras has.

Example:
    >>> import distrain.keras as hvd
    >>> hvd.init()
    >>> model = keras.Sequential([keras.layers.Conv2D(16, 3),
    ...                           hvd.SyncBatchNormalization(),
    ...                           keras.layers.ReLU()])          # doctest: +SKIP
"""
from __future__ import annotations

import inspect

import keras
import tensorflow as tf

from distrain import collectives
from distrain.keras_compat import is_keras3
from distrain.ops import Sum

__all__ = ["SyncBatchNormalization", "synchronized"]

# The parameters (after self) of the BatchNormalization._moments this module overrides.
_KERAS3_HOOK = ("inputs", "mask")
_KERAS2_HOOK = ("inputs", "reduction_axes", "keep_dims", "mask")


def _check_keras_hook() -> None:
    """Raises NotImplementedError when the loaded Keras computes batch statistics somewhere
    other than the ``_moments`` this module overrides (a Keras newer than this module)."""
    expected = _KERAS3_HOOK if is_keras3() else _KERAS2_HOOK
    hook = getattr(keras.layers.BatchNormalization, "_moments", None)
    found = tuple(inspect.signature(hook).parameters)[1:] if hook is not None else None
    if found != expected:
        raise NotImplementedError(
            f"SyncBatchNormalization computes its statistics in "
            f"BatchNormalization._moments({', '.join(expected)}), but Keras "
            f"{keras.__version__} has " + ("no _moments" if found is None else
                                           f"_moments({', '.join(found)})") +
            ": use Keras 2.15 or a Keras 3 release this distrain supports")


@tf.autograph.experimental.do_not_convert
def _global_moments(inputs, axes, keepdims: bool, mask, name: str):
    """The mean and variance over ``axes`` of every rank's ``inputs``, each row weighted by
    ``mask`` (1 where None), in one allreduce.

    Args:
        inputs: this rank's batch (float32 or wider; Keras casts 16-bit inputs first).
        axes: the reduced axes (every axis but the channels').
        keepdims: keep the reduced axes, with size 1.
        mask: None, or weights of ``inputs``' shape without its last axis (Keras's mask).
        name: shown in error and stall messages.

    Returns:
        ``(mean, variance)``, the biased variance as BatchNormalization's, 0 and 0 for a
        channel with no rows on any rank.
    """
    # Each rank's own moments are two-pass in the input's dtype (exact as tf.nn.moments);
    # only the per-channel vectors are combined, in float64: Var = E[x^2] - E[x]^2 from
    # float32 sums cancels catastrophically when a channel's mean is large against its
    # spread (a ResNet's stem after ReLU).
    if mask is None:
        rows = tf.cast(tf.reduce_prod(tf.gather(tf.shape(inputs), axes)), inputs.dtype)
        local_mean = tf.math.divide_no_nan(tf.reduce_sum(inputs, axes, keepdims=True), rows)
        deviations = tf.reduce_sum(tf.square(inputs - local_mean), axes, keepdims=True)
        counts = tf.ones_like(local_mean, tf.float64) * tf.cast(rows, tf.float64)
    else:
        weights = tf.broadcast_to(tf.expand_dims(tf.cast(mask, inputs.dtype), -1),
                                  tf.shape(inputs))
        weight_sum = tf.reduce_sum(weights, axes, keepdims=True)
        local_mean = tf.math.divide_no_nan(tf.reduce_sum(weights * inputs, axes, keepdims=True),
                                           weight_sum)
        deviations = tf.reduce_sum(weights * tf.square(inputs - local_mean), axes,
                                   keepdims=True)
        counts = tf.cast(weight_sum, tf.float64)
    local_mean = tf.cast(local_mean, tf.float64)
    total = counts * local_mean
    squares = tf.cast(deviations, tf.float64) + total * local_mean
    summed = collectives.allreduce(tf.stack([counts, total, squares]), op=Sum, name=name)
    counts, total, squares = tf.unstack(summed)
    mean = tf.math.divide_no_nan(total, counts)
    variance = tf.maximum(tf.math.divide_no_nan(squares, counts) - tf.square(mean), 0.0)
    mean, variance = tf.cast(mean, inputs.dtype), tf.cast(variance, inputs.dtype)
    if not keepdims:
        mean, variance = tf.squeeze(mean, axes), tf.squeeze(variance, axes)
    return mean, variance


@keras.saving.register_keras_serializable(package="distrain")
class SyncBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` whose training statistics are those of the batch of
    every rank (Horovod's ``hvd.SyncBatchNormalization``).

    Training on N ranks with this layer gives the outputs, moving statistics and averaged
    gradients of one process training ``BatchNormalization`` on the N batches concatenated.
    Ranks may have batches of different sizes: each contributes its row count (Horovod
    averages the ranks' means, which is the same when every batch has the same size); a
    rank with an empty batch, or one that has called ``join()``, contributes nothing. Every
    rank must call the layer in training together, since each call is an allreduce over the
    global set (Horovod 0.28.1's layer takes no process set either). On one rank it is
    exactly ``BatchNormalization``. Inference uses the moving statistics, with no
    collective.

    The variance is that of the global batch: each rank's own mean and sum of squared
    deviations (two-pass, in the input's dtype, as BatchNormalization's), combined across
    ranks in float64. Keras's synchronized batch normalization takes ``E[x^2] - E[x]^2``
    from float32 sums instead, which cancels for channels whose mean is far larger than
    their spread (a toy ResNet's gradients were 0.4 % off after one step).

    Registered for saving as ``distrain>SyncBatchNormalization``: a model saved with it loads
    wherever ``distrain.keras`` (or this module) is imported; on Keras 2,
    ``custom_objects={"SyncBatchNormalization": SyncBatchNormalization}`` works too.
    Unlike Horovod, which names every instance ``sync_batch_normalization``, an unnamed
    layer gets Keras's unique name (``sync_batch_normalization``, ``..._1``, ...), so a
    model may hold more than one.

    Args:
        fused: only False (the fused kernels compute the statistics of one rank); Keras 3
            has no fused kernel and is given no such argument.
        **kwargs: ``keras.layers.BatchNormalization``'s arguments (``axis``, ``momentum``,
            ``epsilon``, ``center``, ``scale``, initializers, ``renorm``, ...); Keras 3's
            ``synchronized`` concerns ``tf.distribute`` strategies and is not needed here.

    Raises:
        ValueError: ``fused`` is True or None (Horovod's check).
        NotImplementedError: the loaded Keras computes batch statistics somewhere other
            than the ``_moments`` hook this class overrides.
    """

    def __init__(self, fused=False, **kwargs):
        if fused in (True, None):
            raise ValueError("SyncBatchNormalization does not support fused=True: "
                             "leave fused out (or pass fused=False)")
        _check_keras_hook()
        if not is_keras3():
            kwargs["fused"] = False
        super().__init__(**kwargs)

    def _statistics_name(self) -> str:
        return f"{self.name} (SyncBatchNormalization statistics)"

    if is_keras3():
        def _moments(self, inputs, mask):
            """Keras 3's hook: the global batch's mean and variance, one value a channel."""
            if collectives.size() == 1:
                return super()._moments(inputs, mask)
            return _global_moments(inputs, self._reduction_axes, False, mask,
                                   self._statistics_name())
    else:
        def _moments(self, inputs, reduction_axes, keep_dims, mask=None):
            """Keras 2's hook: the global batch's mean and variance over
            ``reduction_axes``."""
            if collectives.size() == 1:
                return super()._moments(inputs, reduction_axes, keep_dims, mask=mask)
            return _global_moments(inputs, reduction_axes, keep_dims, mask,
                                   self._statistics_name())


def synchronized(model):
    """A copy of a functional or Sequential ``model`` whose ``BatchNormalization`` layers are
    :class:`SyncBatchNormalization` layers with the same configuration, holding the same
    weights (``python -m distrain.train --sync-batch-norm``); other layers are copied as
    ``keras.models.clone_model`` copies them.

    Example:
        >>> model = synchronized(keras.applications.ResNet50(weights=None))  # doctest: +SKIP
    """
    def clone(layer):
        if type(layer) is keras.layers.BatchNormalization:
            config = layer.get_config()
            config.pop("fused", None)
            config.pop("synchronized", None)
            return SyncBatchNormalization.from_config(config)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy
