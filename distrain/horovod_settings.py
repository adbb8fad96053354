"""What distrain does with each of Horovod 0.28.1's ``HOROVOD_*`` runtime settings: one table.

Horovod users' job scripts set these (horovodrun's options become them too). When distrain's
own backends start (``init()``; under the ``horovod`` backend Horovod reads them itself):

- a setting distrain has the notion of is **honoured**: its value stands for a ``DISTRAIN_*``
  setting, put in the environment for this run where that one is unset (a ``DISTRAIN_*``
  setting given explicitly wins); a bad value fails ``init()`` with one line naming it;
- a setting that matches what distrain always does is accepted silently;
- any other setting is **accepted with no effect**: rank 0 prints one line for it, once, saying
  why (not at ``HOROVOD_LOG_LEVEL`` error or fatal).

docs/migration.md ("HOROVOD_* settings") is this table in words.

Example:
    >>> translate({env.HOROVOD_FUSION_THRESHOLD: "1048576"}) == {env.FUSION_THRESHOLD: "1048576"}
    True
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Callable, Mapping

from distrain import environment as env

__all__ = ["HorovodSetting", "SETTINGS", "translate", "notes", "apply", "undo", "announce"]

LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "FATAL")
_QUIET_LEVELS = ("ERROR", "FATAL")


@dataclasses.dataclass(frozen=True)
class HorovodSetting:
    """One ``HOROVOD_*`` setting and what distrain does with it.

    Attributes:
        name: the variable (from :mod:`distrain.environment`).
        does: what distrain does with it; for a setting with no effect, why.
        translate: for an honoured setting, its value to the ``DISTRAIN_*`` values it stands
            for (raising ValueError on a bad value); None for the others.
        honoured_when: for a setting distrain matches without a ``DISTRAIN_*`` setting, whether
            a value asks for what distrain does anyway; None when no value does. A value that
            is neither translated nor honoured gets the one-line note.
    """

    name: str
    does: str
    translate: Callable[[str], dict] | None = None
    honoured_when: Callable[[str], bool] | None = None


def _bytes(name: str, target: str) -> Callable[[str], dict]:
    def read(raw: str) -> dict:
        value = _checked(env.int_setting, name, raw, "a number of bytes (e.g. 67108864)",
                         default=0, minimum=0)
        return {target: str(value)}
    return read


def _seconds(name: str, target: str) -> Callable[[str], dict]:
    def read(raw: str) -> dict:
        value = _checked(env.float_setting, name, raw, "a number of seconds", default=0.0)
        return {target: repr(value)}
    return read


def _stall_check_disable(raw: str) -> dict:
    if _checked(env.flag_setting, env.HOROVOD_STALL_CHECK_DISABLE, raw, "1 or 0",
                default=False):
        return {env.STALL_WARNING_SECONDS: "0", env.STALL_SHUTDOWN_SECONDS: "0"}
    return {}


def _log_level(raw: str) -> dict:
    return {env.STALL_WARNING_SECONDS: "0"} if _level(raw) in _QUIET_LEVELS else {}


def _level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"{env.HOROVOD_LOG_LEVEL}={raw!r} is not a log level; set it to one "
                         f"of {', '.join(LOG_LEVELS)} or unset it")
    return level


def _timeline(raw: str) -> dict:
    directory = os.path.dirname(os.path.abspath(raw))
    if not os.path.isdir(directory):
        raise ValueError(f"{env.HOROVOD_TIMELINE}={raw!r}: directory {directory} does not "
                         f"exist; create it or set the variable to a file in another one")
    return {env.TIMELINE: raw}


def _checked(read, name: str, raw: str, wanted: str, **options):
    """``read(name, ..., {name: raw})``, its ValueError told with what to set instead."""
    try:
        return read(name, env=({name: raw}), **options)
    except ValueError as exc:
        raise ValueError(f"{exc}; set it to {wanted} or unset it") from None


_HOST_ONLY = "a GPU setting; distrain runs its collectives on the host (GPUs are out of scope)"
_NO_AUTOTUNE = ("distrain does not autotune; set DISTRAIN_FUSION_THRESHOLD, and see what "
                "distrain's cost model predicts (docs/cost-model.md)")
_NO_GLOO = "distrain does not use Gloo; its ranks talk over MPI"

SETTINGS: tuple[HorovodSetting, ...] = (
    # honoured; where two name the same DISTRAIN_* setting, the first row wins
    HorovodSetting(env.HOROVOD_FUSION_THRESHOLD,
                   "the fusion bucket size in bytes, as DISTRAIN_FUSION_THRESHOLD",
                   _bytes(env.HOROVOD_FUSION_THRESHOLD, env.FUSION_THRESHOLD)),
    HorovodSetting(env.HOROVOD_STALL_CHECK_DISABLE,
                   "1 turns the stall inspector off: DISTRAIN_STALL_WARNING_SECONDS=0 and "
                   "DISTRAIN_STALL_SHUTDOWN_SECONDS=0", _stall_check_disable),
    HorovodSetting(env.HOROVOD_LOG_LEVEL,
                   "error or fatal silences distrain's warnings: stall warnings "
                   "(DISTRAIN_STALL_WARNING_SECONDS=0) and these notes", _log_level),
    HorovodSetting(env.HOROVOD_STALL_CHECK_TIME_SECONDS,
                   "when rank 0 names the ranks a collective waits for, as DISTRAIN_STALL_"
                   "WARNING_SECONDS",
                   _seconds(env.HOROVOD_STALL_CHECK_TIME_SECONDS, env.STALL_WARNING_SECONDS)),
    HorovodSetting(env.HOROVOD_STALL_SHUTDOWN_TIME_SECONDS,
                   "when a stalled collective aborts the job, as DISTRAIN_STALL_SHUTDOWN_"
                   "SECONDS",
                   _seconds(env.HOROVOD_STALL_SHUTDOWN_TIME_SECONDS,
                            env.STALL_SHUTDOWN_SECONDS)),
    HorovodSetting(env.HOROVOD_TIMELINE,
                   "every collective of the run as a Chrome trace, as DISTRAIN_TIMELINE: rank "
                   "0 writes the file at shutdown or exit, rank r the file with .rank<r> "
                   "before its extension", _timeline),
    # honoured where distrain reads it, or where distrain does what the value asks anyway
    HorovodSetting(env.HOROVOD_DYNAMIC_PROCESS_SETS,
                   "1 allows add_process_set/remove_process_set after init, as in Horovod",
                   honoured_when=lambda raw: True),
    HorovodSetting(env.HOROVOD_LOG_HIDE_TIME, "distrain's messages carry no time stamp",
                   honoured_when=lambda raw: True),
    HorovodSetting(env.HOROVOD_CONTROLLER,
                   "distrain coordinates its ranks over MPI, always (mpi is accepted silently)",
                   honoured_when=lambda raw: raw.strip().lower() == "mpi"),
    HorovodSetting(env.HOROVOD_CPU_OPERATIONS,
                   "distrain's collectives run over MPI, always (mpi is accepted silently)",
                   honoured_when=lambda raw: raw.strip().lower() == "mpi"),
    HorovodSetting(env.HOROVOD_MPI_THREADS_DISABLE,
                   "distrain calls MPI from more than one thread, one at a time, and needs "
                   "MPI_THREAD_SERIALIZED (0 is accepted silently)",
                   honoured_when=lambda raw: raw.strip() == "0"),
    # no effect
    HorovodSetting(env.HOROVOD_CYCLE_TIME,
                   "distrain runs each collective when it is called, on the calling thread; "
                   "there is no background cycle to time"),
    HorovodSetting(env.HOROVOD_TIMELINE_MARK_CYCLES, "distrain runs no background cycle to mark"),
    HorovodSetting(env.HOROVOD_CACHE_CAPACITY,
                   "distrain keeps no response cache; a collective's negotiation is one small "
                   "message"),
    HorovodSetting(env.HOROVOD_HIERARCHICAL_ALLREDUCE,
                   "distrain calls MPI's own allreduce; choose its algorithm with Open MPI's "
                   "MCA parameters"),
    HorovodSetting(env.HOROVOD_HIERARCHICAL_ALLGATHER,
                   "distrain calls MPI's own allgather; choose its algorithm with Open MPI's "
                   "MCA parameters"),
    HorovodSetting(env.HOROVOD_DISABLE_GROUP_FUSION,
                   "distrain fuses grouped and single tensors by one plan "
                   "(DISTRAIN_FUSION_THRESHOLD)"),
    HorovodSetting(env.HOROVOD_ADASUM_MPI_CHUNK_SIZE,
                   "distrain's Adasum swaps each half in one MPI message; it has no chunk size "
                   "of its own"),
    HorovodSetting(env.HOROVOD_THREAD_AFFINITY,
                   "distrain does not pin its threads; bind ranks to cores with mpirun's or "
                   "distrain-run's binding options"),
    HorovodSetting(env.HOROVOD_AUTOTUNE, _NO_AUTOTUNE),
    HorovodSetting(env.HOROVOD_AUTOTUNE_LOG, _NO_AUTOTUNE),
    HorovodSetting(env.HOROVOD_AUTOTUNE_WARMUP_SAMPLES, _NO_AUTOTUNE),
    HorovodSetting(env.HOROVOD_AUTOTUNE_STEPS_PER_SAMPLE, _NO_AUTOTUNE),
    HorovodSetting(env.HOROVOD_AUTOTUNE_BAYES_OPT_MAX_SAMPLES, _NO_AUTOTUNE),
    HorovodSetting(env.HOROVOD_AUTOTUNE_GAUSSIAN_PROCESS_NOISE, _NO_AUTOTUNE),
    HorovodSetting(env.HOROVOD_GPU_OPERATIONS, _HOST_ONLY),
    HorovodSetting(env.HOROVOD_NUM_NCCL_STREAMS, _HOST_ONLY),
    HorovodSetting(env.HOROVOD_BATCH_D2D_MEMCOPIES, _HOST_ONLY),
    HorovodSetting(env.HOROVOD_TORUS_ALLREDUCE, _HOST_ONLY),
    HorovodSetting(env.HOROVOD_ENABLE_ASYNC_COMPLETION, _HOST_ONLY),
    HorovodSetting(env.HOROVOD_ENABLE_XLA_OPS,
                   "distrain registers no XLA ops; its collectives run on the host"),
    HorovodSetting(env.HOROVOD_GLOO_TIMEOUT_SECONDS, _NO_GLOO),
    HorovodSetting(env.HOROVOD_GLOO_IFACE, _NO_GLOO),
    HorovodSetting(env.HOROVOD_ELASTIC,
                   "distrain's elastic jobs are started by distrain-run --min-np/--max-np "
                   "(docs/elastic.md)"),
)


def translate(environ: Mapping[str, str] | None = None) -> dict:
    """The ``DISTRAIN_*`` values that the honoured ``HOROVOD_*`` settings stand for.

    A ``DISTRAIN_*`` setting ``environ`` gives itself is left out (it wins).

    Args:
        environ: the environment; ``os.environ`` when None.

    Returns:
        ``{DISTRAIN_* name: value}``.

    Raises:
        ValueError: a ``HOROVOD_*`` value is malformed (one line: the variable, the value and
            what to set instead).
    """
    environ = os.environ if environ is None else environ
    found: dict = {}
    for row in SETTINGS:
        raw = env.setting(row.name, None, environ)
        if raw is None or row.translate is None:
            continue
        for target, value in row.translate(raw).items():
            if env.setting(target, None, environ) is None:
                found.setdefault(target, value)
    return found


def notes(environ: Mapping[str, str] | None = None) -> list:
    """One line for each ``HOROVOD_*`` setting in ``environ`` that has no effect here, none
    at ``HOROVOD_LOG_LEVEL`` error or fatal."""
    environ = os.environ if environ is None else environ
    level = env.setting(env.HOROVOD_LOG_LEVEL, None, environ)
    if level is not None and level.strip().upper() in _QUIET_LEVELS:
        return []
    lines = []
    for row in SETTINGS:
        raw = env.setting(row.name, None, environ)
        if raw is None or row.translate is not None or (
                row.honoured_when is not None and row.honoured_when(raw)):
            continue
        lines.append(f"[distrain] {row.name}={raw} has no effect here: {row.does}")
    return lines


_applied: list = []
_announced = False


def apply() -> None:
    """Puts the ``DISTRAIN_*`` values of :func:`translate` into ``os.environ`` for this run
    (:func:`undo` takes them out again).

    Raises:
        ValueError: a ``HOROVOD_*`` value is malformed.
    """
    for name, value in translate().items():
        os.environ[name] = value
        _applied.append(name)


def undo() -> None:
    """Takes out what :func:`apply` put in the environment."""
    while _applied:
        os.environ.pop(_applied.pop(), None)


def announce(rank: int) -> None:
    """On rank 0, prints the :func:`notes` to stderr, once per process."""
    global _announced
    if rank != 0 or _announced:
        return
    _announced = True
    lines = notes()
    if lines:
        print("\n".join(lines), file=sys.stderr, flush=True)
