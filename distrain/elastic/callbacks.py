"""Horovod's elastic Keras callbacks: keep a :class:`~distrain.elastic.State`'s ``epoch`` and
``batch`` up to date during ``model.fit`` and commit it every few batches.

Example::

    state = hvd.elastic.KerasState(model, batch=0, epoch=0)
    callbacks = [hvd.elastic.CommitStateCallback(state, batches_per_commit=10),
                 hvd.elastic.UpdateBatchStateCallback(state),
                 hvd.elastic.UpdateEpochStateCallback(state)]

    @hvd.elastic.run
    def train(state):
        model.fit(x, y, initial_epoch=state.epoch, epochs=5, callbacks=callbacks)
"""
from __future__ import annotations

import keras

__all__ = ["CommitStateCallback", "UpdateBatchStateCallback", "UpdateEpochStateCallback"]


class CommitStateCallback(keras.callbacks.Callback):
    """Commits ``state`` every ``batches_per_commit`` batches and at each epoch's end.

    Before committing it sets the state's ``batch`` and ``epoch`` (where it has them) to
    what is done, so the order of the callbacks in the list does not matter.

    Args:
        state: the elastic state.
        batches_per_commit: batches between commits.
    """

    def __init__(self, state, batches_per_commit: int = 1):
        super().__init__()
        self.state, self.batches_per_commit = state, max(1, int(batches_per_commit))
        self._since = 0

    def on_train_batch_end(self, batch, logs=None):
        self._since += 1
        if self._since >= self.batches_per_commit:
            self._since = 0
            if hasattr(self.state, "batch"):
                self.state.batch = int(batch) + 1
            self.state.commit()

    def on_epoch_end(self, epoch, logs=None):
        self._since = 0
        if hasattr(self.state, "epoch"):
            self.state.epoch = int(epoch) + 1
        if hasattr(self.state, "batch"):
            self.state.batch = 0
        self.state.commit()


class UpdateBatchStateCallback(keras.callbacks.Callback):
    """Keeps ``state.batch`` at the number of batches done in the current epoch."""

    def __init__(self, state):
        super().__init__()
        self.state = state

    def on_train_batch_end(self, batch, logs=None):
        self.state.batch = int(batch) + 1

    def on_epoch_end(self, epoch, logs=None):
        self.state.batch = 0


class UpdateEpochStateCallback(keras.callbacks.Callback):
    """Keeps ``state.epoch`` at the next epoch to run."""

    def __init__(self, state):
        super().__init__()
        self.state = state

    def on_epoch_end(self, epoch, logs=None):
        self.state.epoch = int(epoch) + 1
