"""How ranks' output reaches the user: every line tagged ``[rank]<stream>: ``, rank 0's
progress bar kept on one line, and optionally one file per rank.

Only rank 0's progress bars are drawn; other ranks' bars show their final line only, so N
bars never fight over one terminal line. When another rank prints while rank 0's bar is up,
a terminal gets the line above a redrawn bar; a file or pipe gets the bar's line ended first.

Example:
    >>> import io
    >>> out = io.StringIO()
    >>> console = Console(out, out)
    >>> console.rank_line(1, "stdout", "hello", bar=False)
    >>> out.getvalue()
    '[1]<stdout>: hello\\n'
"""
from __future__ import annotations

import os

__all__ = ["Console", "RankFiles", "tag"]


def tag(rank: int, stream: str) -> str:
    """The prefix of a rank's line: ``[1]<stdout>: ``."""
    return f"[{rank}]<{stream}>: "


class Console:
    """Writes tagged lines to distrain-run's stdout and stderr.

    Args:
        out: where ranks' stdout goes.
        err: where ranks' stderr and distrain-run's own messages go.
    """

    def __init__(self, out, err):
        self._targets = {"stdout": out, "stderr": err}
        self._bars: dict[int, str] = {}       # id(target) -> the bar line shown there
        self._tty = {id(t): bool(getattr(t, "isatty", lambda: False)()) for t in (out, err)}

    def rank_line(self, rank: int, stream: str, text: str, bar: bool) -> None:
        """Shows one line, or one progress-bar state, of a rank.

        Args:
            rank: the rank that printed it.
            stream: ``stdout`` or ``stderr``.
            text: the line, without its ending.
            bar: True for a bar state (the program ended it with ``\\r``).
        """
        if bar and rank != 0:
            return
        target = self._targets.get(stream, self._targets["stderr"])
        shown = tag(rank, stream) + text
        key = id(target)
        previous = self._bars.get(key)
        if bar:
            if previous is not None:
                target.write("\r" + shown + " " * max(0, len(previous) - len(shown)))
            else:
                target.write(shown)
            self._bars[key] = shown
        elif previous is not None and rank == 0 and previous.startswith(tag(0, stream)):
            target.write("\r" + shown + " " * max(0, len(previous) - len(shown)) + "\n")
            del self._bars[key]
        else:
            self._write_around_bar(target, shown + "\n")
        target.flush()

    def plain(self, stream: str, text: str) -> None:
        """Shows a line that is not a rank's (mpirun's own messages, distrain-run's)."""
        target = self._targets.get(stream, self._targets["stderr"])
        self._write_around_bar(target, text + "\n")
        target.flush()

    def close(self) -> None:
        """Ends any bar still on screen with a newline."""
        for target in self._targets.values():
            if self._bars.pop(id(target), None) is not None:
                target.write("\n")
                target.flush()

    def _write_around_bar(self, target, text: str) -> None:
        key = id(target)
        previous = self._bars.get(key)
        if previous is None:
            target.write(text)
        elif self._tty[key]:
            target.write("\r" + " " * len(previous) + "\r" + text + previous)
        else:
            target.write("\n" + text)
            del self._bars[key]


class RankFiles:
    """``--output-filename DIR``: each rank's lines in ``DIR/rank.N.log``, both streams.

    Args:
        directory: created if missing.
    """

    def __init__(self, directory: str):
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self._files: dict[int, object] = {}

    def write(self, rank: int, text: str) -> None:
        """Appends one line of ``rank``'s output."""
        stream = self._files.get(rank)
        if stream is None:
            path = os.path.join(self.directory, f"rank.{rank}.log")
            stream = self._files[rank] = open(path, "w", encoding="utf-8")
        stream.write(text + "\n")
        stream.flush()

    def close(self) -> None:
        """Closes every file."""
        for stream in self._files.values():
            stream.close()
        self._files.clear()
