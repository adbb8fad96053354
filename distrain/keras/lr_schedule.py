"""Horovod's learning-rate callbacks: a schedule of multipliers, and the warm-up built on it.

Both set the optimizer's learning rate in place at the start of a batch, so a compiled train
step reads the new rate; on Keras 2 (TensorFlow 2.15) and Keras 3 alike.

Momentum correction (Goyal et al., "Accurate, Large Minibatch SGD", 2017), where the
optimizer has a ``momentum``: in the batch whose rate changes from ``old`` to ``new``, the
momentum is multiplied by ``new / old`` and restored after the batch, as Horovod does. Where
the momentum is a variable (Keras 2's legacy optimizers) that is what happens. Where it is a
Python number (Keras 3, Keras 2's optimizers since TensorFlow 2.11) a compiled step has it
baked in, so the optimizer's velocity is multiplied by ``new / old`` before the batch instead:
``v' = m (v r) - lr g`` is the same update as ``v' = (m r) v - lr g`` (for Nesterov SGD the
look-ahead term keeps ``m``).
"""
from __future__ import annotations

import keras
import numpy as np

from distrain import collectives
from distrain.keras_compat import (learning_rate, momentum_buffers, momentum_variable,
                                   set_learning_rate)

__all__ = ["LearningRateScheduleCallback", "LearningRateWarmupCallback"]


class LearningRateScheduleCallback(keras.callbacks.Callback):
    """Sets the learning rate to ``initial_lr * multiplier(epoch)`` from ``start_epoch`` up to
    (not including) ``end_epoch``.

    With ``staircase=True`` the rate is set at the first batch of each epoch, from the integer
    epoch; otherwise at every batch, from the fractional epoch
    ``epoch + batch / steps_per_epoch``. At the end of each epoch the rate is logged as
    ``lr``.

    Args:
        initial_lr: the rate the multipliers scale.
        multiplier: a number ``m`` (the rate becomes ``initial_lr * m ** (epoch -
            start_epoch)``) or a function of the epoch.
        start_epoch: the first epoch the schedule sets.
        end_epoch: the epoch it stops at (exclusive); None for every epoch after the start.
        staircase: per epoch (True) or per batch (False).
        momentum_correction: correct the momentum in a batch whose rate changes (see the
            module's documentation).
        steps_per_epoch: batches per epoch, for ``staircase=False``; read from ``fit``
            when None.

    Raises:
        ValueError: ``initial_lr`` is None.
    """

    def __init__(self, initial_lr, multiplier, start_epoch=0, end_epoch=None, staircase=True,
                 momentum_correction=True, steps_per_epoch=None):
        super().__init__()
        if initial_lr is None:
            raise ValueError("Parameter `initial_lr` is required")
        self.initial_lr = float(initial_lr)
        self.start_epoch = start_epoch
        self.end_epoch = end_epoch
        self.staircase = staircase
        self.momentum_correction = momentum_correction
        self.steps_per_epoch = steps_per_epoch
        self.current_epoch = None
        self.restore_momentum = None
        if callable(multiplier):
            self.multiplier = multiplier
        else:
            self.multiplier = lambda epoch: multiplier ** (epoch - start_epoch)

    def _autodetect_steps_per_epoch(self) -> int:
        params = self.params or {}
        if params.get("steps"):
            return params["steps"]
        if params.get("samples") and params.get("batch_size"):
            return params["samples"] // params["batch_size"]
        raise ValueError(f"Could not autodetect the number of steps per epoch; pass "
                         f"steps_per_epoch= to {type(self).__name__}() (fit() was given "
                         f"data of unknown length)")

    def _adjust_learning_rate(self, epoch: float) -> None:
        optimizer = self.model.optimizer
        old_lr = learning_rate(optimizer)
        new_lr = self.initial_lr * self.multiplier(epoch)
        set_learning_rate(optimizer, new_lr)
        if not self.momentum_correction or not hasattr(optimizer, "momentum") or old_lr == 0:
            return
        variable = momentum_variable(optimizer)
        if variable is not None:
            self.restore_momentum = float(np.asarray(variable))
            variable.assign(self.restore_momentum * new_lr / old_lr)
        elif new_lr != old_lr:
            for velocity in momentum_buffers(optimizer):
                value = np.asarray(velocity)
                velocity.assign((value * (new_lr / old_lr)).astype(value.dtype))

    def _restore_momentum_if_needed(self) -> None:
        if self.restore_momentum:
            momentum_variable(self.model.optimizer).assign(self.restore_momentum)
            self.restore_momentum = None

    def on_train_begin(self, logs=None):
        optimizer = self.model.optimizer
        set_learning_rate(optimizer, learning_rate(optimizer))  # a schedule fails here
        if not self.staircase and not self.steps_per_epoch:
            self.steps_per_epoch = self._autodetect_steps_per_epoch()

    def on_epoch_begin(self, epoch, logs=None):
        self.current_epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.current_epoch < self.start_epoch or (
                self.end_epoch is not None and self.current_epoch >= self.end_epoch):
            return
        if self.staircase and batch == 0:
            self._adjust_learning_rate(self.current_epoch)
        elif not self.staircase:
            self._adjust_learning_rate(self.current_epoch + float(batch) / self.steps_per_epoch)

    def on_train_batch_end(self, batch, logs=None):
        self._restore_momentum_if_needed()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = learning_rate(self.model.optimizer)


class LearningRateWarmupCallback(LearningRateScheduleCallback):
    """Ramps the learning rate from ``initial_lr / size`` up to ``initial_lr`` over
    ``warmup_epochs``, batch by batch (Goyal et al.'s gradual warm-up), as Horovod does.

    It is a :class:`LearningRateScheduleCallback` (``staircase=False``, epochs 0 to
    ``warmup_epochs``) whose multiplier at the fractional epoch ``e`` is
    ``(1 + (e + 1 / steps_per_epoch) * (size - 1) / warmup_epochs) / size``: the rate reaches
    ``initial_lr`` at the last batch of the warm-up. The multiplier is capped at 1, so a
    fractional ``warmup_epochs`` never overshoots. After the warm-up the rate stays where it
    ended.

    Args:
        initial_lr: the rate after warm-up, usually the single-rank rate times ``size()``.
        warmup_epochs: how long the ramp lasts.
        momentum_correction: correct the momentum while the rate changes.
        steps_per_epoch: batches per epoch; read from ``fit`` when None.
        verbose: 1 prints (rank 0) when the warm-up ends.
    """

    def __init__(self, initial_lr, warmup_epochs=5, momentum_correction=True,
                 steps_per_epoch=None, verbose=0):
        super().__init__(initial_lr, self._warmup_multiplier, start_epoch=0,
                         end_epoch=warmup_epochs, staircase=False,
                         momentum_correction=momentum_correction,
                         steps_per_epoch=steps_per_epoch)
        self.warmup_epochs = warmup_epochs
        self.verbose = verbose

    def _warmup_multiplier(self, epoch: float) -> float:
        size = collectives.size()
        epoch += 1.0 / self.steps_per_epoch
        return min(1.0, (epoch * (size - 1) / self.warmup_epochs + 1) / size)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if epoch == self.end_epoch - 1 and self.verbose > 0 and collectives.rank() == 0:
            print(f"\nEpoch {epoch + 1}: finished gradual learning rate warmup to "
                  f"{learning_rate(self.model.optimizer):g}.", flush=True)
