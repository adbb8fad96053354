"""Importing TensorFlow without its start-up log lines.

Since TensorFlow 2.20, ``import tensorflow`` writes absl log lines straight to file
descriptor 2 before its logging is set up (``I0000 ... port.cc] oneDNN custom operations are
on``, ``cudart_stub.cc] Could not find cuda drivers``), and ``TF_CPP_MIN_LOG_LEVEL`` does not
hide them. On every rank of a job that is a screenful of noise before the first useful line,
and it buries one-line error messages. :func:`import_tensorflow` runs the import with
descriptor 2 read through a filter that drops absl lines below ``TF_CPP_MIN_LOG_LEVEL``
(0 keeps everything; 1 drops INFO; 2 WARNING; 3 ERROR; FATAL always passes) and passes every
other line through as it comes.
"""
from __future__ import annotations

import os
import re
import sys
import threading

from distrain import environment as env

__all__ = ["import_tensorflow", "keep_line"]

_ABSL_LINE = re.compile(rb"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]]+\] ")
_ABSL_NOTICE = b"WARNING: All log messages before absl::InitializeLog() is called"
_SEVERITY = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}


def keep_line(line: bytes, min_level: int) -> bool:
    """Whether a line TensorFlow wrote while importing is shown.

    Args:
        line: one line, as bytes.
        min_level: ``TF_CPP_MIN_LOG_LEVEL``.

    Returns:
        False for absl log lines below ``min_level`` and for absl's notice about them.
    """
    if line.startswith(_ABSL_NOTICE):
        return min_level < 1
    match = _ABSL_LINE.match(line)
    if match is None:
        return True
    severity = _SEVERITY[match.group(1)]
    return severity >= 3 or severity >= min_level


def _min_level() -> int:
    try:
        return int(env.setting(env.TF_CPP_MIN_LOG_LEVEL, "0"))
    except ValueError:
        return 0


def import_tensorflow():
    """Imports and returns ``tensorflow``, filtering its start-up lines on descriptor 2.

    A second call, or one with ``TF_CPP_MIN_LOG_LEVEL`` 0, is a plain import.

    Returns:
        The ``tensorflow`` module.
    """
    level = _min_level()
    if "tensorflow" in sys.modules or level <= 0:
        import tensorflow
        return tensorflow
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    thread = threading.Thread(target=_forward, args=(read_end, os.dup(saved), level),
                              name="distrain-tf-import-log", daemon=True)
    thread.start()
    try:
        import tensorflow
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the thread sees EOF
        thread.join(timeout=5)  # unless a child process kept a copy; it goes on forwarding
        os.close(saved)
    return tensorflow


def _forward(read_end: int, out: int, level: int) -> None:
    """Copies lines from ``read_end`` to ``out`` as they come, dropping hidden ones; closes
    both when the pipe ends."""
    pending = b""
    with os.fdopen(read_end, "rb", buffering=0) as pipe, \
            os.fdopen(out, "wb", buffering=0) as sink:
        while True:
            data = pipe.read(65536)
            if not data:
                break
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if keep_line(line, level):
                    sink.write(line + b"\n")
        if pending and keep_line(pending, level):
            sink.write(pending)
