"""Runs one mpirun job and watches it until every rank is gone.

mpirun starts in a session of its own, so every process of the job (mpirun, its daemons, the
rank wrappers, the programs) can be found, and killed, by session id. The supervisor reads
mpirun's rank-tagged output, shows it through :class:`~distrain.run.output.Console`, and acts
on the rank wrappers' records (:mod:`distrain.run.rank`):

- a rank exits non-zero: mpirun gets :data:`STOP_GRACE` seconds to stop the others itself,
  then SIGTERM, then :data:`KILL_GRACE` seconds later SIGKILL for the whole session: every
  rank is gone within 10 s. The outcome names the rank, its host, its exit code and the last
  lines of its stderr;
- SIGINT or SIGTERM to distrain-run: the same without the first wait (a second signal kills
  at once); the outcome's code is 130 or 143;
- a rank has not started within the start timeout, or a started rank falls silent (no
  output, no heartbeat) for the heartbeat timeout: the job is stopped, code 124, naming the
  ranks and hosts;
- a started rank never reports how it ended (its host or container went away with it, and
  mpirun, which may exit 0 then, lost its daemon): code 1, naming the rank and its host;
- an elastic job (:mod:`distrain.run.relaunch`) wants more ranks: once every rank has said it
  takes resize requests (the ``elastic`` record of :mod:`distrain.elastic`), mpirun gets
  SIGUSR1, which it forwards to every rank; the ranks stop at their next checkpoint.

Whatever the outcome, processes of the session still alive after mpirun ends get SIGTERM,
then SIGKILL: no orphans.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import selectors
import signal
import subprocess
import time

from distrain.errors import UsageError
from distrain.protocol import ExitCode, Record, parse_record
from distrain.run.grow import GrowRequest
from distrain.run.leftovers import sweep
from distrain.run.outcome import Ending, Outcome, Reason, describe
from distrain.run.output import Console, RankFiles
from distrain.run.rank import die_with_parent, exit_watch
from distrain.run.vendors import Vendor

__all__ = ["Job", "Outcome", "supervise", "session_pids", "kill_session"]

STOP_GRACE = 2.0
KILL_GRACE = 4.0
STDERR_LINES = 8
MPIRUN_LINES_KEPT = 100


@dataclasses.dataclass(frozen=True)
class Job:
    """One mpirun run.

    Attributes:
        argv: the mpirun command.
        env: mpirun's whole environment.
        vendor: the launcher's table (for its output tags).
        np: the number of ranks.
        hosts: the host each rank is planned on (for messages about ranks never heard of).
        start_timeout: seconds for every rank to start.
        heartbeat_timeout: seconds a started rank may stay silent; 0 never times out.
    """

    argv: tuple[str, ...]
    env: dict
    vendor: Vendor
    np: int
    hosts: tuple[str, ...]
    start_timeout: float
    heartbeat_timeout: float


@dataclasses.dataclass
class _Rank:
    host: str | None = None
    last_seen: float = 0.0
    exit_code: int | None = None
    signal: int = 0
    ended: float = 0.0
    elastic: bool = False
    aborted: bool = False      # the program said it ends the job (Record.ABORT)
    stderr: collections.deque = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=STDERR_LINES))


def session_pids(sid: int) -> list[int]:
    """The live processes of session ``sid`` (from ``/proc``; empty where it is missing).

    Zombies are left out: they hold nothing and cannot be killed.
    """
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stream:
                fields = stream.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] not in (b"Z", b"X"):
            found.append(int(entry))
    return found


def kill_session(sid: int, sig: int = signal.SIGKILL) -> list[int]:
    """Sends ``sig`` to every process of session ``sid``; returns their pids."""
    pids = session_pids(sid)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    return pids


def _reap_session(sid: int, grace: float = 2.0) -> None:
    if not kill_session(sid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    while session_pids(sid) and time.monotonic() < deadline:
        time.sleep(0.05)
    kill_session(sid, signal.SIGKILL)


class _Output:
    """Reads mpirun's output: cuts each stream into lines, tells a rank's lines (by the
    vendor's tag) from mpirun's own, shows them, and keeps what the messages need: each
    rank's host, last sign of life, exit and stderr tail, and mpirun's first and last lines.

    Args:
        job: the job whose output it reads.
        console: where lines are shown.
        files: per-rank log files, or None.
        on_failure: called with a rank whose program failed on its own.
    """

    def __init__(self, job: Job, console: Console, files: RankFiles | None, on_failure):
        self.console, self.files, self.on_failure = console, files, on_failure
        self.tag = job.vendor.tag_regex()
        self.ranks: dict[int, _Rank] = {}
        self.started: set[int] = set()
        self.mpirun_tail: collections.deque = collections.deque(maxlen=STDERR_LINES)
        self.mpirun_first: list[str] = []      # mpirun's own first lines, for their cause
        self.buffers = {"stdout": b"", "stderr": b""}

    def feed(self, stream: str, data: bytes) -> None:
        """Takes bytes read from ``stream``; ``b""`` means the stream ended."""
        buffer = self.buffers[stream] + data
        if not data and buffer:
            buffer += b"\n"
        *lines, self.buffers[stream] = buffer.split(b"\n")
        for line in lines:
            self._line(stream, line)

    def _line(self, stream: str, raw: bytes) -> None:
        bar = raw.endswith(b"\r")
        text = (raw[:-1] if bar else raw).decode("utf-8", "replace")
        match = self.tag.match(text)
        if match is None:
            record = parse_record(text)
            rank = record[1].get("rank", "") if record else ""
            if rank.isdigit():    # mpirun tearing a job down may pass a rank's lines untagged
                self._record(int(rank), self.ranks.setdefault(int(rank), _Rank()), *record)
                return
            self.console.plain(stream, text)
            if text.strip(" -"):
                self.mpirun_tail.append(text)
                if len(self.mpirun_first) < MPIRUN_LINES_KEPT:
                    self.mpirun_first.append(text)
            return
        rank, body = int(match["rank"]), match["text"]
        stream = match.groupdict().get("stream") or stream
        state = self.ranks.setdefault(rank, _Rank())
        state.last_seen = time.monotonic()
        record = parse_record(body)
        if record is not None:
            self._record(rank, state, *record)
            return
        self.console.rank_line(rank, stream, body, bar)
        if not bar:
            if stream == "stderr" and body.strip(" -"):
                state.stderr.append(body)
            if self.files is not None:
                self.files.write(rank, body)

    def _record(self, rank: int, state: _Rank, kind: Record, fields: dict) -> None:
        if kind is Record.START:
            state.host = fields.get("host")
            self.started.add(rank)
        elif kind is Record.ELASTIC:
            state.elastic = True
        elif kind is Record.ABORT:
            # the program ends the job: its wrapper's exit record may not outlive the teardown
            state.aborted = True
            state.exit_code, state.signal = int(fields.get("code", ExitCode.FAILED)), 0
            state.ended = float(fields.get("time", "0") or 0)
            self.on_failure(rank)
        elif kind is Record.EXIT and not state.aborted:
            state.exit_code = int(fields.get("code", ExitCode.FAILED))
            state.signal = int(fields.get("signal", "0"))
            state.ended = float(fields.get("time", "0") or 0)
            if state.exit_code and fields.get("stopped") != "1":
                self.on_failure(rank)


class _Stopper:
    """Decides when the job must stop, and stops it: a rank failed (after
    :data:`STOP_GRACE`), a signal arrived (at once; a second kills), a rank did not start
    in time or fell silent. Stopping is SIGTERM to mpirun, then SIGKILL to the session
    :data:`KILL_GRACE` seconds later.

    Args:
        job: the job's timeouts and size.
        start: when mpirun started (``time.monotonic``).
    """

    def __init__(self, job: Job, start: float):
        self.job, self.start = job, start
        self.signals: list[int] = []
        self.kind: Reason | None = None       # why the job is being stopped
        self.failed: list[int] = []            # ranks that failed on their own
        self.lost: list[int] = []
        self.term_due: float | None = None
        self.term_sent: float | None = None

    def rank_failed(self, rank: int) -> None:
        """A rank's program failed on its own: the others get :data:`STOP_GRACE` seconds."""
        self.failed.append(rank)
        if self.kind is None:
            self.kind, self.term_due = Reason.RANK, time.monotonic() + STOP_GRACE

    def check(self, now: float, output: _Output, proc: subprocess.Popen) -> None:
        """Decides whether to stop, and sends what is due to ``proc``'s session."""
        if self.signals:
            if self.kind is not Reason.INTERRUPTED:
                self.kind, self.term_due = Reason.INTERRUPTED, now
            if len(self.signals) > 1:
                kill_session(proc.pid)
        if self.kind is None:
            if len(output.started) < self.job.np and now - self.start > self.job.start_timeout:
                self.kind, self.term_due = Reason.START_TIMEOUT, now
            elif self.job.heartbeat_timeout > 0:
                self.lost = sorted(
                    r for r in output.started if output.ranks[r].exit_code is None
                    and now - output.ranks[r].last_seen > self.job.heartbeat_timeout)
                if self.lost:
                    self.kind, self.term_due = Reason.LOST, now
        if proc.poll() is not None:
            return
        if self.term_sent is None and self.term_due is not None and now >= self.term_due:
            proc.send_signal(signal.SIGTERM)
            self.term_sent = now
        elif self.term_sent is not None and now >= self.term_sent + KILL_GRACE:
            kill_session(proc.pid)


class _Watch:
    """Runs mpirun and its select loop: bytes go to :class:`_Output`, time and signals to
    :class:`_Stopper`, and the end to :func:`~distrain.run.outcome.describe`."""

    def __init__(self, job: Job, console: Console, files: RankFiles | None, grow=None):
        self.job, self.console = job, console
        self.stopper = _Stopper(job, time.monotonic())
        self.output = _Output(job, console, files, self.stopper.rank_failed)
        self.grower = GrowRequest(job.np, console, grow) if grow is not None else None
        self.proc: subprocess.Popen | None = None

    def run(self) -> Outcome:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        restore = self._catch_signals(wake_w)
        try:
            try:
                self.proc = subprocess.Popen(
                    self.job.argv, env=self.job.env, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, start_new_session=True, preexec_fn=die_with_parent)
            except OSError as exc:
                raise UsageError(f"cannot start {self.job.argv[0]}: {exc.strerror}") from None
            self.stopper.start = time.monotonic()
            self._loop(wake_r)
            self.proc.wait()
        finally:
            restore()
            os.close(wake_r)
            os.close(wake_w)
            if self.proc is not None:
                for pipe in (self.proc.stdout, self.proc.stderr):
                    pipe.close()
                _reap_session(self.proc.pid)
            self.console.close()
        stopper, output = self.stopper, self.output
        outcome = describe(self.job, Ending(
            stopper.kind, self.proc.returncode, output.ranks, frozenset(output.started),
            tuple(stopper.failed), tuple(stopper.lost), tuple(stopper.signals),
            tuple(output.mpirun_tail), tuple(output.mpirun_first)))
        asked = self.grower is not None and self.grower.asked
        return dataclasses.replace(outcome, resize_asked=asked)

    def _catch_signals(self, wake_w: int):
        def on_signal(signum, frame):
            self.stopper.signals.append(signum)

        try:
            previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
            old_fd = signal.set_wakeup_fd(wake_w)
        except ValueError:                    # not the main thread: no signal handling
            return lambda: None

        def restore():
            signal.set_wakeup_fd(old_fd)
            for s, handler in previous.items():
                signal.signal(s, handler)
        return restore

    def _loop(self, wake_r: int) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ, "stdout")
        selector.register(self.proc.stderr, selectors.EVENT_READ, "stderr")
        selector.register(wake_r, selectors.EVENT_READ, None)
        exit_fd = exit_watch(self.proc.pid)
        if exit_fd is not None:
            selector.register(exit_fd, selectors.EVENT_READ, "exit")
        streams, ended = 2, None
        while True:
            for key, _ in selector.select(0.25):
                if key.data == "exit":        # mpirun ended: reaped below
                    selector.unregister(exit_fd)
                    os.close(exit_fd)
                    exit_fd = None
                    continue
                if key.data is None:          # a signal arrived: handled by the stopper
                    try:
                        os.read(wake_r, 512)
                    except BlockingIOError:
                        pass
                    continue
                data = os.read(key.fd, 65536)
                if not data:
                    selector.unregister(key.fileobj)
                    streams -= 1
                self.output.feed(key.data, data)
            now = time.monotonic()
            self.stopper.check(now, self.output, self.proc)
            if self.grower is not None and self.stopper.kind is None:
                ranks = [self.output.ranks.get(r) for r in range(self.job.np)]
                self.grower.check(now - self.stopper.start, self.proc,
                                  every_rank_listens=all(r is not None and r.elastic
                                                         for r in ranks),
                                  every_rank_started=len(self.output.started) == self.job.np)
            if self.proc.poll() is not None:
                ended = ended or now
                if streams == 0 or now - ended > 1.0:
                    break
        selector.close()
        if exit_fd is not None:
            os.close(exit_fd)


def supervise(job: Job, console: Console, files: RankFiles | None = None,
              grow=None) -> Outcome:
    """Runs ``job`` to its end, showing its output; see the module docstring.

    Args:
        job: what to run.
        console: where ranks' output goes.
        files: per-rank log files, if wanted.
        grow: for an elastic job, called a few times a second: a line saying which hosts
            were added when the job should grow, else None.

    Returns:
        How the job ended.

    Raises:
        UsageError: mpirun cannot be started at all.
    """
    sweep()         # a killed launcher's session files would fail the next one of its pid
    try:
        return _Watch(job, console, files, grow).run()
    finally:
        sweep()
