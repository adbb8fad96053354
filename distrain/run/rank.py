"""The rank wrapper: what distrain-run starts in front of the program on every rank.

mpirun runs ``python -I -S rank.py [options] -- PROGRAM ARGS`` once per rank. This file uses the
standard library and distrain's two standard-library-only modules, :mod:`distrain.protocol`
and :mod:`distrain.cores` (it must not load numpy or TensorFlow: it costs a few milliseconds
per rank), and:

- reports to distrain-run on its stdout, in records (:mod:`distrain.protocol`): ``start``
  (host, pids) at once, ``beat`` every ``--heartbeat`` seconds, ``exit`` with the program's
  exit code, when it ended (wall clock), and whether that followed a request to stop; the
  start and exit records name the rank, since mpirun may pass a job's last lines on untagged
  while it tears the job down;
- gives the program the per-rank thread defaults it has not set itself: ``max(1, cores //
  ranks on this host)`` for each variable named by ``--thread-vars``;
- passes the program's output on line by line, and a segment ended by ``\\r`` (a progress
  bar) at once, as a line ending in ``\\r\\n``, so mpirun's line-buffered tagging cannot hold
  a bar back until its newline;
- forwards SIGTERM, SIGINT, SIGHUP, SIGUSR1 and SIGUSR2 to the program, and dies with its
  parent (``PR_SET_PDEATHSIG``; the program gets SIGKILL if this wrapper dies), so no program
  outlives its job.

Options (names of variables come from the launcher's vendor table): ``--rank-var NAME``,
``--local-size-var NAME``, ``--thread-vars NAME,NAME``, ``--heartbeat SECONDS`` (0: none).
"""
from __future__ import annotations

import os
import select
import signal
import sys
import time

if not __package__:
    # Run as a file under -I, which leaves the script's directory off sys.path: the package
    # that holds this file is found after the standard library.
    sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from distrain.cores import thread_defaults, usable_cores  # noqa: E402
from distrain.protocol import ExitCode, Record, format_record, signal_exit_code  # noqa: E402

__all__ = ["Splitter", "die_with_parent", "exit_watch", "main"]

LONGEST_LINE = 1 << 16
FORWARDED_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGUSR2")
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP")


class Splitter:
    """Cuts one output stream into whole lines and progress-bar segments.

    :meth:`feed` returns what to write on: lines ending in ``\\n``, and bar states ending in
    ``\\r\\n``. A line that ends a bar (``"a\\rb\\n"``, or a bare ``"\\n"`` after ``"a\\r"``)
    is returned as a plain line holding the bar's final text.

    Example:
        >>> Splitter().feed(b"50%\\r100%\\n")
        [b'50%\\r\\n', b'100%\\n']
    """

    def __init__(self):
        self._buffer = b""
        self._in_bar = False
        self._shown = b""

    def feed(self, data: bytes) -> list[bytes]:
        """Takes the next bytes of the stream; returns the pieces now complete."""
        out: list[bytes] = []
        buffer = self._buffer + data
        start = 0
        while True:
            newline, carriage = buffer.find(b"\n", start), buffer.find(b"\r", start)
            ends = [i for i in (newline, carriage) if i >= 0]
            if not ends:
                break
            end = min(ends)
            segment = buffer[start:end]
            if end == carriage and buffer[end + 1:end + 2] == b"\n":
                end += 1                      # "\r\n" ends a line
            if buffer[end:end + 1] == b"\r":
                if segment and segment != self._shown:
                    out.append(segment + b"\r\n")
                    self._shown = segment
                self._in_bar = True
            else:
                out.append((segment or (self._shown if self._in_bar else b"")) + b"\n")
                self._in_bar, self._shown = False, b""
            start = end + 1
        self._buffer = buffer[start:]
        if self._in_bar and self._buffer and self._buffer != self._shown:
            out.append(self._buffer + b"\r\n")
            self._shown = self._buffer
        elif len(self._buffer) >= LONGEST_LINE:
            out.append(self._buffer + b"\n")
            self._buffer = b""
        return out

    def close(self) -> list[bytes]:
        """Ends the stream: the unfinished line or bar, as a line."""
        rest = self._buffer or (self._shown if self._in_bar else b"")
        self._buffer, self._in_bar, self._shown = b"", False, b""
        return [rest + b"\n"] if rest else []


