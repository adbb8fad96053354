"""How a numpy-level collective becomes an operation on any value a program passes.

- numpy arrays and eager tensors: converted without copies (:mod:`distrain.engine.tensors`),
  the result given back as the kind passed;
- inside ``tf.function``: one stateful op, run in program order on every rank;
- in a TF1 graph (``tf.compat.v1`` sessions): one op matched by name across ranks
  (:mod:`distrain.name_matching`), since a session keeps no order between independent ops;
- TensorFlow values: differentiable, with the gradient registered for the collective
  (:func:`register_gradient`; Horovod's definitions are in :mod:`distrain.gradients`);
- in a TensorFlow program, a collective's error is both distrain's class and the
  ``tf.errors`` class Horovod raises: ranks that disagree get a
  :class:`~distrain.backends.base.CollectiveMismatchError` that is a
  ``tf.errors.FailedPreconditionError`` (:func:`horovod_errors`). Inside ``tf.function``
  TensorFlow reports any exception raised in an op as ``InvalidArgumentError``.

Example:
    >>> run_collective(lambda arrays: [a * 2 for a in arrays], [np.ones(2)])
    [array([2., 2.])]
"""
from __future__ import annotations

import dataclasses
import functools
import re
import sys
from typing import Callable, Sequence

import numpy as np

from distrain import runtime
from distrain.backends.base import CollectiveError
from distrain.engine.buffers import aligned_empty
from distrain.engine.bucket_queue import drain_process_queue
from distrain.engine.tensors import (Kind, as_written, from_numpy, graph_collective,
                                     is_symbolic, kind_of, to_numpy)
from distrain.name_matching import NameMatcher

__all__ = ["run_collective", "Call", "register_gradient", "differentiable",
           "maybe_differentiable", "horovod_errors", "tensorflow_class", "wants_gradient"]

_TENSORFLOW_CLASSES: dict = {}


def tensorflow_class(cls: type) -> type:
    """The class a TensorFlow program's :class:`CollectiveError` ``cls`` is raised as: a
    subclass of ``cls`` (so ``except ValueError`` still catches it) and of the
    ``tf.errors`` class Horovod raises for it (``cls.tensorflow_error``)."""
    made = _TENSORFLOW_CLASSES.get(cls)
    if made is None:
        tf_class = getattr(sys.modules["tensorflow"].errors, cls.tensorflow_error)

        def __init__(self, message: str):
            tf_class.__init__(self, None, None, message)

        made = type(cls.__name__, (cls, tf_class), {
            "__init__": __init__, "__str__": lambda self: self.message,
            "__module__": cls.__module__, "__doc__": cls.__doc__})
        _TENSORFLOW_CLASSES[cls] = made
    return made


def horovod_errors(fn: Callable) -> Callable:
    """``fn``, raising its :class:`CollectiveError` as Horovod's ``tf.errors`` class too once
    TensorFlow is loaded (what Horovod's TensorFlow ops raise)."""
    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CollectiveError as exc:
            tf = sys.modules.get("tensorflow")
            if tf is None or isinstance(exc, tf.errors.OpError):
                raise
            raise tensorflow_class(type(exc))(str(exc)) from None
    return as_written(call)


def run_collective(run: Callable[[list[np.ndarray]], list[np.ndarray]], values: Sequence,
                   out_shapes: Sequence | None = None, out_dtypes: Sequence | None = None,
                   name: str | None = None) -> list:
    """Runs ``run`` on ``values`` of any kind, eagerly or as one graph op.

    Args:
        run: takes numpy arrays, returns numpy results; it runs after the overlap queue has
            drained, so collectives keep one order on every rank.
        values: numpy arrays, tensors or variables.
        out_shapes: each result's static shape in a graph (the inputs' when None).
        out_dtypes: each result's dtype in a graph (the inputs' when None).
        name: the collective's name: in a TF1 graph, what ranks match it by.

    Returns:
        The results, each of its input's kind (numpy for numpy inputs; results past the
        inputs' count take the first input's kind).
    """
    def ordered(arrays):
        drain_process_queue()
        return run(arrays)

    if is_symbolic(values):
        shapes = [v.shape for v in values] if out_shapes is None else out_shapes
        if sys.modules["tensorflow"].inside_function():
            return graph_collective(ordered, values, shapes, out_dtypes=out_dtypes)
        return _name_matched(ordered, values, shapes, out_dtypes, name)
    kinds = [kind_of(v) for v in values]
    arrays = [to_numpy(v) for v in values]
    outs = ordered(arrays)
    kinds += [kinds[0] if kinds else Kind.NUMPY] * (len(outs) - len(kinds))
    return [_returned(values[i], o) if i < len(arrays) and o is arrays[i] else from_numpy(o, k)
            for i, (o, k) in enumerate(zip(outs, kinds))]


