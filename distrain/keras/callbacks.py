"""Horovod's Keras callbacks (``hvd.callbacks``): broadcast the initial state and average the
metrics here; the learning-rate schedules (:mod:`distrain.keras.lr_schedule`) and the best
model's checkpoint (:mod:`distrain.keras.checkpoint`) in modules of their own."""
from __future__ import annotations

import keras
import numpy as np

from distrain import collectives, ops
from distrain.keras.checkpoint import BestModelCheckpoint
from distrain.keras.lr_schedule import LearningRateScheduleCallback, LearningRateWarmupCallback
from distrain.keras_compat import is_variable, optimizer_variables, variable_keys

__all__ = ["BroadcastGlobalVariablesCallback", "MetricAverageCallback",
           "LearningRateScheduleCallback", "LearningRateWarmupCallback", "BestModelCheckpoint"]


class BroadcastGlobalVariablesCallback(keras.callbacks.Callback):
    """Makes every rank start from rank ``root_rank``'s model and optimizer state.

    Broadcasts the model's variables (and the optimizer's, when built) when training starts,
    and again after the first batch, once ``fit`` has surely built the optimizer's. Variables
    registered as local (``local_variables``, :meth:`register_local_var`) are left out: each
    rank keeps its own values.

    Args:
        root_rank: the rank whose state is kept.
        device: accepted for Horovod's signature (distrain broadcasts on the host).
        local_variables: a variable or a collection of variables not to broadcast
            (tf.Variable, or Keras 3 variables).

    Raises:
        ValueError: an entry of ``local_variables`` is not a variable.
    """

    def __init__(self, root_rank: int = 0, device: str = "", local_variables=None):
        super().__init__()
        self.root_rank = root_rank
        self.device = device
        self._local_keys: set = set()
        self._after_first_batch = False
        if local_variables is None:
            local_variables = []
        elif is_variable(local_variables):
            local_variables = [local_variables]
        local_variables = list(local_variables) if hasattr(local_variables, "__iter__") \
            else [local_variables]
        if not all(is_variable(v) for v in local_variables):
            raise ValueError("BroadcastGlobalVariablesCallback: every entry of "
                             "local_variables must be a variable (tf.Variable or "
                             "keras.Variable); pass the model's variables themselves")
        for variable in local_variables:
            self.register_local_var(variable)

    def register_local_var(self, var) -> None:
        """Leaves ``var`` out of the broadcast: each rank keeps its own value, as Horovod's."""
        self._local_keys |= variable_keys(var)

    def _broadcast(self):
        optimizer = getattr(self.model, "optimizer", None)
        variables = list(self.model.weights)
        if optimizer is not None:
            variables += optimizer_variables(optimizer)
        shared = [v for v in variables if not variable_keys(v) & self._local_keys]
        collectives.broadcast_variables(shared, root_rank=self.root_rank)

    def on_train_begin(self, logs=None):
        # a model built on its first batch (a Sequential given no input shape) has no weights
        # yet: the broadcast after the first batch is then the one that matters (Keras 2
        # raises for the weights of an unbuilt model)
        if self.model.built:
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
