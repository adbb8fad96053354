"""Asking a running elastic job to grow: SIGUSR1 to mpirun, once, when every rank listens.

The elastic driver (:mod:`distrain.run.relaunch`) says when it wants more ranks; the
supervisor asks :class:`GrowRequest` on every turn of its loop. mpirun forwards SIGUSR1 to
every rank, and the ranks stop at their next checkpoint (:mod:`distrain.elastic.requests`).
A program that never said it takes resize requests is never sent the signal (it would end
it); that is said once.
"""
from __future__ import annotations

import signal

__all__ = ["GrowRequest", "UNABLE_AFTER"]

UNABLE_AFTER = 60.0     # seconds after which ranks that took no resize request never will


class GrowRequest:
    """Passes the driver's wish to grow on to the ranks.

    Args:
        np: the job's number of ranks.
        console: where the lines go.
        grow: the driver's ``grow()``: a line naming the hosts added, or None.
    """

    def __init__(self, np: int, console, grow):
        self.np, self.console, self.grow = np, console, grow
        self.asked = False
        self._told_unable = False

    def check(self, running_for: float, proc, *, every_rank_listens: bool,
              every_rank_started: bool) -> None:
        """Sends SIGUSR1 to ``proc`` (mpirun) if the driver wants more ranks and every rank
        takes requests; says once if they do not.

        Args:
            running_for: seconds since mpirun started.
            proc: mpirun.
            every_rank_listens: every rank sent the ``elastic`` record.
            every_rank_started: every rank reported its start.
        """
        if self.asked or proc.poll() is not None:
            return
        wish = self.grow()
        if not wish:
            return
        if every_rank_listens:
            self.console.plain("stderr", f"distrain-run: {wish}; the job grows at its next "
                                         f"checkpoint")
            proc.send_signal(signal.SIGUSR1)
            self.asked = True
        elif not self._told_unable and every_rank_started and running_for > UNABLE_AFTER:
            self.console.plain("stderr", f"distrain-run: {wish}, but the program takes no "
                                         f"resize requests (docs/elastic.md): it carries on at "
                                         f"{self.np} ranks")
            self._told_unable = True
