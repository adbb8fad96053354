"""Local gradient accumulation: Horovod's ``backward_passes_per_step``.

Each backward pass adds its gradients to per-gradient accumulators on this rank; every
``backward_passes_per_step``-th pass reduces the accumulated sums across ranks (divided by
the pass count when ``average_aggregated_gradients``), clears the accumulators, and the
optimizer applies them. On the other passes the optimizer applies nothing and only counts
the pass in its ``iterations``, as Horovod's does, so ``iterations`` counts backward passes.

Eagerly and inside ``tf.function`` alike: the choice is a ``tf.cond`` on a counter
variable, which every rank advances in step, so every rank takes the same branch and the
collectives of the reducing pass stay in one order.

Example:
    >>> accumulator = GradientAccumulator(4, reduction.reduce)    # doctest: +SKIP
    >>> grads = accumulator.gradients(grads, variables)             # doctest: +SKIP
    >>> accumulator.apply(lambda: optimizer.apply(grads), optimizer.iterations)  # +SKIP
"""
from __future__ import annotations

from typing import Callable, Sequence

from distrain.engine.tensors import as_written

__all__ = ["GradientAccumulator", "check_passes"]


def check_passes(backward_passes_per_step) -> int:
    """Horovod's check of ``backward_passes_per_step``.

    Raises:
        ValueError: not an int of at least 1.
    """
    if isinstance(backward_passes_per_step, bool) or \
            not isinstance(backward_passes_per_step, int) or backward_passes_per_step <= 0:
        raise ValueError("backward_passes_per_step must be > 0")
    return backward_passes_per_step


class GradientAccumulator:
    """Accumulates gradients locally and reduces them every ``passes`` backward passes.

    Args:
        passes: ``backward_passes_per_step`` (at least 2 to be useful).
        reduce: ``(grads, variables) -> grads``, the cross-rank reduction.
        sparse_as_dense: accumulate tf.IndexedSlices as dense tensors.
        average_aggregated_gradients: divide the reduced sums by ``passes``.
    """

    def __init__(self, passes: int, reduce: Callable[[list, list], list],
                 sparse_as_dense: bool = False, average_aggregated_gradients: bool = False):
        import tensorflow as tf
        self.passes = check_passes(passes)
        self._reduce = reduce
        self._sparse_as_dense = sparse_as_dense
        self._average = average_aggregated_gradients
        self._sums: dict[int, object] = {}
        with tf.init_scope():
            self.counter = tf.Variable(0, dtype=tf.int64, trainable=False,
                                       name="backward_passes")

    @as_written
    def gradients(self, grads: Sequence, variables: Sequence) -> list:
        """Adds this pass's gradients and returns what the optimizer should see.

        Args:
            grads: this pass's gradients (None where a variable has none).
            variables: the variables they belong to.

        Returns:
            On a reducing pass, the reduced accumulated gradients; otherwise the local
            accumulated ones (which the optimizer does not apply).

        Raises:
            ValueError: a tf.IndexedSlices gradient without ``sparse_as_dense``.
        """
        import tensorflow as tf
        grads = [self._dense(g) for g in grads]
        totals = []
        for index, g in enumerate(grads):
            if g is None:
                totals.append(None)
                continue
            if index not in self._sums:
                with tf.init_scope():
                    self._sums[index] = tf.Variable(tf.zeros(g.shape, g.dtype),
                                                    trainable=False,
                                                    name=f"accumulated_gradient_{index}")
            self._sums[index].assign_add(g)
            totals.append(self._sums[index].read_value())
        self.counter.assign_add(1)
        variables = list(variables)

        present = [i for i, g in enumerate(totals) if g is not None]

        def reduce_and_clear():
            reduced = self._reduce(totals, variables)
            if self._average:
                reduced = [None if g is None else g / self.passes for g in reduced]
            with tf.control_dependencies([g for g in reduced if g is not None]):
                clear = [s.assign(tf.zeros_like(s)) for s in self._sums.values()]
                clear.append(self.counter.assign(0))
            with tf.control_dependencies(clear):
                return [tf.identity(reduced[i]) for i in present]

        chosen = tf.cond(tf.equal(self.counter, self.passes), reduce_and_clear,
                         lambda: [tf.identity(totals[i]) for i in present])
        out: list = [None] * len(totals)
        for i, g in zip(present, chosen):
            out[i] = g
        return out

    @as_written
    def apply(self, apply: Callable[[], object], iterations) -> object:
        """Runs ``apply`` on a reducing pass; otherwise only counts the pass.

        Args:
            apply: applies the gradients :meth:`gradients` returned (the optimizer's own
                step, which advances ``iterations`` itself).
            iterations: the optimizer's step counter (a variable), or None.

        Returns:
            What ``tf.cond`` returns (nothing useful).
        """
        import tensorflow as tf

        def step():
            apply()
            return tf.constant(True)

        def count():
            if iterations is not None:
                iterations.assign_add(1)
            return tf.constant(False)

        return tf.cond(tf.equal(self.counter, 0), step, count)

    def _dense(self, grad):
        import tensorflow as tf
        if isinstance(grad, tf.IndexedSlices):
            if not self._sparse_as_dense:
                raise ValueError("IndexedSlices are not supported when "
                                 "`backward_passes_per_step` > 1 and `sparse_as_dense` is "
                                 "False.")
            return tf.convert_to_tensor(grad)
        return grad
