"""Reductions, with Horovod's names: allreduce, grouped_allreduce, reducescatter,
grouped_reducescatter.

Every function takes numpy arrays, tf.Tensor or tf.Variable and returns the kind it was given
(a tf.Variable's result is a tf.Tensor, as in Horovod). TensorFlow values are differentiable:
the gradient of an allreduce is the allreduce of the upstream gradient with the same op and
scaling; of a reducescatter, the allgather of it (divided by the set's size for Average).

Example:
    >>> hvd.allreduce(np.ones(3), op=hvd.Sum)                 # doctest: +SKIP
    array([2., 2., 2.])                                        # on 2 ranks
    >>> hvd.reducescatter(np.arange(5.0), op=hvd.Sum)         # doctest: +SKIP
    array([0., 2., 4.])                                        # rank 0 of 2: rows 0-2
"""
from __future__ import annotations

import sys
import warnings
from typing import Sequence

import numpy as np

from distrain import gathering
from distrain.backends.base import (CollectiveAbortedError, CollectiveArgumentError,
                                    CollectiveError)
from distrain.engine.tensors import Kind, is_indexed_slices, kind_of, to_numpy
from distrain.op_bridge import Call, horovod_errors, maybe_differentiable, run_collective
from distrain.ops import (Adasum, Average, Compression, ReduceOp, Sum, compressor_of,
                          parse_op)
from distrain.process_sets import ProcessSet, backend_for, global_process_set

__all__ = ["allreduce", "grouped_allreduce", "reducescatter", "grouped_reducescatter"]

_SCATTER_OPS = (ReduceOp.AVERAGE, ReduceOp.SUM)
_SPARSE_OPS = (ReduceOp.AVERAGE, ReduceOp.SUM)


def _resolve_op(op, average) -> ReduceOp:
    if average is not None:
        if op is not None:
            raise ValueError("The op parameter supersedes average. Please provide only one "
                             "of them.")
        warnings.warn("Parameter `average` has been replaced with `op` and will be removed",
                      DeprecationWarning, stacklevel=4)
        return Average if average else Sum
    return parse_op(Average if op is None else op)


def allreduce(tensor, average=None, device_dense="", device_sparse="",
              compression=Compression.none, op=None, prescale_factor: float = 1.0,
              postscale_factor: float = 1.0, name=None, process_set=global_process_set,
              ignore_name_scope: bool = False):
    """Reduces a tensor across the ranks of a process set (all ranks by default).

    Args:
        tensor: numpy array, tf.Tensor, tf.Variable or tf.IndexedSlices.
        average: deprecated Horovod flag; True means ``op=Average``.
        device_dense, device_sparse, ignore_name_scope: accepted for Horovod's signature;
            distrain runs collectives on the host.
        compression: ``Compression.none``, ``.fp16`` or ``.bf16`` for the wire.
        op: ``Average`` (default), ``Sum``, ``Min``, ``Max``, ``Product`` or ``Adasum``.
        prescale_factor: multiplies the input before the reduction.
        postscale_factor: multiplies the result.
        name: shown in error and stall messages.
        process_set: the ranks that reduce together.

    Returns:
        The reduced value, of the input's kind, dtype and shape. For tf.IndexedSlices, the
        values and indices of every rank gathered (values divided by size for Average).

    Raises:
        NotInitializedError: before ``init``.
        ValueError: unknown op; Adasum on a set whose size is not a power of two, or on
            integers; this rank is not in ``process_set``.
        NotImplementedError: tf.IndexedSlices with an op other than Sum or Average.
        CollectiveMismatchError: ranks disagree on shape, dtype or op.
    """
    return grouped_allreduce([tensor], average, device_dense, device_sparse, compression, op,
                             prescale_factor, postscale_factor, process_set, name=name)[0]


