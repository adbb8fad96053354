"""The ``horovod`` backend: hands every collective to ``horovod.tensorflow``.

Used when horovodrun started the job and Horovod imports (a TensorFlow 2.15 environment), so
distrain programs run unchanged on an existing Horovod installation.
"""
from __future__ import annotations

import os
import sys

import numpy as np

from distrain.backends.base import Backend
from distrain.environment import World, WorldError
from distrain.ops import ReduceOp

__all__ = ["HorovodBackend", "horovod_importable"]


def horovod_importable() -> bool:
    """True when ``horovod.tensorflow`` imports in this environment."""
    try:
        import horovod.tensorflow  # noqa: F401
    except Exception:  # ImportError, or a build against another TensorFlow
        return False
    return True


class HorovodBackend(Backend):
    """Collectives through Horovod's own TensorFlow ops.

    Raises:
        WorldError: Horovod does not import.
    """

    name = "horovod"

    def __init__(self, world: World):
        try:
            import horovod.tensorflow as hvd
            import tensorflow as tf
        except Exception as exc:
            raise WorldError(f"the horovod backend needs horovod.tensorflow, which does not "
                             f"import here ({exc})") from exc
        self.hvd, self.tf = hvd, tf
        hvd.init()
        super().__init__(World(hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size(),
                               hvd.cross_rank(), hvd.cross_size(), world.launcher, world.gloo))
        self._ops = {ReduceOp.AVERAGE: hvd.Average, ReduceOp.SUM: hvd.Sum,
                     ReduceOp.MIN: hvd.Min, ReduceOp.MAX: hvd.Max}

    def _tensor(self, array: np.ndarray, compression_dtype: str | None = None):
        tensor = self.tf.convert_to_tensor(array)
        if compression_dtype and tensor.dtype.is_floating and \
                tensor.dtype.size > self.tf.as_dtype(compression_dtype).size:
            tensor = self.tf.cast(tensor, compression_dtype)
        return tensor

    def allreduce(self, arrays, op, compression_dtype, label):
        tensors = [self._tensor(a, compression_dtype) for a in arrays]
        reduced = self.hvd.grouped_allreduce(tensors, op=self._ops[op]) if tensors else []
        return [np.asarray(self.tf.cast(r, a.dtype)).reshape(a.shape)
                for r, a in zip(reduced, arrays)]

    def broadcast(self, arrays, root, label):
        if not 0 <= root < self.world.size:
            raise ValueError(f"root rank {root} is out of range for a world of "
                             f"{self.world.size} ranks")
        return [np.asarray(self.hvd.broadcast(self._tensor(a), root_rank=root))
                for a in arrays]

    def allgather(self, array, label):
        return np.asarray(self.hvd.allgather(self._tensor(array)))

    def gather_objects(self, obj):
        return list(self.hvd.allgather_object(obj))

    def barrier(self):
        barrier = getattr(self.hvd, "barrier", None)
        if barrier is not None:
            barrier()
        else:
            self.hvd.allreduce(self.tf.zeros([1]), op=self.hvd.Sum)

    def abort(self, code):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    def shutdown(self):
        self.hvd.shutdown()
