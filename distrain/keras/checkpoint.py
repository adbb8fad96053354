"""Horovod's ``BestModelCheckpoint``: the best model of the run, written by rank 0, atomically."""
from __future__ import annotations

import os

import keras

from distrain import collectives
from distrain.files import replace_atomically
from distrain.keras_compat import checkpoint_path_problem

__all__ = ["BestModelCheckpoint"]

_SINGLE_FILE_ENDINGS = (".weights.h5", ".keras", ".h5", ".hdf5")
_PLACEHOLDER = {False: "best.keras", True: "best.weights.h5"}


class BestModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """A ``ModelCheckpoint`` that keeps only the best model (``save_best_only=True``) and whose
    ``filepath`` is set after construction, as Horovod's Spark estimator sets it
    (``callback.filepath = path`` before ``fit``).

    Only rank 0 writes. A single-file format (``.keras``, ``.h5``, ``.weights.h5``) is
    written to a temporary file beside ``filepath`` and renamed over it, so the file is
    always the old best model or the whole new one; Keras 2's directory formats (a path
    without an extension) are written by Keras in place.

    Args:
        monitor: the logged quantity that decides the best model.
        verbose: 1 prints each decision (rank 0 decides; the other ranks stay quiet).
        save_weights_only: save ``model.save_weights`` instead of the whole model.
        mode: ``auto``, ``min`` or ``max``.
        save_freq: ``epoch``, or a number of batches.
        filepath: the file, when known now (distrain's addition; Horovod's is set later).
    """

    def __init__(self, monitor="val_loss", verbose=0, save_weights_only=False, mode="auto",
                 save_freq="epoch", filepath=None):
        super().__init__(filepath=_PLACEHOLDER[bool(save_weights_only)], monitor=monitor,
                         verbose=verbose,
                         save_best_only=True, save_weights_only=save_weights_only, mode=mode,
                         save_freq=save_freq)
        self.filepath = None if filepath is None else os.fspath(filepath)

    def on_train_begin(self, logs=None):
        if self.filepath is None:
            raise ValueError("BestModelCheckpoint has no filepath; set callback.filepath = "
                             "'best.keras' before fit()")
        problem = checkpoint_path_problem(self.filepath, self.save_weights_only)
        if problem:
            raise ValueError(f"BestModelCheckpoint: {problem}")
        super().on_train_begin(logs)

    def _save_model(self, epoch, batch, logs):
        if collectives.rank() != 0:
            return
        model = self.model
        self.set_model(_AtomicSaves(model))
        try:
            super()._save_model(epoch, batch, logs)
        finally:
            self.set_model(model)


class _AtomicSaves:
    """The model as ``ModelCheckpoint`` sees it while it saves: ``save`` and ``save_weights``
    to a single file go through :func:`distrain.files.replace_atomically`."""

    def __init__(self, model):
        self._wrapped = model

    def __getattr__(self, name):
        return getattr(self._wrapped, name)

    def save(self, filepath, *args, **kwargs):
        _write(str(filepath), lambda path: self._wrapped.save(path, *args, **kwargs))

    def save_weights(self, filepath, *args, **kwargs):
        _write(str(filepath), lambda path: self._wrapped.save_weights(path, *args, **kwargs))


def _write(filepath: str, write_to) -> None:
    ending = next((e for e in _SINGLE_FILE_ENDINGS if filepath.endswith(e)), None)
    if ending is None:
        write_to(filepath)
    else:
        replace_atomically(filepath, write_to, suffix=ending)