@horovod_errors
def grouped_allreduce(tensors: Sequence, average=None, device_dense="", device_sparse="",
                      compression=Compression.none, op=None, prescale_factor: float = 1.0,
                      postscale_factor: float = 1.0, process_set=global_process_set,
                      ignore_name_scope: bool = False, name=None) -> list:
    """Reduces a list of tensors across ranks in fused messages.

    Args:
        tensors: a list of what :func:`allreduce` takes.
        Others: as :func:`allreduce`.

    Returns:
        A list of results, one per input, in order.
    """
    active = backend_for(process_set, "Allreduce")
    reduce_op = _resolve_op(op, average)
    wire_dtype = compressor_of(compression).wire_dtype
    label = name or f"grouped_allreduce of {len(tensors)} tensor(s)"
    prescale, postscale = _factor(prescale_factor), _factor(postscale_factor)
    tensors = list(tensors)
    results: list = [None] * len(tensors)
    for i, t in enumerate(tensors):
        if is_indexed_slices(t):
            results[i] = _sparse_allreduce(t, reduce_op, f"{label}[{i}]", process_set,
                                           prescale, postscale)
    dense = [i for i, t in enumerate(tensors) if not is_indexed_slices(t)]
    values = [tensors[i] for i in dense]
    if reduce_op is Adasum:
        _check_adasum(values, active.world.size, process_set)

    def forward(inputs):
        if active.native_tensorflow and any(kind_of(v) == Kind.TENSOR for v in inputs):
            scaled = [_scaled_tensor(v, prescale) for v in inputs]
            op, post = _integer_average(reduce_op, postscale, [v.dtype for v in inputs],
                                        active.world.size)
            outs = active.allreduce_tensors(scaled, op, wire_dtype, label)
            outs = [_scaled_tensor(o, post) for o in outs]
            return [o if kind_of(i) == Kind.TENSOR else np.asarray(o.numpy())
                    for o, i in zip(outs, inputs)]

        def run(arrays):
            return _reduce(active, [_scaled(a, prescale) for a in arrays], reduce_op,
                           wire_dtype, label, postscale)
        return run_collective(run, inputs, name=label)

    call = Call("allreduce", label, process_set, reduce_op, compression, prescale, postscale)
    outs = maybe_differentiable(forward, call, values)
    for i, out in zip(dense, outs):
        results[i] = out
    return results


def _factor(factor) -> float:
    """A scale factor as Horovod applies it: rounded to float32, used in float64."""
    return float(np.float32(factor))


def _integer_average(op: ReduceOp, postscale: float, dtypes, size: int):
    """``(op, postscale)`` to run: an integer Average with a postscale is Horovod's Sum
    scaled once by ``postscale / size`` (one truncation, not two)."""
    if op is Average and postscale != 1.0 and any(
            np.dtype(getattr(d, "as_numpy_dtype", d)).kind in "iub" for d in dtypes):
        return Sum, postscale / size
    return op, postscale


def _reduce(active, arrays, op: ReduceOp, wire_dtype, label: str, postscale: float) -> list:
    """The backend's reduction, then the postscale (:func:`_integer_average`)."""
    op, postscale = _integer_average(op, postscale, [a.dtype for a in arrays],
                                     active.world.size)
    return [_scaled(o, postscale) for o in active.allreduce(arrays, op, wire_dtype, label)]


def _check_adasum(values, size: int, process_set) -> None:
    if isinstance(process_set, ProcessSet) and process_set is not global_process_set:
        raise NotImplementedError("Adasum does not support non-global process sets yet.")
    if size & (size - 1):
        raise NotImplementedError("Running Adasum with non-power of 2 ranks is not supported "
                                  "yet.")
    for v in values:
        dtype = np.dtype(getattr(v.dtype, "as_numpy_dtype", v.dtype))
        if dtype.kind != "f" or dtype.name == "bfloat16":
            raise CollectiveError(f"Adasum reduces float16, float32 and float64 tensors; "
                                  f"unsupported data type {dtype.name}")


def _scaled(array: np.ndarray, factor: float) -> np.ndarray:
    """``array * factor`` in ``array``'s dtype; integers round toward zero, as Horovod's
    scaling of integer tensors does."""
    if factor == 1.0:
        return array
    if array.dtype.kind in "iub":
        return np.trunc(array * np.float64(factor)).astype(array.dtype)
    return (array * factor).astype(array.dtype, copy=False)


