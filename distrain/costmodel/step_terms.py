"""The cost model's terms beside the sub-models, as zero-argument callables: the whole model
as one function, a batch fetch, the host's share of the allreduce and the optimizer's
update, and which gradients are sparse (:func:`distrain.costmodel.compute.step_functions`
puts them in step order).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from distrain.train.objective import correct_count, loss_function, step_loss

__all__ = ["whole_function", "sparse_rows", "sparse_gradient", "batch_fetch",
           "allreduce_term", "apply_term"]


def whole_function(tf, model, arguments: list, with_loss: bool) -> Callable[[], object]:
    """The whole model's forward and backward as the step runs them, on captured
    ``arguments`` (the inputs, then the labels where ``with_loss``): the gradients of every
    trainable weight of the loss (the model's own losses added), and the count of correct
    predictions; without the loss, the backward is seeded with ones."""
    loss_fn = loss_function()
    inputs = arguments[:-1] if with_loss else arguments
    variables = list(model.trainable_variables)

    @tf.function
    def whole():
        xs = [tf.identity(x) for x in inputs]
        with tf.GradientTape() as tape:
            out = model(xs if len(xs) > 1 else xs[0], training=True)
            loss = step_loss(model, loss_fn, arguments[-1], out) if with_loss else out
        if not with_loss:
            return tape.gradient(loss, variables)
        return tape.gradient(loss, variables), correct_count(out, arguments[-1])

    return whole


def sparse_rows(tf, whole, with_loss: bool) -> dict[int, int]:
    """``index -> rows`` of the gradients ``whole`` returns as ``tf.IndexedSlices`` with a
    known number of rows (read from its trace)."""
    outputs = whole.get_concrete_function().structured_outputs
    gradients = outputs[0] if with_loss else outputs
    return {i: int(g.values.shape[0]) for i, g in enumerate(gradients)
            if isinstance(g, tf.IndexedSlices) and g.values.shape[0] is not None}


def sparse_gradient(tf, variable, rows: int, rng):
    """A ``tf.IndexedSlices`` gradient of ``variable``: ``rows`` random rows, as the
    allreduce hands on an embedding's gathered from every rank."""
    shape = tuple(variable.shape)
    values = tf.ones((rows,) + shape[1:], variable.dtype) * 1e-6
    indices = tf.constant(rng.integers(0, shape[0], size=rows), tf.int64)
    return tf.IndexedSlices(values, indices, dense_shape=tf.constant(shape, tf.int64))


def batch_fetch(tf, data, batch_size: int, rng) -> Callable[[], None]:
    """Reads one batch as the training program does: a sorted slice of a shuffle."""
    x_train, y_train = data
    order = rng.permutation(len(x_train))
    cursor = [0]

    def fetch():
        start = cursor[0] % max(1, len(order) - batch_size)
        cursor[0] += batch_size
        rows = np.sort(order[start:start + batch_size])
        tf.convert_to_tensor(x_train[rows])
        tf.convert_to_tensor(y_train[rows])
    return fetch


def allreduce_term(gradients: list, comm, averaged: list, sparse: set) -> Callable[[], None]:
    """The host's share of averaging the dense ``gradients`` (those not in ``sparse``, whose
    gathered rows are kept as they are); the result goes to ``averaged[0]``."""
    from distrain.costmodel.host import host_allreduce
    dense = [i for i in range(len(gradients)) if i not in sparse]
    reduce = host_allreduce([gradients[i] for i in dense], comm.size, comm.fusion_threshold,
                            comm.chunk_bytes, comm.wire_dtype)

    def allreduce():
        result = list(gradients)
        for i, g in zip(dense, reduce()):
            result[i] = g
        averaged[0] = result
    return allreduce


def apply_term(tf, optimizer, model, averaged: list) -> Callable[[], None]:
    """The optimizer's update of copies of the weights, by the gradients in ``averaged[0]``
    (fresh each round when the allreduce term runs)."""
    import keras
    make = getattr(keras, "Variable", tf.Variable)  # Keras 3 updates its own Variable type
    copies = [make(np.zeros(v.shape, np.float32)) for v in model.trainable_variables]
    twin = optimizer.__class__.from_config(optimizer.get_config())
    twin.build(copies)

    @tf.function
    def apply(gradients):  # an argument, not a capture: no constant folding
        twin.apply_gradients(zip(gradients, copies))
    return lambda: apply(averaged[0])
