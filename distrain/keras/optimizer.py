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

from distrain.engine.tensors import as_written
from distrain.keras_compat import is_keras3, share_registered_name
from distrain.ops import Average, Compression, Sum
from distrain.process_sets import global_process_set
from distrain.tensorflow.accumulation import GradientAccumulator, check_passes
from distrain.tensorflow.reduction import GradientReduction
from distrain.tensorflow.tape import local_variables

__all__ = ["DistributedOptimizer", "PartialDistributedOptimizer", "distribute_in_place"]

_CLASSES: dict = {}


def _reduced(optimizer, grads, variables) -> list:
    """The gradients to apply: reduced now, or accumulated (reduced every N passes)."""
    if optimizer._distrain_accumulator is not None:
        return optimizer._distrain_accumulator.gradients(grads, variables)
    return optimizer._distrain_reduction.reduce(grads, variables)


def _step(optimizer, apply):
    """Runs ``apply`` now, or through the accumulator (only on every N-th pass)."""
    if optimizer._distrain_accumulator is None:
        return apply()
    return optimizer._distrain_accumulator.apply(apply, optimizer.iterations)


def _distributed_class(base):
    if base in _CLASSES:
        return _CLASSES[base]

    def register_local_var(self, var):
        """Keeps ``var``'s gradient on this rank (Horovod's ``register_local_var``)."""
        self._distrain_reduction.register_local(var)

    if is_keras3():
        def apply(self, grads, trainable_variables=None):
            variables = list(trainable_variables) if trainable_variables is not None \
                else list(self._trainable_variables)
            grads = _reduced(self, list(grads), variables)
            if self._distrain_accumulator is not None and not self.built:
                self.build(variables)     # not inside the accumulator's tf.cond
            return _step(self, lambda: base.apply(self, grads, trainable_variables))
        methods = {"apply": apply}
    else:
        def apply_gradients(self, grads_and_vars, *args, **kwargs):
            grads_and_vars = list(grads_and_vars)
            variables = [v for _, v in grads_and_vars]
            grads = _reduced(self, [g for g, _ in grads_and_vars], variables)
            pairs = list(zip(grads, variables))
            return _step(self, lambda: base.apply_gradients(self, pairs, *args, **kwargs))
        methods = {"apply_gradients": apply_gradients}
    methods = {name: as_written(method) for name, method in methods.items()}
    methods["register_local_var"] = register_local_var
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
    """Returns a copy of ``optimizer`` that reduces gradients across ranks before applying.

    Args:
        optimizer: a Keras optimizer (not yet used for training).
        name: a new name for the optimizer.
        device_dense, device_sparse: accepted for Horovod compatibility; ignored (the host
            runs the collectives).
        compression: ``Compression.none``, ``.fp16`` or ``.bf16``.
        sparse_as_dense: reduce tf.IndexedSlices as dense tensors.
        gradient_predivide_factor: with Average, gradients are divided by this before the
            sum and by ``size / factor`` after it.
        op: ``Average`` (default) or ``Sum``.
        backward_passes_per_step: N > 1 accumulates N passes' gradients locally and
            reduces and applies them every N-th pass; ``iterations`` still counts every
            pass, as Horovod's.
        average_aggregated_gradients: divide the accumulated gradients by N (else their
            sum is applied).
        num_groups, groups: explicit grouping of the gradient allreduces
            (:class:`distrain.tensorflow.DistributedGradientTape`).
        process_set: the ranks that reduce together; other ranks apply their own gradients.
        scale_local_gradients: divide local variables' gradients
            (``register_local_var``, :func:`PartialDistributedOptimizer`) by the set's size.

    Returns:
        The distributed optimizer, an instance of a subclass of ``optimizer``'s class with
        the same name.

    Raises:
        ValueError: an op other than Average or Sum; ``gradient_predivide_factor`` with
            Sum; ``backward_passes_per_step`` below 1; ``groups`` of the wrong kind.
    """
    if op not in (Average, Sum):
        raise ValueError("op currently only supports Average and Sum")
    reduction = GradientReduction.of(compression, sparse_as_dense, op,
                                     gradient_predivide_factor, num_groups, groups,
                                     process_set, scale_local_gradients,
                                     name="optimizer gradients")
    passes = check_passes(backward_passes_per_step)
    config = optimizer.get_config()
    if name is not None:
        config["name"] = name
    distributed = _distributed_class(type(optimizer)).from_config(config)
    distributed._distrain_reduction = reduction
    distributed._distrain_accumulator = None if passes == 1 else GradientAccumulator(
        passes, reduction.reduce, sparse_as_dense, average_aggregated_gradients)
    return distributed


def PartialDistributedOptimizer(optimizer, name=None, device_dense="", device_sparse="",
                                compression=Compression.none, sparse_as_dense=False,
                                gradient_predivide_factor=1.0, op=Average,
                                backward_passes_per_step=1, average_aggregated_gradients=False,
                                groups=None, process_set=global_process_set, local_layers=None,
                                scale_local_gradients=True):
    """A :func:`DistributedOptimizer` that leaves ``local_layers``' gradients on their rank
    (divided by the set's size when ``scale_local_gradients``, as Horovod does).

    Args:
        local_layers: a Keras layer or layers whose variables stay local; None makes it
            a plain :func:`DistributedOptimizer`.
        the rest: as :func:`DistributedOptimizer`.

    Raises:
        ValueError: an entry of ``local_layers`` is not a Keras layer; see
            :func:`DistributedOptimizer`.
    """
    variables = local_variables(local_layers)
    distributed = DistributedOptimizer(
        optimizer, name, device_dense, device_sparse, compression, sparse_as_dense,
        gradient_predivide_factor, op, backward_passes_per_step, average_aggregated_gradients,
        groups=groups, process_set=process_set, scale_local_gradients=scale_local_gradients)
    for variable in variables:
        distributed.register_local_var(variable)
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
    optimizer._distrain_reduction = GradientReduction.of(compression,
                                                         name="optimizer gradients")
    optimizer._distrain_accumulator = None
    return optimizer
