"""Collectives that move rows between ranks, with Horovod's names: allgather,
grouped_allgather, alltoall, allgather_object.

Gradients, as Horovod defines them: an allgather's is the upstream gradient averaged over
the ranks, this rank's rows of it; an alltoall's is the alltoall of the upstream gradient
sent back along the received splits.

Example:
    >>> hvd.allgather(np.full((hvd.rank() + 1, 2), hvd.rank()))     # doctest: +SKIP
    array([[0, 0], [1, 1], [1, 1]])                                 # on 2 ranks
    >>> received, splits = hvd.alltoall(np.arange(4), splits=[1, 3])  # doctest: +SKIP
"""
from __future__ import annotations

import sys
from typing import Sequence

import numpy as np

from distrain.engine.bucket_queue import drain_process_queue
from distrain.op_bridge import Call, horovod_errors, maybe_differentiable, run_collective
from distrain.process_sets import backend_for, global_process_set

__all__ = ["allgather", "grouped_allgather", "alltoall", "allgather_object"]


def _rows_first(shape) -> list:
    return [None] + (list(shape[1:]) if shape.rank else [])


def allgather(tensor, name=None, ignore_name_scope: bool = False,
              process_set=global_process_set):
    """Concatenates every rank's tensor along the first dimension (which may differ).

    Args:
        tensor: numpy array, tf.Tensor or tf.Variable; a scalar counts as one row.
        name: shown in error and stall messages.
        ignore_name_scope: accepted for Horovod's signature.
        process_set: the ranks that gather together.

    Returns:
        The concatenation in rank order, of the input's kind.

    Raises:
        CollectiveMismatchError: ranks disagree on dtype or on the dimensions after the
            first.
    """
    return grouped_allgather([tensor], name, ignore_name_scope, process_set)[0]


@horovod_errors
def grouped_allgather(tensors: Sequence, name=None, ignore_name_scope: bool = False,
                      process_set=global_process_set) -> list:
    """:func:`allgather` of each tensor.

    Returns:
        A list of concatenations, one per input.
    """
    active = backend_for(process_set, "Allgather")
    label = name or "allgather"
    values = list(tensors)

    def forward(inputs):
        def run(arrays):
            return [active.allgather(a.reshape(1) if a.ndim == 0 else a,
                                     label if len(arrays) == 1 else f"{label}[{i}]")
                    for i, a in enumerate(arrays)]
        if active.native_tensorflow and not all(isinstance(v, np.ndarray) for v in inputs):
            drain_process_queue()
            return [active.allgather_tensor(v, label) for v in inputs]
        shapes = [_rows_first(v.shape) if hasattr(v.shape, "rank") else None
                  for v in inputs]
        return run_collective(run, inputs, shapes, name=label)

    call = Call("allgather", label, process_set, rank=active.world.rank,
                size=active.world.size)
    return maybe_differentiable(forward, call, values)


@horovod_errors
def alltoall(tensor, splits=None, name=None, ignore_name_scope: bool = False,
             process_set=global_process_set):
    """Sends consecutive rows of ``tensor`` to each rank and receives theirs.

    Args:
        tensor: numpy array, tf.Tensor or tf.Variable of at least one dimension.
        splits: how many rows go to each rank (a list, array or tensor of ``size``
            non-negative integers summing to the first dimension); None splits the first
            dimension evenly, which must then divide by the number of ranks.
        name: shown in error and stall messages.
        ignore_name_scope: accepted for Horovod's signature.
        process_set: the ranks that exchange.

    Returns:
        The rows received, rank 0's first, of the input's kind; with ``splits`` given, as
        Horovod, the tuple ``(received, received_splits)``: how many rows came from each
        rank, int32, of the same kind.

    Raises:
        CollectiveArgumentError: the splits do not fit the first dimension (on every rank
            that passed them; the others get a mismatch naming the rank).
        CollectiveMismatchError: ranks disagree on dtype or on the dimensions after the
            first.
    """
    active = backend_for(process_set, "Alltoall")
    label = name or "alltoall"
    if splits is None:
        split_list = None
    elif _symbolic_splits(splits):
        split_list = "graph"
    else:
        split_list = [int(s) for s in np.asarray(
            splits.numpy() if hasattr(splits, "numpy") else splits).reshape(-1)]

    def forward(inputs):
        tf = sys.modules.get("tensorflow")

        def run(arrays):
            given = None if split_list is None else (
                arrays[1].tolist() if split_list == "graph" else split_list)
            received, counts = active.alltoall(arrays[0], given, label)
            return [received, counts]

        args = list(inputs)
        if split_list == "graph":
            args.append(tf.cast(splits, tf.int64))
        shapes = [_rows_first(inputs[0].shape), [active.world.size]] \
            if hasattr(inputs[0].shape, "rank") else None
        dtypes = [inputs[0].dtype, tf.int32] if tf is not None and shapes else None
        outs = run_collective(run, args, shapes, dtypes, name=label)
        return outs[:2]

    received, counts = maybe_differentiable(forward, Call("alltoall", label, process_set),
                                            [tensor])
    return received if splits is None else (received, counts)


def _symbolic_splits(splits) -> bool:
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(splits, tf.Tensor) and not tf.executing_eagerly()


def allgather_object(obj, session=None, name=None, process_set=global_process_set) -> list:
    """Every rank's ``obj``, in rank order, as Horovod's ``allgather_object``.

    For small control data (pickled): a few numbers, a digest, a summary.

    Args:
        obj: any picklable object.
        session, name: accepted for Horovod's signature.
        process_set: the ranks that gather together.

    Returns:
        A list of one object per rank of the set, its first rank's first.

    Example:
        >>> hvd.allgather_object(hvd.rank())    # doctest: +SKIP
        [0, 1]                                   # on 2 ranks
    """
    active = backend_for(process_set, "Allgather")
    drain_process_queue()
    return active.allgather_object(obj)