def _returned(value, array: np.ndarray):
    """A result that is its input's own memory (a broadcast's root): a tensor is returned as
    it is (tensors are immutable, and Horovod's root returns its input); a numpy array or a
    variable's value is copied, so the result never aliases what the caller may change."""
    if kind_of(value) == Kind.TENSOR and not hasattr(value, "assign"):
        return value
    copy = aligned_empty(array.shape, array.dtype)
    np.copyto(copy, array)
    return from_numpy(copy, kind_of(value))


_MATCHER: list = []


def _name_matched(run, values, shapes, out_dtypes, name) -> list:
    """A TF1 graph's collective: one op, named after the collective, that waits until every
    rank runs the op of its name (:mod:`distrain.name_matching`)."""
    if not _MATCHER:
        _MATCHER.append(NameMatcher(lambda names: runtime.backend().allgather_object(names)))
    matcher, op_name = _MATCHER[0], []
    outputs = graph_collective(
        lambda arrays: matcher.run(op_name[0], lambda: run(arrays)), values, shapes,
        name=_op_name(name), out_dtypes=out_dtypes)
    op_name.append(outputs[0].op.name)
    return outputs


def _op_name(name: str | None) -> str | None:
    """``name`` made a valid TensorFlow op name (TensorFlow makes it unique in the graph)."""
    if not name:
        return None
    cleaned = re.sub(r"[^A-Za-z0-9_.\-/]", "_", name).strip("/") or "collective"
    return cleaned if re.match(r"[A-Za-z0-9.]", cleaned) else f"c{cleaned}"


def wants_gradient(values: Sequence) -> bool:
    """True when a gradient could be asked of a collective of ``values``: TensorFlow
    floating-point values, inside a graph or while a tape records."""
    tf = sys.modules.get("tensorflow")
    if tf is None or not any(kind_of(v) == Kind.TENSOR and v.dtype.is_floating
                             for v in values):
        return False
    if not tf.executing_eagerly():
        return True
    return _tape_recording()


def _tape_recording() -> bool:
    try:
        from tensorflow.python.eager import record
        return bool(record.could_possibly_record())
    except (ImportError, AttributeError):  # another TensorFlow's layout: assume a tape
        return True


@dataclasses.dataclass(frozen=True)
class Call:
    """What a collective was called with, for its gradient (:mod:`distrain.gradients`).

    Attributes:
        kind: ``allreduce``, ``allgather``, ``broadcast``, ``alltoall``, ``reducescatter``.
        label: the collective's name in messages.
        process_set: the set it ran on.
        op: the reduction op, where there is one.
        compression: the wire compression, where there is one.
        prescale, postscale: the scale factors.
        root: a broadcast's root, as the rank within the set's backend.
        rank: this rank within the set.
        size: the set's size.
    """

    kind: str
    label: str
    process_set: object
    op: object = None
    compression: object = None
    prescale: float = 1.0
    postscale: float = 1.0
    root: int = 0
    rank: int = 0
    size: int = 1


_GRADIENTS: dict[str, Callable] = {}


def register_gradient(kind: str) -> Callable:
    """Registers ``fn(call, upstream, inputs, outputs) -> input gradients`` as the gradient
    of collectives of ``kind`` (as TensorFlow's ``RegisterGradient``)."""
    def register(fn: Callable) -> Callable:
        _GRADIENTS[kind] = fn
        return fn
    return register


def differentiable(forward: Callable[[list], list], call: Call, values: Sequence) -> list:
    """``forward(values)`` with the gradient registered for ``call.kind``.

    Args:
        forward: takes the tensors, returns a list of tensors.
        call: what the collective was called with.
        values: the inputs.

    Returns:
        ``forward``'s outputs.
    """
    tf = sys.modules["tensorflow"]
    tensors = [tf.convert_to_tensor(v) for v in values]
    backward = _GRADIENTS[call.kind]

    @tf.custom_gradient
    def op(*inputs):
        outputs = forward(list(inputs))

        def grad(*upstream):
            upstream = [tf.zeros_like(o) if u is None else u
                        for u, o in zip(upstream, outputs)]
            return backward(call, upstream, list(inputs), outputs)
        return outputs, grad

    return list(op(*tensors))


def maybe_differentiable(forward: Callable[[list], list], call: Call, values: Sequence) -> list:
    """:func:`differentiable` where a gradient could be asked (:func:`wants_gradient`), else
    ``forward(values)`` alone."""
    values = list(values)
    if wants_gradient(values):
        return differentiable(forward, call, values)
    return forward(values)
