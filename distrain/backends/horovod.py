"""The ``horovod`` backend: hands every collective to ``horovod.tensorflow``.

Used when horovodrun started the job and Horovod imports (a TensorFlow 2.15 environment), so
distrain programs run unchanged on an existing Horovod installation. Horovod's ops are
TensorFlow ops, so TensorFlow values go to them directly, eagerly or inside ``tf.function``;
numpy arrays are converted. bfloat16, which Horovod lacks, travels as float32.

A process set's backend is this backend's copy whose every op is Horovod's with Horovod's
``process_set=`` (:mod:`distrain.backends.horovod_sets` says how the sets are made).
"""
from __future__ import annotations

import contextlib
import copy
import os
import sys

import numpy as np

from distrain.backends import horovod_sets
from distrain.backends.base import Backend, CollectiveMismatchError, check_root
from distrain.environment import World, WorldError
from distrain.ops import ReduceOp

__all__ = ["HorovodBackend", "horovod_importable"]


def horovod_importable() -> bool:
    """True when ``horovod.tensorflow`` imports in this environment."""
    try:
        import horovod.tensorflow  # noqa: F401
    except Exception:  # ImportError, or a build against another TensorFlow
        return False
    return True


class HorovodBackend(Backend):
    """Collectives through Horovod's own TensorFlow ops.

    Args:
        world: what the launcher reported.
        process_sets: ``init``'s ``process_sets``: its sets become Horovod's static sets,
            ``"dynamic"`` starts Horovod's dynamic mode.

    Attributes:
        process_set: the Horovod process set every op is given (the global one, or a set's
            in a :meth:`subset` backend).

    Raises:
        WorldError: Horovod does not import.
    """

    name = "horovod"
    native_tensorflow = True

    def __init__(self, world: World, process_sets=None):
        try:
            import horovod.tensorflow as hvd
            import tensorflow as tf
        except Exception as exc:
            raise WorldError(f"the horovod backend needs horovod.tensorflow, which does not "
                             f"import here ({exc})") from exc
        self.hvd, self.tf = hvd, tf
        self.sets = horovod_sets.HorovodSets(hvd, process_sets, world.size)
        hvd.init(process_sets=self.sets.init_argument())
        self.process_set = hvd.global_process_set
        super().__init__(World(hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size(),
                               hvd.cross_rank(), hvd.cross_size(), world.launcher, world.gloo))
        self._ops = {ReduceOp.AVERAGE: hvd.Average, ReduceOp.SUM: hvd.Sum,
                     ReduceOp.MIN: hvd.Min, ReduceOp.MAX: hvd.Max,
                     ReduceOp.PRODUCT: hvd.Product, ReduceOp.ADASUM: hvd.Adasum}

    def subset(self, ranks):
        """The backend of Horovod's set of ``ranks``; every rank must call it.

        Returns:
            The backend on members, None elsewhere.

        Raises:
            ValueError: Horovod is not in its dynamic mode and ``ranks`` was not one of
                ``init``'s sets.
        """
        found = self.sets.claim(ranks)
        if self.world.rank not in found.ranks:
            return None
        view = copy.copy(self)
        view.process_set, view.sets = found, None
        Backend.__init__(view, World(found.ranks.index(self.world.rank), len(found.ranks),
                                     launcher=self.world.launcher, gloo=self.world.gloo))
        return view

    def release_subset(self, ranks):
        """Removes Horovod's set of ``ranks``; every rank must call it."""
        self.sets.release(ranks)

    def _root(self, root: int) -> int:
        """The global rank of the set's rank ``root``: Horovod's roots are global."""
        return self.process_set.ranks[root]

    @contextlib.contextmanager
    def _mismatch_errors(self, label: str):
        """Turns Horovod's coordinator errors about mismatched calls into distrain's."""
        try:
            yield
        except self.tf.errors.OpError as exc:
            if "ismatch" in exc.message:
                raise CollectiveMismatchError(f"{label!r}: {exc.message.strip()}") from None
            raise

    def _wire(self, tensor, wire_dtype=None):
        tf = self.tf
        if wire_dtype and tensor.dtype.is_floating and \
                tensor.dtype.size > tf.as_dtype(wire_dtype).size:
            tensor = tf.cast(tensor, wire_dtype)
        return tf.cast(tensor, tf.float32) if tensor.dtype == tf.bfloat16 else tensor

    def allreduce_tensors(self, tensors, op, wire_dtype, label):
        """TensorFlow-level grouped allreduce (eager or graph); returns tensors."""
        tf = self.tf
        tensors = [tf.convert_to_tensor(t) for t in tensors]
        if not tensors:
            return []
        wired = [self._wire(t, wire_dtype) for t in tensors]
        groups: dict = {}  # Horovod groups one dtype at a time; first-seen order on every rank
        for index, w in enumerate(wired):
            groups.setdefault(w.dtype, []).append(index)
        reduced: list = [None] * len(tensors)
        with self._mismatch_errors(label):
            for indices in groups.values():
                if op is ReduceOp.ADASUM:  # Horovod 0.28.1's grouped Adasum fails (a local
                    outs = [self.hvd.allreduce(wired[i], op=self.hvd.Adasum,  # unbound)
                                               process_set=self.process_set)
                            for i in indices]
                else:
                    outs = self.hvd.grouped_allreduce([wired[i] for i in indices],
                                                      op=self._ops[op],
                                                      process_set=self.process_set)
                for i, out in zip(indices, outs):
                    reduced[i] = tf.cast(out, tensors[i].dtype)
        return reduced

    def broadcast_tensors(self, tensors, root, label):
        """TensorFlow-level broadcast of each tensor from ``root``."""
        check_root(root, self.world.size)
        tf = self.tf
        out = []
        with self._mismatch_errors(label):
            for t in tensors:
                t = tf.convert_to_tensor(t)
                out.append(tf.cast(self.hvd.broadcast(self._wire(t), root_rank=self._root(root),
                                                      process_set=self.process_set), t.dtype))
        return out

    def allgather_tensor(self, tensor, label):
        """TensorFlow-level allgather along the first dimension."""
        tf = self.tf
        tensor = tf.convert_to_tensor(tensor)
        if tensor.shape.rank == 0:
            tensor = tf.reshape(tensor, [1])
        with self._mismatch_errors(label):
            return tf.cast(self.hvd.allgather(self._wire(tensor), process_set=self.process_set),
                           tensor.dtype)

    def allreduce(self, arrays, op, wire_dtype, label):
        reduced = self.allreduce_tensors(arrays, op, wire_dtype, label)
        return [np.asarray(t.numpy()) for t in reduced]

    def broadcast(self, arrays, root, label):
        return [np.asarray(t.numpy()) for t in self.broadcast_tensors(arrays, root, label)]

    def allgather(self, array, label):
        return np.asarray(self.allgather_tensor(array, label).numpy())

    def alltoall(self, array, splits, label):
        tf = self.tf
        with self._mismatch_errors(label):
            if splits is None:
                out = self.hvd.alltoall(tf.convert_to_tensor(array),
                                        process_set=self.process_set)
                counts = np.full(self.world.size, array.shape[0] // self.world.size, np.int32)
            else:
                out, counts = self.hvd.alltoall(tf.convert_to_tensor(array),
                                                splits=tf.constant(list(splits), tf.int32),
                                                process_set=self.process_set)
                counts = np.asarray(counts.numpy(), np.int32)
        return np.asarray(out.numpy()), counts

    def reducescatter(self, arrays, op, wire_dtype, label):
        tf = self.tf
        with self._mismatch_errors(label):
            return [np.asarray(tf.cast(self.hvd.reducescatter(
                self._wire(tf.convert_to_tensor(a), wire_dtype), op=self._ops[op],
                process_set=self.process_set), a.dtype).numpy()) for a in arrays]

    def join(self):
        return int(self.hvd.join())

    def mpi_threads_supported(self):
        return bool(self.hvd.mpi_threads_supported())

    def message_allreduce(self, buffer):
        """Horovod's whole allreduce call (its negotiation included) is the message."""
        buffer[...] = self.allreduce([buffer], ReduceOp.SUM, None, "message_allreduce")[0]

    def allgather_object(self, obj):
        return list(self.hvd.allgather_object(obj, process_set=self.process_set))

    def barrier(self):
        barrier = getattr(self.hvd, "barrier", None)
        if barrier is not None:
            barrier(process_set=self.process_set)
        else:
            self.hvd.allreduce(self.tf.zeros([1]), op=self.hvd.Sum,
                               process_set=self.process_set)

    def abort(self, code):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    def shutdown(self):
        """Shuts Horovod down; a set's backend leaves it running (the set is removed by
        :meth:`release_subset`)."""
        if self.process_set is self.hvd.global_process_set:
            self.hvd.shutdown()
