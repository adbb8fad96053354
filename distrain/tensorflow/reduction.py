"""How a list of gradients is reduced across ranks: Horovod 0.28.1's options of
``DistributedGradientTape`` and ``DistributedOptimizer`` in one record.

:func:`reduce_gradients` reduces a gradient list (overlapped with backward inside
``tf.function``, see :mod:`distrain.overlap`). :class:`GradientReduction` adds what the
tape and the optimizer share: explicit ``groups`` (each group one grouped allreduce),
local variables whose gradients stay on their rank (``PartialDistributedGradientTape``,
``PartialDistributedOptimizer``), and Horovod's scaling of those local gradients by
``1 / size`` (``scale_local_gradients``).

Example:
    >>> reduction = GradientReduction.of(groups=2)              # doctest: +SKIP
    >>> reduction.reduce(grads, model.trainable_variables)      # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Sequence

from distrain.engine.tensors import as_written
from distrain.ops import Average, Compression
from distrain.overlap import overlapped_allreduce
from distrain.process_sets import global_process_set

__all__ = ["reduce_gradients", "GradientReduction", "group_indices", "check_groups"]


@as_written
def reduce_gradients(grads, compression=Compression.none, sparse_as_dense: bool = False,
                     op=Average, name: str = "gradients", process_set=global_process_set,
                     gradient_predivide_factor: float = 1.0, groups=None) -> list:
    """Reduces a gradient list across ranks: inside ``tf.function`` in buckets overlapped
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
        groups: lists of positions in ``grads``, each reduced in a grouped allreduce of its
            own (positions in no list each alone); None: distrain's own plan for all.

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
    if sparse_as_dense:
        grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g
                 for g in grads]
    present = [i for i, g in enumerate(grads) if g is not None]
    if groups is None:
        batches = [present]
    else:
        listed = {i for group in groups for i in group}
        batches = [[i for i in group if grads[i] is not None] for group in groups]
        batches += [[i] for i in present if i not in listed]
    out = [None] * len(grads)
    for batch in (b for b in batches if b):
        reduced = overlapped_allreduce([grads[i] for i in batch], op=op,
                                       compression=compression, name=name,
                                       process_set=process_set,
                                       prescale_factor=1.0 / gradient_predivide_factor,
                                       postscale_factor=gradient_predivide_factor)
        for i, g in zip(batch, reduced):
            out[i] = g
    return out


def check_groups(num_groups, groups):
    """Horovod's ``num_groups``/``groups`` arguments made one ``groups`` value.

    Returns:
        None, a positive int (that many groups of consecutive gradients), or a list of
        lists of variables.

    Raises:
        ValueError: ``groups`` is neither a non-negative int nor a list of lists.
    """
    if num_groups:
        warnings.warn("Parameter `num_groups` has been replaced by `groups` and will be "
                      "removed in v0.23.0.", DeprecationWarning, stacklevel=3)
        if groups is None:
            groups = num_groups
    if groups is None:
        return None
    if isinstance(groups, list) and all(isinstance(g, (list, tuple)) for g in groups):
        return groups
    if isinstance(groups, int) and not isinstance(groups, bool) and groups >= 0:
        return groups or None
    raise ValueError("groups should be a non-negative integer or a list of list of "
                     "tf.Variable.")


def group_indices(groups, variables: Sequence, present: Sequence[int]) -> list | None:
    """Positions in a gradient list, grouped as Horovod's ``groups`` says.

    Args:
        groups: from :func:`check_groups`.
        variables: the variables the gradients belong to, in order.
        present: positions that have a gradient.

    Returns:
        None (no explicit groups) or lists of positions: for an int, the present positions
        split into that many consecutive groups (the first ones one longer, as Horovod's
        ``split_list``); for lists of variables, one list per group, matched by identity.
    """
    if groups is None:
        return None
    if isinstance(groups, int):
        count = min(groups, len(present)) or 1
        base, extra = divmod(len(present), count)
        out, at = [], 0
        for g in range(count):
            take = base + (g < extra)
            out.append(list(present[at:at + take]))
            at += take
        return out
    position = {_identity(v): i for i, v in enumerate(variables)}
    return [[position[_identity(v)] for v in group if _identity(v) in position]
            for group in groups]


def _identity(variable):
    """What tells variables apart: ``ref()`` for TensorFlow's, the object otherwise."""
    ref = getattr(variable, "ref", None)
    return ref() if callable(ref) else id(variable)


@dataclasses.dataclass
class GradientReduction:
    """Horovod's gradient-reduction options, shared by the tape and the optimizer.

    Attributes:
        compression, sparse_as_dense, op, gradient_predivide_factor, process_set: as
            :func:`reduce_gradients`.
        groups: from :func:`check_groups`.
        scale_local_gradients: divide local variables' gradients by the set's size.
        name: shown in error and stall messages.
    """
    compression: object = Compression.none
    sparse_as_dense: bool = False
    op: object = Average
    gradient_predivide_factor: float = 1.0
    groups: object = None
    process_set: object = global_process_set
    scale_local_gradients: bool = True
    name: str = "gradients"
    local: set = dataclasses.field(default_factory=set)

    @classmethod
    def of(cls, compression=Compression.none, sparse_as_dense=False, op=Average,
           gradient_predivide_factor=1.0, num_groups=0, groups=None,
           process_set=global_process_set, scale_local_gradients=True,
           name="gradients") -> "GradientReduction":
        """Checks Horovod's arguments and returns the record.

        Raises:
            ValueError: ``gradient_predivide_factor`` with an op other than Average, or
                ``groups`` of the wrong kind.
        """
        if gradient_predivide_factor != 1.0 and op is not Average:
            raise ValueError("gradient_predivide_factor not supported with op != Average")
        return cls(compression, sparse_as_dense, op, gradient_predivide_factor,
                   check_groups(num_groups, groups), process_set, scale_local_gradients,
                   name)

    def register_local(self, variable) -> None:
        """Keeps ``variable``'s gradient on this rank (Horovod's ``register_local_source``)."""
        self.local.add(_identity(variable))

    @as_written
    def reduce(self, grads: Sequence, variables: Sequence | None = None) -> list:
        """Reduces ``grads`` (of ``variables``, in order) across the set's ranks.

        Local variables' gradients are not sent; with ``scale_local_gradients`` and any
        local variable, they are divided by the set's size, as Horovod does.

        Args:
            grads: tf.Tensor, tf.IndexedSlices or None entries.
            variables: the variables the gradients belong to (needed for local variables
                and for groups given as variables).

        Returns:
            The gradients, in order.
        """
        import tensorflow as tf
        grads = list(grads)
        if variables is None:
            variables = [None] * len(grads)
        local = [i for i, v in enumerate(variables)
                 if v is not None and _identity(v) in self.local]
        shared = sorted(set(range(len(grads))) - set(local))
        present = [k for k, i in enumerate(shared) if grads[i] is not None]
        groups = group_indices(self.groups, [variables[i] for i in shared], present)
        reduced = reduce_gradients([grads[i] for i in shared], self.compression,
                                   self.sparse_as_dense, self.op, self.name,
                                   self.process_set, self.gradient_predivide_factor, groups)
        out = list(grads)
        for i, g in zip(shared, reduced):
            out[i] = g
        if self.scale_local_gradients and local:
            size = self.process_set.size() or 1
            for i in local:
                g = out[i]
                if isinstance(g, tf.IndexedSlices):
                    out[i] = tf.IndexedSlices(g.values / size, g.indices, g.dense_shape)
                elif g is not None:
                    out[i] = g / size
        return out
