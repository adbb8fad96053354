"""One data-parallel training step: forward and backward, allreduce, apply.

The three parts run as separate calls so each can be timed: ``compute`` and ``apply`` are
``tf.function``s, and the allreduce in between works on the gradients' own memory. With
overlap (``--overlap``; :mod:`distrain.overlap`), ``compute`` also starts each bucket's
allreduce as soon as backward has made its gradients, and the allreduce phase is what is left
to wait for once backward is done: the exposed part of the communication.

With ``passes`` > 1 (``--backward-passes``) a step splits its batch into that many
micro-batches, runs forward and backward on each in turn, and averages their gradients
locally before the one allreduce and apply: the batch of N passes for the activation memory of
one, and one allreduce per N passes (Horovod's ``backward_passes_per_step``). The compute
phase holds every pass; with overlap the last pass starts the buckets' allreduce.
"""
from __future__ import annotations

from distrain import collectives
from distrain.overlap import finish_overlapped_allreduce, start_overlapped_allreduce
from distrain.timing.timer import StepTimer
from distrain.train.objective import correct_count, loss_function, step_loss

__all__ = ["TrainStep"]


class TrainStep:
    """Runs steps of ``model`` with ``optimizer`` across ranks.

    Args:
        model: a built ``keras.Model``.
        optimizer: a Keras optimizer, built for ``model.trainable_variables``.
        compression: ``distrain.Compression`` for the gradient allreduce.
        timer: records each phase.
        overlap: reduce gradient buckets during backward (where the backend allows).
        passes: forward and backward passes per step, each on an equal part of the batch.
    """

    def __init__(self, model, optimizer, compression, timer: StepTimer, overlap: bool = False,
                 passes: int = 1):
        import tensorflow as tf
        self.model = model
        self.optimizer = optimizer
        self.compression = compression
        self.timer = timer
        self.variables = list(model.trainable_variables)
        loss_fn = loss_function()

        def compute(x, y, earlier=(), last=True):
            """One pass. ``earlier``: the summed gradients of the step's passes before this
            one. Returns the sum so far, or on the ``last`` pass the step's mean gradients."""
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                loss = step_loss(model, loss_fn, y, logits)
            grads = tape.gradient(loss, self.variables)
            grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, self.variables)]
            if earlier:
                grads = [g + e for g, e in zip(grads, earlier)]
                if last:
                    grads = [g / passes for g in grads]
            return loss, correct_count(logits, y), grads

        def apply(grads):
            optimizer.apply_gradients(zip(grads, self.variables))

        def compute_and_start(x, y, earlier=()):
            loss, correct, grads = compute(x, y, earlier)
            started = start_overlapped_allreduce(grads, compression=compression,
                                                 name="gradients", enabled=True)
            if started is None:
                return loss, correct, grads, ()
            tokens, self._plan = started
            return loss, correct, (), tokens

        self._compute = tf.function(compute_and_start if overlap else compute)
        self._pass = tf.function(lambda x, y, earlier: compute(x, y, earlier, last=False))
        self._passes = passes
        self._overlap = overlap
        self._plan = None
        self._apply = tf.function(apply)
        self._tf = tf

    def __call__(self, step: int, batches):
        """Runs one step on this rank's next batch.

        Args:
            step: the global step number, for messages.
            batches: an iterator of this rank's ``(x, y)`` numpy batches.

        Returns:
            ``(loss, correct, samples)``: this rank's mean loss and number of correct
            predictions (scalar tensors, read after the step's clock stops), and its batch
            size.
        """
        timer = self.timer
        with timer.phase("data"):
            x, y = next(batches)
            x = self._tf.convert_to_tensor(x)
            y = self._tf.convert_to_tensor(y)
        with timer.phase("compute"):
            loss, correct, earlier = 0.0, 0.0, ()
            xs, ys = ((x,), (y,)) if self._passes == 1 else \
                (self._tf.split(x, self._passes), self._tf.split(y, self._passes))
            for part_x, part_y in zip(xs[:-1], ys[:-1]):
                part_loss, part_correct, earlier = self._pass(part_x, part_y, earlier)
                loss, correct = loss + part_loss, correct + part_correct
            if self._overlap:
                part_loss, part_correct, grads, tokens = self._compute(xs[-1], ys[-1], earlier)
            else:
                (part_loss, part_correct, grads), tokens = \
                    self._compute(xs[-1], ys[-1], earlier), ()
            loss, correct = (loss + part_loss) / self._passes, correct + part_correct
        with timer.phase("allreduce"):
            if tokens:
                grads = finish_overlapped_allreduce(tokens, self._plan)
            else:
                grads = collectives.grouped_allreduce(grads, compression=self.compression,
                                                      name=f"gradients of step {step}")
        with timer.phase("apply"):
            self._apply(grads)
        return loss, correct, int(y.shape[0])
