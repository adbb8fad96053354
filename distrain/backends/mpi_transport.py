"""How the mpi backend moves bytes: chunk-level calls on one communicator, with the MPI
types and ops for each dtype (float16 and bfloat16, which MPI has no type for, travel as
16-bit words reduced by user-defined ops), and a transport that sends nothing.
"""
from __future__ import annotations

import time

import numpy as np

from distrain.engine.bucket_queue import on_queue_thread
from distrain.engine.buffers import bfloat16
from distrain.engine.halfprec import add_into
from distrain.ops import ReduceOp

__all__ = ["MPITransport", "SilentTransport"]


class MPITransport:
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
                     ReduceOp.MAX: MPI.MAX, ReduceOp.PRODUCT: MPI.PROD}
        self._user_ops: dict = {}
        half_types = [np.dtype("float16")] + ([np.dtype(bfloat16)] if bfloat16 else [])
        for dtype in half_types:
            for op, ufunc in ((ReduceOp.SUM, np.add), (ReduceOp.AVERAGE, np.add),
                              (ReduceOp.MIN, np.minimum), (ReduceOp.MAX, np.maximum),
                              (ReduceOp.PRODUCT, np.multiply)):
                self._user_ops[dtype, op] = MPI.Op.Create(_ufunc_op(ufunc, dtype),
                                                          commute=True)

    def _typed(self, dtype, op):
        """The MPI datatype, the MPI op, and the numpy view dtype for ``dtype`` and ``op``."""
        user_op = self._user_ops.get((dtype, op))
        if user_op is not None:
            return self.MPI.UINT16_T, user_op, np.uint16
        return self._types[dtype], self._ops[op], dtype

    def allreduce(self, send, recv, op):
        mpi_type, mpi_op, view = self._typed(recv.dtype, op)
        recv = recv.view(view)
        send = None if send is None else send.view(view)
        MPI = self.MPI
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

    def alltoallv(self, send, recv, send_counts, recv_counts):
        self.comm.Alltoallv([send, (list(send_counts), _displacements(send_counts)),
                             self.MPI.BYTE],
                            [recv, (list(recv_counts), _displacements(recv_counts)),
                             self.MPI.BYTE])

    def reduce_scatter(self, send, recv, counts, op):
        mpi_type, mpi_op, view = self._typed(recv.dtype, op)
        self.comm.Reduce_scatter([send.view(view), mpi_type], [recv.view(view), mpi_type],
                                 list(map(int, counts)), mpi_op)

    def sendrecv(self, send, recv, peer):
        self.comm.Sendrecv([send, self.MPI.BYTE], peer, 0, [recv, self.MPI.BYTE], peer, 0)

    def free(self):
        for op in self._user_ops.values():
            op.Free()
        self._user_ops.clear()


def _displacements(counts) -> list[int]:
    return [0] + np.cumsum(counts, dtype=np.int64)[:-1].tolist()


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


class SilentTransport:
    """A transport of ``size`` ranks that sends nothing and leaves every buffer as it is."""

    def __init__(self, size: int):
        self.size = size

    def allreduce(self, send, recv, op):
        pass

    def bcast(self, buf, root):
        pass

    def allgatherv(self, send, recv, counts):
        pass

    def alltoallv(self, send, recv, send_counts, recv_counts):
        pass

    def reduce_scatter(self, send, recv, counts, op):
        pass

    def sendrecv(self, send, recv, peer):
        pass
