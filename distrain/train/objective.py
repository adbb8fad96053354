"""What a training step minimises and counts, in one place: the training step
(:mod:`distrain.train.step`) and the cost model's timed copies of it
(:mod:`distrain.costmodel.step_terms`, :mod:`distrain.costmodel.compute`) call these, so
the cost model times the loss the step computes.

- the loss: sparse categorical cross-entropy of the logits, plus the model's own losses
  (regularizers, ``add_loss``);
- the count of correct predictions in the batch, which the progress line reports.

Example:
    >>> loss_fn = loss_function()  # doctest: +SKIP
    >>> loss = step_loss(model, loss_fn, labels, model(x, training=True))  # doctest: +SKIP
"""
from __future__ import annotations

__all__ = ["loss_function", "step_loss", "correct_count"]


def loss_function():
    """The step's loss on logits: Keras's sparse categorical cross-entropy."""
    import keras
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def step_loss(model, loss_fn, labels, logits):
    """``loss_fn`` of ``logits`` against ``labels``, plus ``model``'s own losses."""
    loss = loss_fn(labels, logits)
    if model is not None and model.losses:
        import tensorflow as tf
        loss = loss + tf.add_n(model.losses)
    return loss


def correct_count(logits, labels):
    """How many rows of ``logits`` have their largest value at their label (float32)."""
    import tensorflow as tf
    return tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, axis=-1),
                                          tf.cast(labels, tf.int64)), tf.float32))
