"""``DistributedOptimizer``: a Keras optimizer whose updates use rank-averaged gradients.

The optimizer's own class is subclassed once per class, overriding the one method every
Keras training path goes through: ``apply`` in Keras 3 (``apply_gradients`` and
``model.fit`` both call it) and ``apply_gradients`` in Keras 2. The instance is rebuilt from
the original's config, so it is an ordinary ``SGD``/``Adam``/... for ``compile``, ``fit`` and
saving: the subclass has the base's name and module, so ``model.save`` writes the base class
and a plain ``keras.models.load_model`` gives the plain optimizer back
(:func:`distrain.keras.load_model` wraps it again).
"""
from __future__ import annotations

from distrain.keras_compat import is_keras3, share_registered_name
from distrain.ops import Average, Compression, Sum
from distrain.process_sets import global_process_set
from distrain.tensorflow import reduce_gradients

__all__ = ["DistributedOptimizer", "distribute_in_place"]

_CLASSES: dict = {}


def _distributed_class(base):
    if base in _CLASSES:
        return _CLASSES[base]
    if is_keras3():
        def apply(self, grads, trainable_variables=None):
            grads = reduce_gradients(grads, self._distrain_compression,
                                     self._distrain_sparse_as_dense, self._distrain_op,
                                     "optimizer gradients", self._distrain_process_set,
                                     self._distrain_predivide)
            return base.apply(self, grads, trainable_variables)
        methods = {"apply": apply}
    else:
        def apply_gradients(self, grads_and_vars, *args, **kwargs):
            grads_and_vars = list(grads_and_vars)
            grads = reduce_gradients([g for g, _ in grads_and_vars],
                                     self._distrain_compression,
                                     self._distrain_sparse_as_dense, self._distrain_op,
                                     "optimizer gradients", self._distrain_process_set,
                                     self._distrain_predivide)
            return base.apply_gradients(self, list(zip(grads, [v for _, v in grads_and_vars])),
                                        *args, **kwargs)
        methods = {"apply_gradients": apply_gradients}
    cls = type(base.__name__, (base,), dict(methods, __module__=base.__module__,
                                            __doc__=f"{base.__name__}, rank-averaged."))
    share_registered_name(base, cls)
    _CLASSES[base] = cls
    return cls


def DistributedOptimizer(optimizer, name=None, device_dense="", device_sparse="",
                         compression=Compression.none, sparse_as_dense=False,
                         gradient_predivide_factor=1.0, op=Average, backward_passes_per_step=1,
                         average_aggregated_gradients=False, num_groups=0, groups=None,
                         process_set=global_process_set, scale_local_gradients=True):
    """Returns a copy of ``optimizer`` that averages gradients across ranks before applying.

    Args:
        optimizer: a Keras optimizer (not yet used for training).
        name: a new name for the optimizer.
        device_dense, device_sparse: accepted for Horovod compatibility; ignored.
        compression: ``Compression.none``, ``.fp16`` or ``.bf16``.
        sparse_as_dense: reduce tf.IndexedSlices as dense tensors.
        gradient_predivide_factor: with Average, gradients are divided by this before the
            sum and by ``size / factor`` after it.
        op: ``Average`` (default) or ``Sum``.
        backward_passes_per_step: only 1 is supported.
        average_aggregated_gradients, num_groups, groups, scale_local_gradients: accepted
            for Horovod's signature; distrain fuses every gradient by its own plan.
        process_set: the ranks that reduce together; other ranks apply their own gradients.

    Returns:
        The distributed optimizer.

    Raises:
        ValueError: an op other than Average or Sum; ``gradient_predivide_factor`` with Sum;
            ``backward_passes_per_step`` is not 1.
    """
    if op not in (Average, Sum):
        raise ValueError("op currently only supports Average and Sum")
    if gradient_predivide_factor != 1.0 and op is not Average:
        raise ValueError("gradient_predivide_factor not supported with op != Average")
    if backward_passes_per_step != 1:
        raise ValueError("distrain's DistributedOptimizer reduces every step; "
                         "backward_passes_per_step must be 1 (accumulate gradients in "
                         "your own loop and call distrain.grouped_allreduce instead)")
    config = optimizer.get_config()
    if name is not None:
        config["name"] = name
    distributed = _distributed_class(type(optimizer)).from_config(config)
    _configure(distributed, compression, sparse_as_dense, op, process_set,
               gradient_predivide_factor)
    return distributed


def distribute_in_place(optimizer, compression=Compression.none):
    """Makes ``optimizer`` itself distributed, keeping its state (iterations, slots): for an
    optimizer Keras has just loaded with a model (:func:`distrain.keras.load_model`).

    Args:
        optimizer: a Keras optimizer.
        compression: the wire compression of its gradient allreduce.

    Returns:
        The same object, now an instance of the distributed subclass of its class.
    """
    if type(optimizer) not in _CLASSES.values():
        optimizer.__class__ = _distributed_class(type(optimizer))
    _configure(optimizer, compression, False, Average, global_process_set, 1.0)
    return optimizer


def _configure(optimizer, compression, sparse_as_dense, op, process_set, predivide) -> None:
    optimizer._distrain_compression = compression
    optimizer._distrain_sparse_as_dense = sparse_as_dense
    optimizer._distrain_op = op
    optimizer._distrain_process_set = process_set
    optimizer._distrain_predivide = predivide
