"""``distrain.tensorflow.keras``: the same module as :mod:`distrain.keras`.

Horovod's Keras face is ``horovod.tensorflow.keras``; with this name, replacing ``horovod``
by ``distrain`` in that import line is the whole change.

Example:
    >>> import distrain.tensorflow.keras as hvd
    >>> hvd.DistributedOptimizer is distrain.keras.DistributedOptimizer   # doctest: +SKIP
    True
"""
from __future__ import annotations

from distrain.keras import *  # noqa: F401,F403  every name of the Keras face
from distrain.keras import __all__  # noqa: F401
