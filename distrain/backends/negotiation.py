"""The negotiation before every collective of the mpi backend, and joined ranks.

Before any data moves, every rank posts a small record, ``(signature hash, extra, joined)``,
in one non-blocking ``Iallgather`` that the stall inspector watches. Ranks whose hashes differ
get a :class:`CollectiveMismatchError` naming them and the first thing that differs; ``extra``
carries one number per rank that the collective needs (allgather's first dimension).

A rank that called ``join()`` posts ``joined >= 0`` (the sequence number at which it joined)
instead of a signature, round after round, until every rank has joined. While some ranks
have joined, the lowest live rank sends the joined ones a :class:`Plan` of the collective
(its kind and its tensors' shapes and dtypes), and they take part in it with zeros, as in
Horovod: an Average still divides by every rank. As in Horovod, only allreduces (Adasum and
grouped ones too) go on while ranks are joined; distrain's barrier and allgather_object do
too; other collectives raise on the live ranks.

Example:
    >>> signature_hash("allreduce|sum|None|<f4(2,)") > 0
    True
"""
from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Callable, Sequence

import numpy as np

from distrain import collective_timeline
from distrain.backends.base import CollectiveMismatchError

__all__ = ["Plan", "Negotiation", "allreduce_signature", "signature_hash", "describe_arrays",
           "difference"]


def allreduce_signature(op, wire_dtype, arrays, fusion: str = "") -> str:
    """What must be equal on every rank for a grouped allreduce: op, wire dtype, tensors,
    and ``fusion`` (how the engine cuts them into messages, where it does)."""
    return f"{op.value}|{wire_dtype}|{fusion}|" + ";".join(
        f"{a.dtype.str}{a.shape}" for a in arrays)


def signature_hash(signature: str) -> int:
    """A 62-bit hash of ``signature``, what ranks exchange instead of the string."""
    return int.from_bytes(hashlib.blake2b(signature.encode(), digest_size=8).digest(),
                          "little") >> 2


def describe_arrays(arrays: Sequence[np.ndarray]) -> list[str]:
    """``float32[2, 3]``-style names of arrays, for mismatch messages."""
    return [f"{a.dtype}{list(a.shape)}" for a in arrays]


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a joined rank needs to take part in a live rank's collective.

    Attributes:
        kind: ``allreduce``, ``barrier``, ``allgather_object`` or ``skip`` (a collective
            the live ranks refuse).
        specs: ``(shape, dtype string)`` of each tensor.
        op: the reduction op's value, or None.
        wire_dtype: the wire dtype, or None.
    """

    kind: str
    specs: tuple = ()
    op: str | None = None
    wire_dtype: str | None = None


class Negotiation:
    """Runs the negotiation on one communicator.

    Args:
        comm: the mpi4py communicator (None: a world that sends nothing, every record this
            rank's own).
        MPI: the ``mpi4py.MPI`` module (None with ``comm`` None).
        stall: the stall inspector that watches each exchange.
        size: the number of ranks.
        check_signatures: False skips the hash exchange where no extra number is needed.
    """

    def __init__(self, comm, MPI, stall, size: int, check_signatures: bool = True):
        self.comm, self.MPI, self.stall = comm, MPI, stall
        self.rank = comm.Get_rank() if comm is not None else 0
        self.check_signatures = check_signatures
        self.seq = 0
        self._record = np.full(3, -1, np.int64)
        self.records = np.full((size, 3), -1, np.int64)

    def _exchange(self, label: str) -> None:
        if self.comm is None:
            self.records[:] = self._record
            return
        request = self.comm.Iallgather([self._record, self.MPI.INT64_T],
                                       [self.records, self.MPI.INT64_T])
        self.stall.wait(request, self.seq, label)

    def agree(self, kind: str, signature: str, label: str, extra: int = 0,
              describe: Callable | None = None, plan: Callable[[], Plan] | None = None,
              needs_exchange: bool = False) -> np.ndarray:
        """Every rank's records for this collective; raises when signatures differ.

        Args:
            kind: the collective's name.
            signature: what must be equal on every rank.
            label: what to call the collective in messages.
            extra: a per-rank number to share.
            describe: returns ``(header, items)``, a readable form of this rank's signature.
            plan: returns the :class:`Plan` joined ranks follow (None: they cannot).
            needs_exchange: exchange even with signature checks off (``extra`` is needed).

        Returns:
            The ``(size, 3)`` records: hash, extra, joined (-1 on live ranks).

        Raises:
            CollectiveMismatchError: live ranks' signatures differ, or joined ranks cannot
                take part in this collective.
        """
        self.seq += 1
        if not self.check_signatures and not needs_exchange and self.comm is not None \
                and not self._anyone_joined:
            return self.records
        self._record[:] = (signature_hash(f"{kind}|{signature}"), extra, -1)
        if collective_timeline.active():
            began = time.perf_counter()
            self._exchange(label)
            collective_timeline.record("NEGOTIATE", label, began, time.perf_counter())
        else:
            self._exchange(label)
        joined = self.records[:, 2] >= 0
        self._anyone_joined = bool(joined.any())
        hashes = self.records[~joined, 0]
        if (hashes != hashes[0]).any():
            if self._anyone_joined:  # joined ranks skip it; they cannot describe anything
                self._send_plan(joined, None)
                groups: dict[int, list[str]] = {}
                for rank in np.flatnonzero(~joined):
                    groups.setdefault(int(self.records[rank, 0]), []).append(str(rank))
                raise CollectiveMismatchError(
                    f"{kind} {label!r}: the live ranks called different collectives or "
                    f"tensors (ranks " + "; ranks ".join(map(", ".join, groups.values())) +
                    " agree among themselves)")
            header, items = describe() if describe else ("", [])
            everyone = self.comm.allgather((f"{kind} {header}".strip(), items))
            raise CollectiveMismatchError(f"{kind} {label!r}: " + difference(everyone))
        if self._anyone_joined:
            sent = self._send_plan(joined, plan() if plan else None)
            if sent is None:
                raise CollectiveMismatchError(
                    f"{kind.capitalize()} is not supported with Join at this time "
                    f"({label!r}; joined ranks: "
                    f"{', '.join(map(str, np.flatnonzero(joined)))})")
        return self.records

    _anyone_joined = False

    def _send_plan(self, joined: np.ndarray, plan: Plan | None):
        leader = int(np.flatnonzero(~joined)[0])
        return self.comm.bcast(plan, root=leader)

    def join_round(self, joined_at: int) -> tuple[Plan | None, np.ndarray]:
        """One round of a joined rank: its record posted, the live leader's plan received.

        Args:
            joined_at: the sequence number at which this rank joined.

        Returns:
            ``(plan, records)``: the plan (None when every rank has now joined, or when the
            live ranks' collective is one joined ranks skip) and the round's records.
        """
        self.seq += 1
        self._record[:] = (0, 0, joined_at)
        self._exchange("join")
        joined = self.records[:, 2] >= 0
        if joined.all():
            self._anyone_joined = False
            return None, self.records
        return self._send_plan(joined, None) or Plan("skip"), self.records


def difference(everyone: list[tuple[str, list[str]]]) -> str:
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
