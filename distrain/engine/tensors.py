"""Moving values between numpy, TensorFlow tensors and variables without needless copies.

- An eager tensor's memory is read through ``np.asarray`` (no copy).
- A result goes back to TensorFlow through DLPack, which adopts the aligned buffer distrain
  allocated (no copy); dtypes DLPack cannot carry (bfloat16, and bool on TensorFlow 2.15)
  are converted with a copy.
- Inside ``tf.function`` a collective becomes one ``tf.numpy_function`` op. Such ops are
  stateful, so TensorFlow's automatic control dependencies run them in program order on every
  rank, which keeps collectives in the same order across ranks.

TensorFlow is imported only when a TensorFlow value is passed.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence

import numpy as np

from distrain.engine.buffers import is_aligned

__all__ = ["Kind", "kind_of", "to_numpy", "from_numpy", "is_symbolic", "is_indexed_slices",
           "graph_collective", "graph_start", "graph_finish", "unconverted", "as_written"]


class Kind:
    """What a caller passed, so the result comes back as the same kind."""

    NUMPY = "numpy"
    TENSOR = "tensor"      # tf.Tensor; tf.Variable results come back as tf.Tensor too


def _tf():
    return sys.modules.get("tensorflow")


# What each Python type is, found once per type: every tensor of a grouped call is asked
# several times whether it is a TensorFlow value or sparse, and TensorFlow's classes answer
# isinstance through abc.
_NOT_TF, _TF_TENSOR, _TF_VARIABLE = 0, 1, 2
_TF_KIND_OF_TYPE: dict = {}
_SLICES_TYPES: dict = {}


def _tf_kind(cls) -> int:
    known = _TF_KIND_OF_TYPE.get(cls)
    if known is None:
        tf = _tf()
        if tf is None:          # not remembered: TensorFlow may be imported later
            return _NOT_TF
        known = _TF_KIND_OF_TYPE[cls] = (
            _TF_VARIABLE if issubclass(cls, tf.Variable) else
            _TF_TENSOR if issubclass(cls, tf.Tensor) else _NOT_TF)
    return known


def kind_of(value) -> str:
    """Returns :attr:`Kind.TENSOR` for TensorFlow values, else :attr:`Kind.NUMPY`."""
    return Kind.TENSOR if _tf_kind(type(value)) else Kind.NUMPY


def is_indexed_slices(value) -> bool:
    """True for ``tf.IndexedSlices`` (the sparse gradients of an Embedding layer)."""
    cls = type(value)
    known = _SLICES_TYPES.get(cls)
    if known is None:
        tf = _tf()
        if tf is None:
            return False
        known = _SLICES_TYPES[cls] = issubclass(cls, tf.IndexedSlices)
    return known


def is_symbolic(values: Sequence) -> bool:
    """True when any value is a graph tensor (inside ``tf.function``)."""
    tf = _tf()
    if tf is None or tf.executing_eagerly():
        return False
    return any(_tf_kind(type(v)) for v in values)


def to_numpy(value) -> np.ndarray:
    """A C-contiguous numpy view of ``value`` (a copy only where no view exists).

    Args:
        value: a numpy array, Python number or list, tf.Tensor or tf.Variable.

    Returns:
        The array.

    Raises:
        TypeError: the value is not numeric.
    """
    if _tf_kind(type(value)) == _TF_VARIABLE:
        value = value.read_value()
    try:
        array = np.asarray(value)
    except ValueError:  # bfloat16 tensors expose no __array__ buffer; .numpy() copies
        array = value.numpy()
    kind = array.dtype.kind
    if kind not in _NUMERIC_KINDS and not (kind == "V" and array.dtype.name == "bfloat16"):
        raise TypeError(f"collectives take numeric tensors, not {type(value).__name__} of "
                        f"dtype {array.dtype}")
    return _contiguous(array)


_NUMERIC_KINDS = frozenset("biufc")


def _contiguous(array: np.ndarray) -> np.ndarray:
    # np.ascontiguousarray would turn a 0-d array into a 1-d one.
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def from_numpy(array: np.ndarray, kind: str):
    """Returns ``array`` as the kind the caller passed in.

    Args:
        array: a result, aligned when it came from distrain.
        kind: :attr:`Kind.NUMPY` or :attr:`Kind.TENSOR`.

    Returns:
        ``array`` itself, or a tf.Tensor sharing its memory where DLPack allows.
    """
    if kind == Kind.NUMPY:
        return array
    tf = _tf()
    # bfloat16's kind is "V": it is converted with a copy
    if array.dtype.kind in "fiu" and array.size and array.flags.c_contiguous and \
            array.flags.writeable and is_aligned(array):
        return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    return tf.convert_to_tensor(array)


AUTOGRAPH_MARK = "autograph_info__"


def as_written(fn: Callable) -> Callable:
    """Marks ``fn`` so that AutoGraph calls it as written when user code calls it inside
    ``tf.function``, as ``tf.autograph.experimental.do_not_convert`` marks it, without
    importing TensorFlow. distrain's Python runs once at trace time and has no
    data-dependent control flow to convert; converted, it cost a ``DistributedGradientTape``
    2.1 s on its first trace here, against 0.09 s as written.

    Args:
        fn: a function (a method's function works for its bound methods).

    Returns:
        ``fn`` itself.
    """
    setattr(fn, AUTOGRAPH_MARK, frozenset())
    return fn


def unconverted(fn: Callable) -> Callable:
    """``fn``, run with AutoGraph off for the whole call.

    Code that runs inside ``tf.function`` tracing is rewritten by AutoGraph, closures made
    there included; calling such code at run time (a collective's numpy work, every step)
    goes through AutoGraph's per-call conversion machinery, which cost a grouped allreduce
    of 60 tensors 8.8 ms a step instead of 3.1 ms. Every Python callable that a graph op or
    the collective queue runs is wrapped in this.

    Args:
        fn: any callable.

    Returns:
        A callable with ``fn``'s signature.
    """
    return _tf().autograph.experimental.do_not_convert(fn)


def graph_collective(fn: Callable[[list[np.ndarray]], list[np.ndarray]], inputs: Sequence,
                     out_shapes: Sequence, name: str | None = None,
                     out_dtypes: Sequence | None = None) -> list:
    """Runs a numpy-level collective as one op inside ``tf.function``.

    Args:
        fn: takes the inputs as numpy arrays, returns the results.
        inputs: graph tensors.
        out_shapes: the static shape of each result (None entries for unknown dims).
        name: the op's name.
        out_dtypes: each result's dtype; the inputs' dtypes when None.

    Returns:
        Graph tensors, one per result, with those dtypes and the given static shapes.
    """
    tf = _tf()
    inputs = [tf.convert_to_tensor(v) if isinstance(v, tf.Variable) else v for v in inputs]

    def run(*arrays):
        return fn([_contiguous(np.asarray(a)) for a in arrays])

    dtypes = [v.dtype for v in inputs] if out_dtypes is None else list(out_dtypes)
    outputs = tf.numpy_function(unconverted(run), list(inputs), dtypes, stateful=True,
                                name=name)
    for out, shape in zip(outputs, out_shapes):
        out.set_shape(shape)
    return list(outputs)


def graph_start(start: Callable[[list[np.ndarray]], int], inputs: Sequence) -> object:
    """An op inside ``tf.function`` that hands ``inputs`` to ``start`` and returns its handle.

    ``start`` queues work on the inputs and returns at once; the arrays it gets share the
    tensors' memory and keep it alive while referenced, so the queued work reads them safely.

    Args:
        start: takes the inputs as numpy arrays, returns an integer handle.
        inputs: graph tensors.

    Returns:
        A scalar int64 graph tensor: the handle.
    """
    tf = _tf()

    def run(*arrays):
        return np.int64(start([_contiguous(np.asarray(a)) for a in arrays]))

    token = tf.numpy_function(unconverted(run), list(inputs), tf.int64, stateful=True)
    token.set_shape(())
    return token


def graph_finish(finish: Callable[[int], list[np.ndarray]], token, like: Sequence) -> list:
    """An op inside ``tf.function`` that waits for a handle's results.

    Args:
        finish: takes the handle, returns the results as numpy arrays.
        token: the handle tensor from :func:`graph_start`.
        like: tensors whose dtypes and static shapes the results have.

    Returns:
        Graph tensors, one per result.
    """
    tf = _tf()
    outputs = tf.numpy_function(unconverted(lambda handle: finish(int(handle))), [token],
                                [v.dtype for v in like], stateful=True)
    for out, v in zip(outputs, like):
        out.set_shape(v.shape)
    return list(outputs)
