"""Drop-in for ``import horovod.tensorflow.keras as hvd``, on Keras 2 (TF 2.15) and Keras 3.

Every name of ``horovod.tensorflow.keras`` 0.28.1, with Horovod's Keras signatures for the
collectives on values (:mod:`distrain.keras.value_collectives`), plus the rest of
``distrain.tensorflow``.

Example:
    >>> import distrain.keras as hvd
    >>> hvd.init()
    >>> opt = hvd.DistributedOptimizer(keras.optimizers.SGD(0.01 * hvd.size()))  # doctest: +SKIP
    >>> model.compile(optimizer=opt, loss=..., metrics=["accuracy"])          # doctest: +SKIP
    >>> model.fit(x, y, callbacks=[hvd.callbacks.BroadcastGlobalVariablesCallback(0),
    ...                            hvd.callbacks.MetricAverageCallback()])    # doctest: +SKIP
"""
from __future__ import annotations

from distrain.keras import callbacks
from distrain.keras.optimizer import DistributedOptimizer, PartialDistributedOptimizer
from distrain.keras.saving import load_model
from distrain.tensorflow import *  # noqa: F401,F403  the horovod.tensorflow names
from distrain.tensorflow import __all__ as _TENSORFLOW_NAMES
# after the * import: the Keras face's own signatures replace the TensorFlow face's
from distrain.keras.value_collectives import allgather, allreduce, broadcast, reducescatter

__all__ = list(_TENSORFLOW_NAMES) + ["DistributedOptimizer", "PartialDistributedOptimizer",
                                     "callbacks", "load_model"]
