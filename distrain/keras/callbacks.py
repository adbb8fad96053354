"""Horovod's Keras callbacks: broadcast initial state, average metrics, warm up the rate."""
from __future__ import annotations

import keras
import numpy as np

from distrain import collectives, ops
from distrain.keras_compat import optimizer_variables

__all__ = ["BroadcastGlobalVariablesCallback", "MetricAverageCallback",
           "LearningRateWarmupCallback"]


class BroadcastGlobalVariablesCallback(keras.callbacks.Callback):
    """Makes every rank start from rank ``root_rank``'s model and optimizer state.

    Broadcasts the model's variables (and the optimizer's, when built) when training starts,
    and the optimizer's again after the first batch, once ``fit`` has surely built them.

    Args:
        root_rank: the rank whose state is kept.
    """

    def __init__(self, root_rank: int = 0, device: str = ""):
        super().__init__()
        self.root_rank = root_rank
        self._after_first_batch = False

    def _broadcast(self):
        optimizer = getattr(self.model, "optimizer", None)
        variables = list(self.model.weights)
        if optimizer is not None:
            variables += optimizer_variables(optimizer)
        collectives.broadcast_variables(variables, root_rank=self.root_rank)

    def on_train_begin(self, logs=None):
        self._broadcast()

    def on_train_batch_end(self, batch, logs=None):
        if not self._after_first_batch:
            self._after_first_batch = True
            self._broadcast()


class MetricAverageCallback(keras.callbacks.Callback):
    """Replaces each epoch's metrics in ``logs`` by their average across ranks.

    Put it before callbacks that read the metrics (checkpointing, early stopping, logging).
    """

    def on_epoch_end(self, epoch, logs=None):
        if not logs:
            return
        keys = sorted(k for k, v in logs.items() if np.ndim(v) == 0)
        values = np.array([float(logs[k]) for k in keys], np.float64)
        averaged = collectives.allreduce(values, op=ops.Average, name="epoch metrics")
        logs.update({k: float(v) for k, v in zip(keys, averaged)})


class LearningRateWarmupCallback(keras.callbacks.Callback):
    """Ramps the learning rate from ``initial_lr / size`` up to ``initial_lr``.

    Horovod's rule: ``lr = initial_lr / size * (1 + progress * (size - 1))`` where progress
    goes from 0 to 1 over ``warmup_epochs`` (fractional, per batch).

    Args:
        initial_lr: the rate after warm-up, usually the single-rank rate times ``size()``.
        warmup_epochs: how long the ramp lasts.
        momentum_correction: accepted for Horovod compatibility.
        steps_per_epoch: batches per epoch; read from ``fit`` when None.
        verbose: print the rate at the end of the warm-up.
    """

    def __init__(self, initial_lr: float, warmup_epochs: float = 5, momentum_correction=True,
                 steps_per_epoch: int | None = None, verbose: int = 0):
        super().__init__()
        self.initial_lr = float(initial_lr)
        self.warmup_epochs = warmup_epochs
        self.steps_per_epoch = steps_per_epoch
        self.verbose = verbose
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        steps = self.steps_per_epoch or self.params.get("steps") or 1
        progress = (self._epoch + batch / steps) / self.warmup_epochs if self.warmup_epochs \
            else 1.0
        if progress > 1.0:
            return
        size = collectives.size()
        lr = self.initial_lr / size * (1 + progress * (size - 1))
        self.model.optimizer.learning_rate.assign(lr)

    def on_epoch_end(self, epoch, logs=None):
        if self.verbose and collectives.rank() == 0 and epoch + 1 == int(self.warmup_epochs):
            print(f"warm-up done: learning rate {self.initial_lr:g}", flush=True)
