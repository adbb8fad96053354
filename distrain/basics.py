"""Horovod's build and runtime queries, and the world as graph ops.

The ``*_op`` functions give int32 scalars read when they run (inside ``tf.function`` at
every call, not when traced). The ``*_built`` / ``*_enabled`` flags say what distrain offers:
MPI through mpi4py; no Gloo, NCCL, CUDA, ROCm, DDL or oneCCL (``nccl_built()`` is 0, an int,
as Horovod's NCCL version code).

Example:
    >>> basics.mpi_built(), basics.nccl_built()      # doctest: +SKIP
    (True, 0)
"""
from __future__ import annotations

import importlib.util
import sys

import numpy as np

from distrain import collective_timeline, process_sets, runtime

__all__ = ["scalar_op", "rank_op", "size_op", "local_rank_op", "local_size_op", "process_set_included_op",
           "mpi_built", "mpi_enabled", "gloo_built", "gloo_enabled", "nccl_built",
           "cuda_built", "rocm_built", "ddl_built", "ccl_built", "sycl_built",
           "mpi_threads_supported",
           "is_homogeneous", "start_timeline", "stop_timeline", "check_num_rank_power_of_2"]


def scalar_op(read, name=None):
    """An int32 scalar that ``read()`` gives when the op runs."""
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return read()
    if tf.executing_eagerly():
        return tf.constant(read(), tf.int32, name=name)
    value = tf.numpy_function(lambda: np.int32(read()), [], tf.int32, stateful=True,
                              name=name)
    value.set_shape(())
    return value


def rank_op(name=None):
    """This rank, as an int32 scalar op."""
    return scalar_op(runtime.rank, name)


def local_rank_op(name=None):
    """This rank on its host, as an int32 scalar op."""
    return scalar_op(runtime.local_rank, name)


def local_size_op(name=None):
    """The number of ranks on this host, as an int32 scalar op."""
    return scalar_op(runtime.local_size, name)


def size_op(process_set_id: int = 0, name=None):
    """The number of ranks of a process set (the world by default), as an int32 scalar op;
    -3 for an id no set has, as Horovod."""
    def read():
        found = _by_id(process_set_id)
        return -3 if found is None else len(found.ranks)
    return scalar_op(read, name)


def process_set_included_op(process_set_id: int = 0, name=None):
    """1 when this rank is in the process set, else 0 (-3 for an unknown id)."""
    def read():
        found = _by_id(process_set_id)
        return -3 if found is None else int(runtime.rank() in found.ranks)
    return scalar_op(read, name)


def _by_id(process_set_id: int):
    runtime.backend()
    return process_sets.by_id(process_set_id)


def mpi_built() -> bool:
    """True when mpi4py is installed (distrain's MPI)."""
    return importlib.util.find_spec("mpi4py") is not None


def mpi_enabled() -> bool:
    """True when the running backend moves data over MPI (``mpi``, or Horovod's)."""
    return runtime.backend_name() in ("mpi", "horovod")


def gloo_built() -> bool:
    """False: distrain has no Gloo controller."""
    return False


def gloo_enabled() -> bool:
    """False: distrain has no Gloo controller."""
    return False


def nccl_built() -> int:
    """0: distrain runs collectives on the host (Horovod returns the NCCL version code)."""
    return 0


def cuda_built() -> bool:
    """False: no GPU collectives."""
    return False


def rocm_built() -> bool:
    """False: no GPU collectives."""
    return False


def ddl_built() -> bool:
    """False: no IBM DDL."""
    return False


def ccl_built() -> bool:
    """False: no oneCCL."""
    return False


def sycl_built() -> bool:
    """False: no SYCL (Intel GPU) collectives. Horovod's examples after 0.28.1 call it to
    choose between 'XPU' and 'GPU' devices."""
    return False


def mpi_threads_supported() -> bool:
    """True when the MPI library runs calls from several threads at once
    (``MPI_THREAD_MULTIPLE``).

    Raises:
        ValueError: MPI is not in use.
    """
    return runtime.backend().mpi_threads_supported()


def is_homogeneous() -> bool:
    """True when every host runs the same number of ranks."""
    return runtime.backend().homogeneous


def start_timeline(file_path: str, mark_cycles: bool = False) -> None:
    """Records this rank's collectives until :func:`stop_timeline`
    (:mod:`distrain.collective_timeline`).

    Raises:
        NotInitializedError: before ``init``.
        ValueError: the path's directory does not exist.
    """
    collective_timeline.start(file_path, runtime.rank())


def stop_timeline() -> None:
    """Writes the timeline :func:`start_timeline` began (nothing when none runs)."""
    runtime.backend()
    collective_timeline.stop()


def check_num_rank_power_of_2(num_rank: int) -> bool:
    """True when ``num_rank`` is a power of two (what Adasum needs)."""
    return num_rank != 0 and (num_rank & (num_rank - 1)) == 0
