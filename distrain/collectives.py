"""distrain's collective API, with Horovod's names.

Every function takes numpy arrays, tf.Tensor or tf.Variable, and returns the kind it was
given (a tf.Variable's result is a tf.Tensor, as in Horovod: a reduced value is not a
variable) with the same dtype and shape. Inside ``tf.function`` each call is one graph op.

Example:
    >>> import distrain as hvd
    >>> hvd.init()
    >>> hvd.allreduce(np.ones(3), op=hvd.Sum)   # doctest: +SKIP
    array([2., 2., 2.])                          # on 2 ranks
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from distrain import failfast
from distrain.backends import Backend, check_root, create_backend
from distrain.ops import Average, Compression, Compressor, ReduceOp, Sum, parse_op
from distrain.engine.bucket_queue import close_process_queue
from distrain.engine.bucket_queue import drain_process_queue as _in_order
from distrain.engine.tensors import (Kind, from_numpy, graph_collective, is_indexed_slices,
                                     is_symbolic, kind_of, to_numpy)

__all__ = ["NotInitializedError", "init", "shutdown", "is_initialized", "backend", "rank",
           "size", "local_rank", "local_size", "cross_rank", "cross_size", "allreduce",
           "grouped_allreduce", "broadcast", "broadcast_variables", "allgather", "allgather_object",
           "barrier", "backend_name", "fusion_threshold", "chunk_bytes", "message_allreduce",
           "allreduce_runner", "native_backend"]


class NotInitializedError(ValueError):
    """A collective or world query was used before :func:`init`."""


_backend: Backend | None = None


def init(backend: str | None = None) -> None:
    """Starts distrain on this rank; safe to call more than once.

    Args:
        backend: ``mpi``, ``horovod``, ``local`` or ``auto``; ``DISTRAIN_BACKEND`` when None.

    Raises:
        ValueError: unknown backend.
        WorldError: the launcher's description and the backend disagree.
    """
    global _backend
    if _backend is not None:
        return
    _backend = create_backend(backend)
    if _backend.world.size > 1:
        failfast.install(_backend.world.rank, _backend.abort)


def shutdown() -> None:
    """Stops the backend; :func:`init` may be called again afterwards."""
    global _backend
    close_process_queue()
    if _backend is not None:
        _backend.shutdown()
        _backend = None
        failfast.uninstall()


def is_initialized() -> bool:
    """True between :func:`init` and :func:`shutdown`."""
    return _backend is not None


def backend() -> Backend:
    """The running backend, for the collective layer; the layers above use this module's
    functions instead.

    Raises:
        NotInitializedError: before :func:`init`.
    """
    if _backend is None:
        raise NotInitializedError("distrain has not been initialized; call distrain.init() "
                                  "first")
    return _backend


def allreduce_runner(op, compression, label: str):
    """A function reducing a list of numpy arrays with the running backend, for the queue.

    Args:
        op: a :class:`~distrain.ops.ReduceOp`.
        compression: a compressor or its name.
        label: shown in error and stall messages.
    """
    active, wire_dtype = backend(), _compressor(compression).wire_dtype
    return lambda arrays: active.allreduce(arrays, op, wire_dtype, label)


def native_backend() -> bool:
    """True when the backend runs TensorFlow ops itself (Horovod's), not numpy collectives."""
    return backend().native_tensorflow


def rank() -> int:
    """This process's rank, 0 <= rank < size."""
    return backend().world.rank


def size() -> int:
    """The number of ranks."""
    return backend().world.size


def local_rank() -> int:
    """This process's rank among the ranks on its host."""
    return backend().world.local_rank


def local_size() -> int:
    """The number of ranks on this host."""
    return backend().world.local_size


def cross_rank() -> int:
    """The index of this host."""
    return backend().world.cross_rank


def cross_size() -> int:
    """The number of hosts."""
    return backend().world.cross_size


def _resolve_op(op, average) -> ReduceOp:
    if average is not None:
        if op is not None:
            raise ValueError("pass either op or the deprecated average, not both")
        return Average if average else Sum
    return parse_op(Average if op is None else op)


def _compressor(compression) -> Compressor:
    if compression is None:
        return Compression.none
    if isinstance(compression, Compressor):
        return compression
    return Compression.by_name(compression)


def allreduce(tensor, average=None, op=None, compression=Compression.none, name=None,
              prescale_factor: float = 1.0, postscale_factor: float = 1.0):
    """Reduces a tensor across ranks.

    Args:
        tensor: numpy array, tf.Tensor, tf.Variable or tf.IndexedSlices.
        average: deprecated Horovod flag; True means ``op=Average``.
        op: ``Average`` (default), ``Sum``, ``Min`` or ``Max``.
        compression: ``Compression.none``, ``.fp16`` or ``.bf16`` for the wire.
        name: shown in error and stall messages.
        prescale_factor: multiplies the input before the reduction.
        postscale_factor: multiplies the result.

    Returns:
        The reduced value, of the input's kind, dtype and shape. For tf.IndexedSlices, the
        values and indices of every rank gathered (values divided by size for Average).

    Raises:
        NotInitializedError: before :func:`init`.
        ValueError: unknown op; ranks disagree on shape or dtype.
    """
    return grouped_allreduce([tensor], average, op, compression, name, prescale_factor,
                             postscale_factor)[0]


def grouped_allreduce(tensors: Sequence, average=None, op=None,
                      compression=Compression.none, name=None,
                      prescale_factor: float = 1.0, postscale_factor: float = 1.0) -> list:
    """Reduces a list of tensors across ranks in fused messages.

    Args:
        tensors: a list of what :func:`allreduce` takes.
        average, op, compression, name, prescale_factor, postscale_factor: as
            :func:`allreduce`.

    Returns:
        A list of results, one per input, in order.

    Raises:
        NotInitializedError: before :func:`init`.
        ValueError: unknown op; ranks disagree on shapes or dtypes.
    """
    active = backend()
    reduce_op = _resolve_op(op, average)
    wire_dtype = _compressor(compression).wire_dtype
    label = name or f"grouped_allreduce of {len(tensors)} tensor(s)"
    tensors = list(tensors)
    results: list = [None] * len(tensors)
    dense = [i for i, t in enumerate(tensors) if not is_indexed_slices(t)]
    for i, t in enumerate(tensors):
        if is_indexed_slices(t):
            results[i] = _sparse_allreduce(t, reduce_op, f"{label}[{i}]")
    values = [_prescaled(tensors[i], prescale_factor) for i in dense]

    def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
        _in_order()
        outs = active.allreduce(arrays, reduce_op, wire_dtype, label)
        if postscale_factor != 1.0:
            outs = [_scaled(o, postscale_factor) for o in outs]
        return outs

    if _native(active, values):
        outs = active.allreduce_tensors(values, reduce_op, wire_dtype, label)
        if postscale_factor != 1.0:
            outs = [_tf_scaled(o, postscale_factor) for o in outs]
        outs = _native_results(outs, values)
    elif is_symbolic(values):
        outs = graph_collective(run, values, [v.shape for v in values], name=None)
    else:
        kinds = [kind_of(v) for v in values]
        outs = [from_numpy(o, k) for o, k in zip(run([to_numpy(v) for v in values]), kinds)]
    for i, out in zip(dense, outs):
        results[i] = out
    return results


def _native(active: Backend, values) -> bool:
    """True when the backend takes TensorFlow values itself (Horovod's ops)."""
    return active.native_tensorflow and any(
        kind_of(v) == Kind.TENSOR for v in values)


def _native_results(outputs, inputs) -> list:
    """Gives numpy inputs numpy results when a native backend returned tensors."""
    return [o if kind_of(i) == Kind.TENSOR else np.asarray(o.numpy())
            for o, i in zip(outputs, inputs)]


def _tf_scaled(tensor, factor: float):
    import tensorflow as tf
    return tf.cast(tf.cast(tensor, tf.float64) * factor, tensor.dtype)


def _prescaled(value, factor: float):
    if factor == 1.0:
        return value
    if kind_of(value) == Kind.TENSOR:
        return value * factor
    return _scaled(to_numpy(value), factor)


def _scaled(array: np.ndarray, factor: float) -> np.ndarray:
    return (array * factor).astype(array.dtype, copy=False)


def _sparse_allreduce(slices, op: ReduceOp, label: str):
    import tensorflow as tf
    if op not in (Average, Sum):
        raise ValueError(f"tf.IndexedSlices can only be summed or averaged, not {op.name}")
    values = allgather(slices.values, name=f"{label}.values")
    indices = allgather(slices.indices, name=f"{label}.indices")
    if op is Average:
        values = values / tf.cast(size(), values.dtype)
    return tf.IndexedSlices(values, indices, dense_shape=slices.dense_shape)


def broadcast(tensor, root_rank: int = 0, name=None):
    """Returns root's value of ``tensor`` on every rank.

    Args:
        tensor: numpy array, tf.Tensor or tf.Variable; the same shape and dtype everywhere.
        root_rank: the rank whose value is sent.
        name: shown in error and stall messages.

    Returns:
        Root's value, of the input's kind.

    Raises:
        ValueError: ``root_rank`` is out of range; ranks disagree on shape or dtype.
    """
    return _broadcast_list([tensor], root_rank, name or "broadcast")[0]


def _broadcast_list(tensors: Sequence, root_rank: int, label: str) -> list:
    active = backend()
    root = check_root(root_rank, active.world.size)

    def run(arrays):
        _in_order()
        return active.broadcast(arrays, root, label)

    if _native(active, tensors):
        return _native_results(active.broadcast_tensors(tensors, root, label), tensors)
    if is_symbolic(tensors):
        return graph_collective(run, tensors, [t.shape for t in tensors])
    kinds = [kind_of(t) for t in tensors]
    return [from_numpy(o, k) for o, k in zip(run([to_numpy(t) for t in tensors]), kinds)]


def broadcast_variables(variables: Sequence, root_rank: int = 0) -> None:
    """Assigns root's values to every variable, in one fused broadcast.

    Args:
        variables: tf.Variable objects (or Keras variables), the same list on every rank.
        root_rank: the rank whose values are sent.

    Raises:
        ValueError: ``root_rank`` is out of range; ranks disagree on the variables.
    """
    variables = list(variables)
    if not variables:
        return
    values = _broadcast_list([_variable_value(v) for v in variables], root_rank,
                             f"broadcast_variables of {len(variables)} variable(s)")
    for variable, value in zip(variables, values):
        variable.assign(value)


def _variable_value(variable):
    value = getattr(variable, "value", None)
    if callable(value):  # tf.Variable.value()
        return value()
    return variable if value is None else value  # Keras 3 Variable.value is a property


def allgather(tensor, name=None):
    """Concatenates every rank's tensor along the first dimension (which may differ).

    Args:
        tensor: numpy array, tf.Tensor or tf.Variable of rank >= 1; a scalar counts as [1].
        name: shown in error and stall messages.

    Returns:
        The concatenation in rank order, of the input's kind.

    Raises:
        ValueError: ranks disagree on dtype or on the dimensions after the first.
    """
    active = backend()
    label = name or "allgather"

    def run(arrays):
        array = arrays[0]
        _in_order()
        return [active.allgather(array.reshape(1) if array.ndim == 0 else array, label)]

    if _native(active, [tensor]):
        return _native_results([active.allgather_tensor(tensor, label)], [tensor])[0]
    if is_symbolic([tensor]):
        shape = tensor.shape
        static = [None] + (list(shape[1:]) if shape.rank else [])
        return graph_collective(run, [tensor], [static])[0]
    return from_numpy(run([to_numpy(tensor)])[0], kind_of(tensor))


def allgather_object(obj, name=None) -> list:
    """Every rank's ``obj``, in rank order, as Horovod's ``allgather_object``.

    For small control data (pickled): a few numbers, a digest, a summary.

    Args:
        obj: any picklable object.
        name: accepted for Horovod's signature; distrain's messages call it
            ``allgather_object``.

    Returns:
        A list of ``size()`` objects, rank 0's first.

    Raises:
        NotInitializedError: before :func:`init`.

    Example:
        >>> hvd.allgather_object(hvd.rank())    # doctest: +SKIP
        [0, 1]                                   # on 2 ranks
    """
    active = backend()
    _in_order()
    return active.allgather_object(obj)


def barrier() -> None:
    """Returns once every rank has called it."""
    active = backend()
    _in_order()
    active.barrier()


def backend_name() -> str:
    """The running backend's name: ``mpi``, ``horovod`` or ``local``."""
    return backend().name


def fusion_threshold() -> int:
    """The most bytes one fusion bucket of the running backend holds."""
    return backend().fusion_threshold


def chunk_bytes() -> int:
    """The most bytes one message of the running backend carries."""
    return backend().chunk_bytes


def message_allreduce(send: np.ndarray, recv: np.ndarray) -> None:
    """Sums a float32 buffer across ranks as one message, without negotiation or fusion.

    What the cost model calibrates its per-message constants on; every rank must call it
    with the same size, at most :func:`chunk_bytes`.

    Args:
        send: this rank's values.
        recv: where the sum goes, the same shape.
    """
    active = backend()
    _in_order()
    active.message_allreduce(send, recv)