def _write(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass                                  # mpirun stopped reading: keep draining


def _record(kind: Record, **fields) -> None:
    _write(1, format_record(kind, **fields).encode())


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Asks Linux to send this process ``sig`` when its parent dies.

    Returns:
        False if the parent is already gone; True otherwise (and where Linux's ``prctl`` is
        missing).
    """
    parent = os.getppid()
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, sig, 0, 0, 0)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return True
    return os.getppid() == parent


def _options(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    if "--" not in argv:
        raise SystemExit("rank.py: usage: rank.py [options] -- PROGRAM ARGS")
    split = argv.index("--")
    options = dict(zip(argv[:split:2], argv[1:split:2]))
    return options, argv[split + 1:]


def _spawn(command: list[str], environ: dict[str, str]) -> tuple[int, int, int]:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            for fd in (out_r, out_w, err_r, err_w):
                os.close(fd)
            for name in ("SIGPIPE", "SIGXFSZ") + FORWARDED_SIGNALS:
                signal.signal(getattr(signal, name), signal.SIG_DFL)
            if not die_with_parent(signal.SIGKILL) or os.getppid() != parent:
                os._exit(ExitCode.KILLED)
            os.execvpe(command[0], command, environ)
        except OSError as exc:
            _write(2, f"distrain-run: cannot start {command[0]!r}: {exc.strerror}\n".encode())
        os._exit(ExitCode.NOT_STARTED)
    os.close(out_w)
    os.close(err_w)
    return pid, out_r, err_r


def main(argv: list[str] | None = None) -> int:
    """Runs the program of one rank; returns its exit code (128 + N for signal N)."""
    options, command = _options(sys.argv[1:] if argv is None else argv)
    environ = dict(os.environ)
    try:
        local_size = int(environ.get(options.get("--local-size-var", ""), "1"))
    except ValueError:
        local_size = 1
    names = [n for n in options.get("--thread-vars", "").split(",") if n]
    environ.update(thread_defaults(environ, names, local_size, usable_cores()))
    heartbeat = float(options.get("--heartbeat", "0"))
    state = {"child": 0, "stopped": False}

    def forward(signum, frame):
        if signal.Signals(signum).name in STOP_SIGNALS:
            state["stopped"] = True
        if state["child"]:
            try:
                os.kill(state["child"], signum)
            except ProcessLookupError:
                pass

    for name in FORWARDED_SIGNALS:
        signal.signal(getattr(signal, name), forward)
    if not die_with_parent(signal.SIGTERM):
        return ExitCode.TERMINATED
    pid, out_r, err_r = _spawn(command, environ)
    state["child"] = pid
    state["rank"] = environ.get(options.get("--rank-var", ""), "?")
    _record(Record.START, host=os.uname().nodename, pid=os.getpid(), program_pid=pid,
            rank=state["rank"])
    return _pump(pid, {out_r: (1, Splitter()), err_r: (2, Splitter())}, heartbeat, state)


def exit_watch(pid: int):
    """A descriptor that becomes readable when ``pid`` exits (Linux 5.3+), or None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _pump(pid: int, streams: dict, heartbeat: float, state: dict) -> int:
    """Passes the program's output on until it has exited and its pipes are drained."""
    poller = select.poll()
    for fd in streams:
        poller.register(fd, select.POLLIN)
    exit_fd = exit_watch(pid)
    if exit_fd is not None:
        poller.register(exit_fd, select.POLLIN)
    next_beat = time.monotonic() + heartbeat if heartbeat else None
    status = drain_until = ended = None       # ended: when its output closed, or it was reaped
    while streams or status is None:
        now = time.monotonic()
        if next_beat is not None and now >= next_beat:
            _record(Record.BEAT)
            next_beat = now + heartbeat
        if status is None:
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status, drain_until = raw, now + 0.5
                ended = ended or time.time()
        if status is not None and (not streams or now >= drain_until):
            break                             # drained, or a grandchild holds the pipes
        waits = [t - now for t in (next_beat, drain_until) if t is not None]
        if status is None and exit_fd is None:
            waits.append(0.02)                # no exit descriptor: look again soon
        timeout = max(0, min(waits)) * 1000 if waits else None
        for fd, _ in poller.poll(timeout):
            if fd == exit_fd:
                poller.unregister(exit_fd)
                os.close(exit_fd)
                exit_fd = -1                  # reaped at the top of the loop
                continue
            target, splitter = streams[fd]
            data = os.read(fd, 65536)
            for piece in splitter.feed(data) if data else splitter.close():
                _write(target, piece)
            if not data:
                poller.unregister(fd)
                os.close(fd)
                del streams[fd]
                if not streams:
                    ended = ended or time.time()
    for fd, (target, splitter) in streams.items():
        for piece in splitter.close():
            _write(target, piece)
    code = os.waitstatus_to_exitcode(status)
    signum = -code if code < 0 else 0
    code = signal_exit_code(signum) if signum else code
    _record(Record.EXIT, code=code, signal=signum, stopped=int(state["stopped"]),
            time=f"{ended or time.time():.6f}", rank=state.get("rank", "?"))
    return code


if __name__ == "__main__":
    sys.exit(main())
