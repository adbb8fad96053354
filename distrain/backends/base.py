"""What every backend provides: the world it runs in, numpy-level collectives, and the few
facts and calls the layers above may use (through :mod:`distrain.collectives`).

Example:
    >>> from distrain.backends.local import LocalBackend
    >>> LocalBackend().allgather_object({"rank": 0})
    [{'rank': 0}]
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from distrain.engine.fused import FusedEngine
from distrain.engine.fusion import DEFAULT_CHUNK_BYTES, DEFAULT_FUSION_THRESHOLD
from distrain.environment import World
from distrain.ops import ReduceOp

__all__ = ["Backend", "EngineBackend", "CollectiveError", "CollectiveMismatchError",
           "CollectiveArgumentError", "CollectiveAbortedError", "check_root"]


class CollectiveError(ValueError):
    """A collective that cannot run as called.

    Attributes:
        tensorflow_error: the ``tf.errors`` class Horovod's TensorFlow ops raise for it; in a
            TensorFlow program the error raised is of both classes.
    """

    tensorflow_error = "UnknownError"


class CollectiveMismatchError(CollectiveError):
    """Ranks called a collective with different shapes, dtypes, ops or roots, or one that
    joined ranks cannot take part in."""

    tensorflow_error = "FailedPreconditionError"


class CollectiveArgumentError(CollectiveError):
    """A collective's arguments are wrong on this rank: a process set it is not in, splits
    that do not fit the tensor."""

    tensorflow_error = "InvalidArgumentError"


class CollectiveAbortedError(CollectiveError):
    """A reduction the collective does not support (reducescatter with Min)."""

    tensorflow_error = "AbortedError"


def check_root(root, size: int) -> int:
    """The root rank of a broadcast, checked against the world.

    Args:
        root: the rank the caller named.
        size: the number of ranks.

    Returns:
        ``root`` as an int.

    Raises:
        ValueError: ``root`` is not an integer in ``[0, size)``.
    """
    if not isinstance(root, (int, np.integer)) or not 0 <= root < size:
        raise ValueError(f"root_rank {root!r} is out of range for a world of {size} ranks")
    return int(root)


class Backend:
    """A collective backend. Arrays in, new arrays out; TensorFlow is the caller's business,
    except on a backend with :attr:`native_tensorflow`, which takes TensorFlow values itself.

    Attributes:
        name: ``mpi``, ``horovod`` or ``local``.
        world: rank, size, local and cross placement.
        native_tensorflow: True when the ``*_tensors`` methods take TensorFlow values
            directly (Horovod's ops); the numpy-level methods are then conversions of them.
        homogeneous: True when every host runs the same number of ranks.
    """

    name = "base"
    native_tensorflow = False
    homogeneous = True   # every host runs as many ranks

    def __init__(self, world: World):
        self.world = world

    @property
    def fusion_threshold(self) -> int:
        """The most bytes one fusion bucket holds (distrain's default where the backend
        does not fuse by distrain's plan)."""
        return DEFAULT_FUSION_THRESHOLD

    @property
    def chunk_bytes(self) -> int:
        """The most bytes one message carries (distrain's default where the backend does not
        chunk by distrain's plan)."""
        return DEFAULT_CHUNK_BYTES

    def set_fusion(self, threshold: int, chunk_bytes: int) -> None:
        """Sets the fusion threshold and chunk size of later collectives (bytes).

        Raises:
            NotImplementedError: the backend does not fuse by distrain's plan.
        """
        raise NotImplementedError(f"the {self.name} backend does not fuse by distrain's plan")

    def allreduce(self, arrays: Sequence[np.ndarray], op: ReduceOp,
                  wire_dtype: str | None, label: str) -> list[np.ndarray]:
        """Reduces each array across ranks; see :meth:`FusedEngine.allreduce`."""
        raise NotImplementedError

    def broadcast(self, arrays: Sequence[np.ndarray], root: int, label: str) -> list[np.ndarray]:
        """Returns root's values of every array."""
        raise NotImplementedError

    def allgather(self, array: np.ndarray, label: str) -> np.ndarray:
        """Concatenates every rank's array along its first dimension."""
        raise NotImplementedError

    def alltoall(self, array: np.ndarray, splits: Sequence[int] | None,
                 label: str) -> tuple[np.ndarray, np.ndarray]:
        """Sends ``splits[r]`` rows to rank ``r`` (an even split when None).

        Returns:
            ``(received rows in rank order, rows received from each rank as int32)``.

        Raises:
            ValueError: the splits do not fit the first dimension (on every rank).
        """
        raise NotImplementedError

    def reducescatter(self, arrays: Sequence[np.ndarray], op: ReduceOp,
                      wire_dtype: str | None, label: str) -> list[np.ndarray]:
        """Reduces each array and keeps this rank's rows of it
        (:func:`distrain.engine.exchange.even_split`)."""
        raise NotImplementedError

    def subset(self, ranks: Sequence[int]) -> "Backend | None":
        """A backend over ``ranks`` (a process set), made by every rank together.

        Returns:
            The backend on the members; None elsewhere.
        """
        raise NotImplementedError(f"the {self.name} backend has no process sets")

    def release_subset(self, ranks: Sequence[int]) -> None:
        """Ends the set of ``ranks`` made by :meth:`subset`, every rank together, before
        its members shut their set's backend down; here a barrier."""
        self.barrier()

    def mpi_threads_supported(self) -> bool:
        """True when the MPI library takes calls from several threads at once.

        Raises:
            ValueError: the backend does not use MPI.
        """
        raise ValueError(f"MPI is not enabled: the running backend is {self.name!r}")

    def join(self) -> int:
        """Takes part in the other ranks' collectives with nothing of its own until every
        rank has joined.

        Returns:
            The rank that joined last.
        """
        raise NotImplementedError(f"the {self.name} backend has no join")

    def allreduce_tensors(self, tensors: Sequence, op: ReduceOp, wire_dtype: str | None,
                          label: str) -> list:
        """TensorFlow-level grouped allreduce, eager or in a graph (native backends only).

        Raises:
            NotImplementedError: the backend is not :attr:`native_tensorflow`.
        """
        raise NotImplementedError(f"the {self.name} backend takes numpy arrays")

    def broadcast_tensors(self, tensors: Sequence, root: int, label: str) -> list:
        """TensorFlow-level broadcast from ``root`` (native backends only).

        Raises:
            NotImplementedError: the backend is not :attr:`native_tensorflow`.
        """
        raise NotImplementedError(f"the {self.name} backend takes numpy arrays")

    def allgather_tensor(self, tensor, label: str):
        """TensorFlow-level allgather along the first dimension (native backends only).

        Raises:
            NotImplementedError: the backend is not :attr:`native_tensorflow`.
        """
        raise NotImplementedError(f"the {self.name} backend takes numpy arrays")

    def message_allreduce(self, buffer: np.ndarray) -> None:
        """Sums ``buffer`` in place as one message, with no negotiation or fusion: what the
        cost model's calibration times (a float32 buffer of at most :attr:`chunk_bytes`).
        """
        raise NotImplementedError

    def allgather_object(self, obj) -> list:
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


class EngineBackend(Backend):
    """A backend that moves its bytes through distrain's :class:`FusedEngine`.

    Attributes:
        engine: the :class:`~distrain.engine.fused.FusedEngine`, set by the subclass.
    """

    engine: FusedEngine

    @property
    def fusion_threshold(self) -> int:
        return self.engine.fusion_threshold

    @property
    def chunk_bytes(self) -> int:
        return self.engine.chunk_bytes

    def set_fusion(self, threshold: int, chunk_bytes: int) -> None:
        with self.engine.lock:
            self.engine.fusion_threshold, self.engine.chunk_bytes = threshold, chunk_bytes
