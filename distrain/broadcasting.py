"""Root's values everywhere, with Horovod's names: broadcast, broadcast_, broadcast_variables,
broadcast_global_variables, broadcast_object, broadcast_object_fn.

Roots are global ranks, also within a process set, as in Horovod. The gradient of a
broadcast, as Horovod defines it: the upstream gradient averaged over the ranks on the root,
zeros elsewhere.

Example:
    >>> hvd.broadcast(np.full(2, hvd.rank()), root_rank=1)     # doctest: +SKIP
    array([1, 1])
    >>> hvd.broadcast_object({"epoch": 3} if hvd.rank() == 0 else None)   # doctest: +SKIP
    {'epoch': 3}
"""
from __future__ import annotations

import pickle
import sys
from typing import Sequence

import numpy as np

from distrain.backends import check_root
from distrain.backends.base import CollectiveArgumentError
from distrain.op_bridge import Call, horovod_errors, maybe_differentiable, run_collective
from distrain.process_sets import backend_for, global_process_set

__all__ = ["broadcast", "broadcast_", "broadcast_variables", "broadcast_global_variables",
           "broadcast_object", "broadcast_object_fn"]


def _set_root(active, process_set, root_rank) -> int:
    """The root's rank within the set's backend, from its global rank."""
    ranks = getattr(process_set, "ranks", None)
    if process_set is None or process_set is global_process_set or not ranks:
        return check_root(root_rank, active.world.size)
    if root_rank not in ranks:
        raise CollectiveArgumentError(f"broadcast received invalid root rank {root_rank} for "
                                      f"provided process set")
    return ranks.index(root_rank)


def broadcast(tensor, root_rank: int = 0, name=None, ignore_name_scope: bool = False,
              process_set=global_process_set):
    """Returns root's value of ``tensor`` on every rank.

    Args:
        tensor: numpy array, tf.Tensor or tf.Variable; the same shape and dtype everywhere.
        root_rank: the global rank whose value is sent.
        name: shown in error and stall messages.
        ignore_name_scope: accepted for Horovod's signature.
        process_set: the ranks that take part.

    Returns:
        Root's value, of the input's kind.

    Raises:
        ValueError: ``root_rank`` is out of range or not in the set; ranks disagree on
            shape, dtype or root.
    """
    return _broadcast_list([tensor], root_rank, name or "broadcast", process_set)[0]


@horovod_errors
def _broadcast_list(tensors: Sequence, root_rank: int, label: str, process_set) -> list:
    active = backend_for(process_set, "Broadcast")
    root = _set_root(active, process_set, root_rank)

    def forward(inputs):
        if active.native_tensorflow and not all(isinstance(v, np.ndarray) for v in inputs):
            return active.broadcast_tensors(inputs, root, label)
        return run_collective(lambda arrays: active.broadcast(arrays, root, label), inputs,
                              name=label)

    call = Call("broadcast", label, process_set, root=root, rank=active.world.rank,
                size=active.world.size)
    return maybe_differentiable(forward, call, tensors)


def broadcast_(variables, root_rank: int, name=None, process_set=global_process_set) -> list:
    """Assigns root's values to ``variables`` in place, in one fused broadcast.

    Args:
        variables: tf.Variable objects (or Keras variables), the same list on every rank.
        root_rank: the global rank whose values are sent.
        name: shown in error and stall messages.
        process_set: the ranks that take part.

    Returns:
        The variables' new values, as Horovod's ``broadcast_`` returns them.
    """
    variables = list(variables)
    if not variables:
        return []
    values = _broadcast_list([_variable_value(v) for v in variables], root_rank,
                             name or f"broadcast_ of {len(variables)} variable(s)",
                             process_set)
    for variable, value in zip(variables, values):
        variable.assign(value)
    return [_variable_value(v) for v in variables]


def broadcast_variables(variables: Sequence, root_rank: int = 0,
                        process_set=global_process_set, inplace: bool = False) -> None:
    """Assigns root's values to every variable, in one fused broadcast.

    Args:
        variables: tf.Variable objects (or Keras variables), the same list on every rank.
        root_rank: the global rank whose values are sent.
        process_set: the ranks that take part.
        inplace: accepted for Horovod's signature; distrain always assigns in place.

    Raises:
        ValueError: ``root_rank`` is out of range; ranks disagree on the variables.
    """
    broadcast_(variables, root_rank, f"broadcast_variables of {len(list(variables))} "
               f"variable(s)", process_set)


def _variable_value(variable):
    value = getattr(variable, "value", None)
    if callable(value):  # tf.Variable.value()
        return value()
    return variable if value is None else value  # Keras 3 Variable.value is a property


def broadcast_global_variables(root_rank: int = 0):
    """Broadcasts ``tf.compat.v1.global_variables()`` from ``root_rank`` (graph programs).

    Raises:
        RuntimeError: in eager execution, as in Horovod: broadcast the model's and
            optimizer's variables with :func:`broadcast_variables` instead.
    """
    tf = sys.modules.get("tensorflow")
    if tf is None or tf.executing_eagerly():
        raise RuntimeError("hvd.broadcast_global_variables() does not support eager "
                           "execution. Please use `hvd.broadcast_variables(<model/optimizer "
                           "variables>)` instead.")
    variables = tf.compat.v1.global_variables()
    values = _broadcast_list([v.read_value() for v in variables], root_rank,
                             "broadcast_global_variables", global_process_set)
    return tf.group(*[v.assign(value) for v, value in zip(variables, values)])


def broadcast_object(obj, root_rank: int = 0, session=None, name=None,
                     process_set=global_process_set):
    """Root's ``obj`` (pickled) on every rank; the root gets its own object back.

    Args:
        obj: any picklable object (ignored on other ranks).
        root_rank: the global rank whose object is sent.
        session, name: accepted for Horovod's signature.
        process_set: the ranks that take part.

    Returns:
        Root's object.
    """
    active = backend_for(process_set, "Broadcast")
    root = _set_root(active, process_set, root_rank)
    label = name or f"broadcast_object ({type(obj).__name__})"
    is_root = active.world.rank == root
    payload = np.frombuffer(pickle.dumps(obj), np.uint8) if is_root else np.zeros(0, np.uint8)
    length = _broadcast_list([np.array([payload.size], np.int64)], root_rank, f"{label}.sz",
                             process_set)[0]
    if not is_root:
        payload = np.zeros(int(length[0]), np.uint8)
    received = _broadcast_list([payload], root_rank, f"{label}.t", process_set)[0]
    return obj if is_root else pickle.loads(received.tobytes())


def broadcast_object_fn(root_rank: int = 0, session=None, name=None,
                        process_set=global_process_set):
    """A function that broadcasts its argument from ``root_rank``, as Horovod's.

    Returns:
        ``fn(obj) -> root's obj``.
    """
    def fn(obj):
        return broadcast_object(obj, root_rank, session, name or "broadcast_object_fn",
                                process_set)
    return fn
