"""distrain: data-parallel TensorFlow/Keras training over MPI, with Horovod's API.

Example:
    >>> import distrain as hvd
    >>> hvd.init()
    >>> hvd.rank(), hvd.size()          # (0, 1) in a plain python process
    (0, 1)
"""
from distrain.collectives import (NotInitializedError, allgather, allreduce, barrier,
                                  broadcast, broadcast_variables, cross_rank, cross_size,
                                  grouped_allreduce, init, is_initialized, local_rank,
                                  local_size, rank, shutdown, size)
from distrain.backends.base import CollectiveMismatchError
from distrain.environment import WorldError
from distrain.ops import Average, Compression, Max, Min, ReduceOp, Sum

__version__ = "0.1.0"

__all__ = [
    "init", "shutdown", "is_initialized", "rank", "size", "local_rank", "local_size",
    "cross_rank", "cross_size", "allreduce", "grouped_allreduce", "broadcast",
    "broadcast_variables", "allgather", "barrier", "Average", "Sum", "Min", "Max",
    "ReduceOp", "Compression", "NotInitializedError", "CollectiveMismatchError", "WorldError",
    "__version__",
]
