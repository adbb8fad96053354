"""Horovod's ``load_model``: a saved Keras model, its optimizer distributed again."""
from __future__ import annotations

from distrain.keras.optimizer import distribute_in_place
from distrain.ops import Compression

__all__ = ["load_model"]


def load_model(filepath, custom_optimizers=None, custom_objects=None,
               compression=Compression.none, legacy_opts=False):
    """Loads a model saved with a ``DistributedOptimizer`` and distributes its optimizer again.

    A distributed optimizer is saved as the optimizer it wraps (``SGD``, ``Adam``, ...), so
    ``keras.models.load_model`` gives that plain optimizer back, with its state (iterations,
    slots). This loads the model so, then makes the loaded optimizer a
    :func:`~distrain.keras.DistributedOptimizer` with ``compression``, keeping its state,
    as Horovod's ``load_model`` does. Works for Keras 3 ``.keras`` files and for Keras 2's
    formats (``.h5``, ``.keras``, SavedModel).

    Args:
        filepath: the saved model (a path, or an ``h5py.File`` on Keras 2).
        custom_optimizers: optimizer classes of your own that the file names.
        custom_objects: other custom classes or functions, by name, as Keras takes them.
        compression: the wire compression of the gradient allreduce.
        legacy_opts: accepted for Horovod's signature; Keras reads from the file whether the
            optimizer is a legacy one.

    Returns:
        The model; its optimizer, if it was compiled, is distributed.

    Raises:
        ValueError: the file is not a saved Keras model, or names a class Keras cannot find
            (pass it in ``custom_optimizers`` or ``custom_objects``).
    """
    import keras
    objects = {cls.__name__: cls for cls in custom_optimizers or ()}
    objects.update(custom_objects or {})
    model = keras.models.load_model(filepath, custom_objects=objects or None)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        distribute_in_place(optimizer, compression=compression)
    return model
