"""What every backend provides: the world it runs in and numpy-level collectives."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from distrain.environment import World
from distrain.ops import ReduceOp

__all__ = ["Backend", "CollectiveMismatchError"]


class CollectiveMismatchError(ValueError):
    """Ranks called a collective with different shapes, dtypes, ops or roots."""


class Backend:
    """A collective backend. Arrays in, new arrays out; TensorFlow is the caller's business.

    Attributes:
        name: ``mpi``, ``horovod`` or ``local``.
        world: rank, size, local and cross placement.
    """

    name = "base"

    def __init__(self, world: World):
        self.world = world

    def allreduce(self, arrays: Sequence[np.ndarray], op: ReduceOp,
                  compression_dtype: str | None, label: str) -> list[np.ndarray]:
        """Reduces each array across ranks; see :meth:`FusedEngine.allreduce`."""
        raise NotImplementedError

    def broadcast(self, arrays: Sequence[np.ndarray], root: int, label: str) -> list[np.ndarray]:
        """Returns root's values of every array."""
        raise NotImplementedError

    def allgather(self, array: np.ndarray, label: str) -> np.ndarray:
        """Concatenates every rank's array along its first dimension."""
        raise NotImplementedError

    def gather_objects(self, obj) -> list:
        """Every rank's small picklable ``obj``, in rank order (for control data only)."""
        raise NotImplementedError

    def barrier(self) -> None:
        """Returns once every rank has called it."""
        raise NotImplementedError

    def abort(self, code: int) -> None:
        """Ends every rank of the job with ``code``."""
        raise NotImplementedError

    def shutdown(self) -> None:
        """Releases the backend's resources."""