def _scaled_tensor(tensor, factor: float):
    if factor == 1.0:
        return tensor
    if kind_of(tensor) != Kind.TENSOR:
        return _scaled(to_numpy(tensor), factor)
    tf = sys.modules["tensorflow"]
    return tf.cast(tf.cast(tensor, tf.float64) * factor, tensor.dtype)


def _sparse_allreduce(slices, op: ReduceOp, label: str, process_set, prescale: float,
                      postscale: float):
    tf = sys.modules["tensorflow"]
    if op is Adasum:
        raise NotImplementedError("The Adasum reduction does not currently support sparse "
                                  "tensors. As a workaround please pass sparse_as_dense=True "
                                  "to DistributedOptimizer")
    if op not in _SPARSE_OPS:
        raise NotImplementedError("Only Sum and Average ops are supported with "
                                  "tf.IndexedSlices")
    if prescale != 1.0 or postscale != 1.0:
        raise NotImplementedError("Pre/postscale_factor are not supported with "
                                  "tf.IndexedSlices")
    values = gathering.allgather(slices.values, name=f"{label}.values",
                                 process_set=process_set)
    indices = gathering.allgather(slices.indices, name=f"{label}.indices",
                                  process_set=process_set)
    if op is Average:
        values = values / tf.cast(backend_for(process_set).world.size, values.dtype)
    return tf.IndexedSlices(values, indices, dense_shape=slices.dense_shape)


def reducescatter(tensor, device_dense="", compression=Compression.none, op=Average,
                  name=None, process_set=global_process_set, ignore_name_scope: bool = False,
                  prescale_factor: float = 1.0, postscale_factor: float = 1.0):
    """Reduces a tensor across ranks and gives each rank its rows of the result.

    The first dimension of ``n`` rows is split as Horovod splits it: every rank gets
    ``n // size`` rows and the first ``n % size`` ranks one more.

    Args:
        tensor: numpy array, tf.Tensor or tf.Variable of at least one dimension, the same
            shape on every rank.
        device_dense, ignore_name_scope: accepted for Horovod's signature.
        compression: the wire compression.
        op: ``Average`` (default) or ``Sum``.
        name: shown in error and stall messages.
        process_set: the ranks that reduce together.
        prescale_factor, postscale_factor: as :func:`allreduce`.

    Returns:
        This rank's rows of the reduction, of the input's kind and dtype.

    Raises:
        ValueError: an op other than Sum or Average; a scalar.
        CollectiveMismatchError: ranks disagree on shape or dtype.
    """
    return grouped_reducescatter([tensor], device_dense, compression, op, process_set,
                                 prescale_factor, postscale_factor, name=name)[0]


@horovod_errors
def grouped_reducescatter(tensors: Sequence, device_dense="", compression=Compression.none,
                          op=Average, process_set=global_process_set,
                          prescale_factor: float = 1.0, postscale_factor: float = 1.0,
                          name=None) -> list:
    """:func:`reducescatter` of each tensor, fused into one message per dtype.

    Returns:
        A list of results, one per input.
    """
    active = backend_for(process_set, "Reducescatter")
    reduce_op = parse_op(op)
    if reduce_op not in _SCATTER_OPS:
        raise CollectiveAbortedError("Reducescatter currently only supports AVERAGE and SUM.")
    wire_dtype = compressor_of(compression).wire_dtype
    label = name or f"reducescatter of {len(tensors)} tensor(s)"
    prescale, postscale = _factor(prescale_factor), _factor(postscale_factor)
    values = list(tensors)
    for v in values:
        if v.shape is not None and len(v.shape) == 0:
            raise CollectiveArgumentError("Reducescatter does not support scalar inputs")
    size = active.world.size

    def forward(inputs):
        def run(arrays):
            arrays = [_scaled(a, prescale) for a in arrays]
            op, post = _integer_average(reduce_op, postscale, [a.dtype for a in arrays], size)
            return [_scaled(o, post)
                    for o in active.reducescatter(arrays, op, wire_dtype, label)]
        shapes = [[None] + list(v.shape[1:]) for v in inputs]
        return run_collective(run, inputs, shapes, name=label)

    call = Call("reducescatter", label, process_set, reduce_op, compression, prescale,
                postscale, size=size)
    return maybe_differentiable(forward, call, values)
