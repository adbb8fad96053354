"""Drop-in for ``import horovod.tensorflow.keras as hvd``, on Keras 2 (TF 2.15) and Keras 3.

Example:
    >>> import distrain.keras as hvd
    >>> hvd.init()
    >>> opt = hvd.DistributedOptimizer(keras.optimizers.SGD(0.01 * hvd.size()))  # doctest: +SKIP
    >>> model.compile(optimizer=opt, loss=..., metrics=["accuracy"])          # doctest: +SKIP
    >>> model.fit(x, y, callbacks=[hvd.callbacks.BroadcastGlobalVariablesCallback(0),
    ...                            hvd.callbacks.MetricAverageCallback()])    # doctest: +SKIP
"""
from __future__ import annotations

from distrain.collectives import (allgather, allreduce, barrier, broadcast,
                                  broadcast_variables, cross_rank, cross_size,
                                  grouped_allreduce, init, is_initialized, local_rank,
                                  local_size, rank, shutdown, size)
from distrain.keras import callbacks
from distrain.keras.optimizer import DistributedOptimizer
from distrain.ops import Average, Compression, Max, Min, Sum
from distrain.tensorflow import DistributedGradientTape

__all__ = [
    "init", "shutdown", "is_initialized", "rank", "size", "local_rank", "local_size",
    "cross_rank", "cross_size", "allreduce", "grouped_allreduce", "broadcast",
    "broadcast_variables", "allgather", "barrier", "Average", "Sum", "Min", "Max",
    "Compression", "DistributedOptimizer", "DistributedGradientTape", "callbacks",
]
