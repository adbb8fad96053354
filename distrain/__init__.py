"""distrain: data-parallel TensorFlow/Keras training over MPI, with Horovod's API.

Names load on first use, so ``import distrain`` (done by the ``distrain-run`` launcher) costs
no numpy, MPI or TensorFlow import.

Example:
    >>> import distrain as hvd
    >>> hvd.init()
    >>> hvd.rank(), hvd.size()          # (0, 1) in a plain python process
    (0, 1)
"""
import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "distrain.collectives": (
        "init", "shutdown", "is_initialized", "rank", "size", "local_rank", "local_size",
        "cross_rank", "cross_size", "allreduce", "grouped_allreduce", "reducescatter",
        "grouped_reducescatter", "allgather", "grouped_allgather", "alltoall",
        "allgather_object", "broadcast", "broadcast_", "broadcast_variables",
        "broadcast_global_variables", "broadcast_object", "broadcast_object_fn", "barrier",
        "join", "ProcessSet", "global_process_set", "add_process_set", "remove_process_set",
        "rank_op", "size_op", "local_rank_op", "local_size_op", "process_set_included_op",
        "mpi_built", "mpi_enabled", "gloo_built", "gloo_enabled", "nccl_built", "cuda_built",
        "rocm_built", "ddl_built", "ccl_built", "sycl_built", "mpi_threads_supported",
        "is_homogeneous",
        "start_timeline", "stop_timeline", "check_num_rank_power_of_2",
        "NotInitializedError"),
    "distrain.overlap": ("grouped_allreduce_async", "synchronize"),
    "distrain.ops": ("Average", "Sum", "Min", "Max", "Product", "Adasum", "ReduceOp",
                     "Compression"),
    "distrain.backends.base": ("CollectiveMismatchError", "CollectiveError",
                               "CollectiveArgumentError", "CollectiveAbortedError"),
    "distrain.environment": ("WorldError",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [name for names in _EXPORTS.values() for name in names] + ["__version__"]


def __getattr__(name):
    module = _WHERE.get(name)
    if module is None:
        try:  # a submodule, e.g. distrain.collectives
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise                 # the submodule is there; a module it imports is not
            raise AttributeError(f"module 'distrain' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
