"""The stall inspector: no rank waits silently, or forever, for ranks that never come.

Every collective starts with a small non-blocking negotiation that all ranks must join. A rank
polls it instead of blocking, and so knows how long it has waited:

- after half the warning time a waiting rank tells rank 0 that it has arrived;
- after the warning time rank 0, if it waits too, prints which ranks have not joined which
  collective, and repeats that every warning period;
- after the shutdown time (when set) the waiting rank prints why and aborts the whole job.

The data transfer that follows a negotiation blocks in MPI (non-blocking collectives are
slower for large messages). A rank or link lost during it would leave the others blocked,
so, when a shutdown time is set, a watchdog thread aborts the job once a transfer has
lasted that long (:meth:`StallInspector.transfer`).

Settings: ``DISTRAIN_STALL_WARNING_SECONDS`` (default 60; 0 turns warnings off) and
``DISTRAIN_STALL_SHUTDOWN_SECONDS`` (default 0: never abort).
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time

import numpy as np

from distrain.engine.bucket_queue import on_queue_thread
from distrain.protocol import ExitCode

__all__ = ["StallInspector", "STALL_TAG"]

STALL_TAG = 7331
_UNWATCHED = contextlib.nullcontext()


class StallInspector:
    """Waits on a negotiation request while watching for stalls.

    Args:
        comm: the mpi4py communicator the negotiation runs on.
        warning_seconds: when rank 0 names the missing ranks; 0 or less disables warnings.
        shutdown_seconds: when a waiting rank aborts the job; 0 or less never.
        abort: called with an exit code to end the job.
        clock: a monotonic clock (tests pass a fake).
    """

    def __init__(self, comm, warning_seconds: float, shutdown_seconds: float, abort,
                 clock=time.monotonic):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.warning_seconds = warning_seconds
        self.shutdown_seconds = shutdown_seconds
        self.abort = abort
        self.clock = clock
        self._arrived: dict[int, set[int]] = {}
        self._note = np.zeros(2, np.int64)
        self._pending_sends: list = []
        self._transfer: tuple | None = None   # (start, seq, label) while data moves
        self._watchdog: threading.Thread | None = None

    def transfer(self, seq: int, label: str):
        """A context manager around the data transfer of collective ``seq``.

        With a shutdown time set, a watchdog thread (started on first use) checks the
        running transfer a few times per shutdown period; one that has lasted the shutdown
        time prints why and aborts the job, as a stalled negotiation does.

        Args:
            seq: the collective's sequence number.
            label: what the collective is, for messages.

        Returns:
            A context manager; one that does nothing when no shutdown time is set.
        """
        if self.shutdown_seconds <= 0:
            return _UNWATCHED
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, name="distrain-stall-watchdog",
                                              daemon=True)
            self._watchdog.start()
        return _Transfer(self, seq, label)

    def _watch(self) -> None:
        period = min(1.0, self.shutdown_seconds / 4)
        while True:
            time.sleep(period)
            running = self._transfer
            if running is None:
                continue
            start, seq, label = running
            waited = self.clock() - start
            if waited >= self.shutdown_seconds and self._transfer is running:
                print(f"[distrain rank {self.rank}] collective #{seq} ({label}) has moved its "
                      f"data for {waited:.0f} s without finishing, past "
                      f"DISTRAIN_STALL_SHUTDOWN_SECONDS={self.shutdown_seconds:g}: a rank, its "
                      f"host or the network between them is gone; aborting the job",
                      file=sys.stderr, flush=True)
                self.abort(int(ExitCode.TIMEOUT))
                return

    def wait(self, request, seq: int, label: str) -> None:
        """Returns once ``request`` completes; warns and aborts on stalls.

        Args:
            request: an mpi4py request for the negotiation of collective ``seq``.
            seq: the collective's sequence number, the same on every rank.
            label: what the collective is, for messages.
        """
        from mpi4py import MPI
        start = self.clock()
        # on the overlap queue's thread computation needs the core: short sleeps, no spin
        background = on_queue_thread()
        spin_until = time.perf_counter() + (0 if background else 0.002)
        pause, longest = 0.00005, (0.0002 if background else 0.002)
        noted = False
        next_warning = self.warning_seconds
        while not request.Test():
            # Busy-poll (yielding the core) for 2 ms, which covers the usual wait for the
            # other ranks without sleep-granularity delay; then back off up to 2 ms (0.2).
            if time.perf_counter() < spin_until:
                os.sched_yield()
                continue
            time.sleep(pause)
            pause = min(pause * 2, longest)
            waited = self.clock() - start
            if self.rank == 0:
                self._drain(MPI, seq)
            elif not noted and self.warning_seconds > 0 and waited >= self.warning_seconds / 2:
                self._note[:] = (self.rank, seq)
                self._pending_sends.append(
                    self.comm.Isend([self._note.copy(), MPI.INT64_T], 0, STALL_TAG))
                noted = True
            if self.rank == 0 and 0 < next_warning <= waited:
                self._warn(seq, label, waited)
                next_warning += self.warning_seconds
            if 0 < self.shutdown_seconds <= waited:
                if self.rank == 0:
                    self._warn(seq, label, waited)
                print(f"[distrain rank {self.rank}] collective #{seq} ({label}) stalled for "
                      f"{waited:.0f} s, past DISTRAIN_STALL_SHUTDOWN_SECONDS="
                      f"{self.shutdown_seconds:g}; aborting the job", file=sys.stderr,
                      flush=True)
                self.abort(int(ExitCode.TIMEOUT))
        self._arrived.pop(seq, None)
        self._pending_sends = [r for r in self._pending_sends if not r.Test()]

    def _drain(self, MPI, seq: int) -> None:
        status = MPI.Status()
        note = np.zeros(2, np.int64)
        while self.comm.Iprobe(MPI.ANY_SOURCE, STALL_TAG, status):
            self.comm.Recv([note, MPI.INT64_T], status.Get_source(), STALL_TAG)
            if int(note[1]) >= seq:
                self._arrived.setdefault(int(note[1]), set()).add(int(note[0]))

    def missing(self, seq: int) -> list[int]:
        """Ranks that have not said they arrived at collective ``seq`` (rank 0 excluded)."""
        arrived = self._arrived.get(seq, set())
        return [r for r in range(1, self.size) if r not in arrived]

    def _warn(self, seq: int, label: str, waited: float) -> None:
        missing = self.missing(seq)
        names = ", ".join(map(str, missing)) if missing else "none known"
        print(f"[distrain] stall: collective #{seq} ({label}) has waited {waited:.0f} s; "
              f"ranks not joined: {names}. A rank is slower, stuck, or calls collectives in a "
              f"different order.", file=sys.stderr, flush=True)


class _Transfer:
    """Marks a data transfer as running for the watchdog (see
    :meth:`StallInspector.transfer`); a plain class, as it runs on every collective."""

    __slots__ = ("inspector", "seq", "label")

    def __init__(self, inspector: StallInspector, seq: int, label: str):
        self.inspector, self.seq, self.label = inspector, seq, label

    def __enter__(self) -> None:
        self.inspector._transfer = (self.inspector.clock(), self.seq, self.label)

    def __exit__(self, *exc) -> None:
        self.inspector._transfer = None
