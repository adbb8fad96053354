"""Calibrating the communication model on the running job, cached per host and world size.

Every rank joins (it is a collective):

- ``alpha`` and ``beta``: a sweep of message allreduces
  (:func:`distrain.collectives.message_allreduce`) of 256 B .. ``chunk_bytes`` float32
  messages, the slowest rank's median per size, fitted with
  :func:`distrain.costmodel.ring.fit_alpha_beta` (whose misses say whether the sweep can
  be trusted: :func:`fit_problem`), with ``beta`` then set to put the line through the
  chunk's time (:func:`chunk_beta`); the sweep itself is kept as the model's ``curve``,
  which it follows at this world size (the line serves the others). Each size is timed as
  a run of messages back to back over fresh parts of one buffer, as a fused bucket's chunks
  go, and counts a run's time per message: :data:`RUN` messages, and at the chunk size as
  many as fill the fusion threshold. One message alone, repeated, finds its buffer in the
  caches and its link idle: over 1 Gbit namespace links, single 1 MiB messages and runs of
  four moved 0.87-0.97 Gbit/s where a step's gradients moved ~0.6;
- ``gamma``: one packing pass (copy and scale) over 4 MiB on the host;
- ``call_overhead``: ``grouped_allreduce`` of one small tensor less its host share
  (:mod:`distrain.costmodel.host`) and its ring time: the negotiation;
- ``tensor_overhead``: what each of 32 small tensors adds to a call (used only where the
  host share is not timed on the real tensors).

The result is written to ``$DISTRAIN_CACHE_DIR`` (default ``~/.cache/distrain``) as
``calibration-HOST-pN-lM-BACKEND.json`` (M ranks per host: two ranks on one host and two
on two hosts are different jobs to calibrate), with when it was made, the host's load then and the
sweep itself, and reused until ``--calibrate`` asks again or a run finds it stale
(:func:`mark_stale`: its measured allreduce disagreed with the prediction). A fit that cannot
be trusted (:func:`fit_problem`) is measured once more; if it is still implausible it is
used for this run only, never cached, and the report says why.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import time

import numpy as np

from distrain import collectives
from distrain import environment as env
from distrain.costmodel.compute import median_seconds
from distrain.costmodel.host import host_allreduce
from distrain.errors import UsageError
from distrain.files import write_atomically
from distrain.costmodel.ring import CommModel, fit_alpha_beta, ring_time

__all__ = ["calibrate", "cache_path", "load_or_calibrate", "fit_problem", "mark_stale",
           "VERSION", "MAX_MISS", "RUN", "chunk_beta"]

VERSION = 4  # what the constants mean; a cache of another version is measured again
RUN = 4  # messages timed back to back per size of the sweep
# The largest factor by which a trusted fit may miss one of the sweep's sizes. A line cannot
# follow a transport that changes protocol with size: reduced in place on one host, 4 MiB
# messages took 0.84-1.5 ms where the line through the others said 0.69 (and 16 MiB ones
# 1.7 ms); a sweep taken while another process held the cores misses by ten times.
MAX_MISS = 3.0
# CommModel fields the cache file does not hold as constants: where they came from, the
# job's compression, and the curve (kept as the calibration's "sweep")
_NOT_CONSTANTS = ("calibration", "wire_dtype", "curve")


def cache_path(size: int, backend: str, local_size: int | None = None) -> str:
    """Where the calibration of this host, world size, ranks per host and backend is kept."""
    root = env.setting(env.CACHE_DIR) or os.path.join(os.path.expanduser("~"), ".cache",
                                                      "distrain")
    local = "" if local_size is None else f"-l{local_size}"
    return os.path.join(root,
                        f"calibration-{socket.gethostname()}-p{size}{local}-{backend}.json")


def _slowest(seconds: float) -> float:
    return max(collectives.allgather_object(seconds))


def _sweep(chunk_bytes: int, repeats: int, threshold: int):
    """Each size's time per message: :data:`RUN` messages back to back, and at the largest
    size (the chunk) as many as fill a fusion buffer of ``threshold`` bytes, timed fewer
    times, as a large bucket's chunks go."""
    sizes, times = [], []
    nbytes = 256
    largest = max(chunk_bytes, 256)
    while nbytes <= largest:
        count = nbytes // 4
        messages = max(RUN, threshold // nbytes) if nbytes * 4 > largest else RUN
        buf = np.zeros(messages * count, np.float32)  # zeros: sums stay zeros, run after run

        def run(b=buf, n=count):
            for start in range(0, b.size, n):
                collectives.message_allreduce(b[start:start + n])
        collectives.barrier()
        sizes.append(nbytes)
        timed = repeats if messages == RUN else max(3, repeats // 4)
        times.append(_slowest(median_seconds(run, timed)) / messages)
        nbytes *= 4
    return sizes, times


def fit_problem(sizes, seconds, ranks: int, alpha: float, beta: float) -> str:
    """Why an ``alpha``/``beta`` fit of a sweep cannot be trusted; ``""`` when it can.

    Implausible: ``beta`` at most 1e-12 s/byte (larger messages were not slower), a latency term
    ``2(p-1) alpha`` below a quarter or above twice the smallest message's time, or a fitted
    time more than :data:`MAX_MISS` times above or below a measured one.

    Args:
        sizes: the sweep's message sizes, bytes, smallest first.
        seconds: the measured time of each.
        ranks: the world size.
        alpha, beta: the fit.

    Example:
        >>> fit_problem([256, 1 << 20], [1e-5, 1e-3], 2, 5e-6, 1e-9)
        ''
        >>> fit_problem([256, 1 << 20], [1e-5, 1e-5], 2, 5e-6, 0.0)
        'beta = 0 ns/byte: larger messages were not slower than small ones'
    """
    if beta <= 1e-12:   # faster than 1000 GB/s: no link; the sizes did not tell apart
        return (f"beta = {beta * 1e9:.4g} ns/byte: larger messages were not slower than "
                f"small ones")
    latency, smallest = ring_time(0, ranks, alpha, 0.0), seconds[0]
    if not 0.25 * smallest <= latency <= 2 * smallest:
        return (f"latency 2(p-1) alpha = {latency * 1e6:.1f} us against "
                f"{smallest * 1e6:.1f} us for the smallest message")
    fitted = [ring_time(n, ranks, alpha, beta) for n in sizes]
    worst = max(max(f, t) / max(min(f, t), 1e-15) for f, t in zip(fitted, seconds))
    if worst > MAX_MISS:
        return f"the fit misses one of the sweep's sizes by a factor of {worst:.1f}"
    return ""


def chunk_beta(sizes, seconds, ranks: int, alpha: float, beta: float) -> float:
    """``beta`` that puts the α-β line through the sweep's largest size (the chunk), with
    the fit's ``alpha``; the fit's ``beta`` where that size took no longer than the latency.

    A fused bucket is a run of chunks, so the chunk's time is the one the model must get
    right; a line fitted over every size is pulled by the middle ones (over 1 Gbit
    namespace links: 0.88 Gbit/s fitted, where 1 MiB chunks moved 0.62).

    Example:
        >>> round(chunk_beta([256, 1 << 20], [2e-5, 4e-3], 2, 5e-6, 1e-9) * 1e9, 3)
        3.805
    """
    latency = ring_time(0, ranks, alpha, 0.0)
    if seconds[-1] <= latency:
        return beta
    return (seconds[-1] - latency) / (2 * (ranks - 1) / ranks * sizes[-1])


def _fit(chunk: int, repeats: int, size: int, threshold: int):
    """``(alpha, beta, problem, sweep)``: a fit, measured once more if implausible."""
    for attempt in range(2):
        sizes, times = _sweep(chunk, repeats * (attempt + 1), threshold)
        alpha, beta = fit_alpha_beta(sizes, times, size)
        problem = fit_problem(sizes, times, size, alpha, beta)  # is the sweep sound?
        if not problem:
            break
    beta = chunk_beta(sizes, times, size, alpha, beta)
    return alpha, beta, problem, {"sizes": sizes, "seconds": times}


def _load_per_core() -> float | None:
    try:
        return round(os.getloadavg()[0] / (os.cpu_count() or 1), 2)
    except OSError:
        return None


def calibrate(repeats: int = 20) -> CommModel:
    """Measures the communication constants on every rank of the running job.

    Returns:
        The fitted :class:`CommModel`; its ``calibration`` says when and under what load it
        was measured, and ``problem`` why the fit is implausible (empty when it is not).
    """
    size = collectives.size()
    chunk, threshold = collectives.chunk_bytes(), collectives.fusion_threshold()
    alpha = beta = 0.0
    problem, sweep = "", {}
    if size > 1:
        alpha, beta, problem, sweep = _fit(chunk, repeats, size, threshold)
    src = np.ones(1 << 20, np.float32)
    dst = np.empty_like(src)
    gamma = _slowest(median_seconds(lambda: np.multiply(src, 0.5, out=dst), repeats)) \
        / src.nbytes
    import tensorflow as tf  # the per-tensor cost includes TensorFlow's conversions
    one = [tf.ones([4])]
    many = [tf.ones([4])] * 32
    single = _slowest(median_seconds(lambda: collectives.grouped_allreduce(one), repeats))
    multi = _slowest(median_seconds(lambda: collectives.grouped_allreduce(many), repeats))
    tensor_overhead = max(multi - single, 0.0) / 31
    # What one call costs beyond its host share and its message: the negotiation.
    host = median_seconds(host_allreduce(one, size, threshold, chunk), repeats)
    call_overhead = max(single - host - ring_time(16, size, alpha, beta), 0.0)
    calibration = {"source": "measured", "measured_at": time.time(),
                   "load": _load_per_core(), "problem": problem, "sweep": sweep}
    return CommModel(size, alpha, beta, gamma, call_overhead, tensor_overhead, chunk,
                     threshold, calibration, curve=_curve(sweep))


def _curve(sweep) -> tuple:
    """The sweep as :attr:`CommModel.curve`: ``(bytes, seconds)`` pairs, smallest first."""
    sweep = sweep or {}
    return tuple(zip(sweep.get("sizes", ()), sweep.get("seconds", ())))


def _constants(model: CommModel) -> dict:
    return {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
            if f.name not in _NOT_CONSTANTS}


def load_or_calibrate(recalibrate: bool = False) -> CommModel:
    """The cached calibration for this job's shape, measured first when missing, stale or
    asked for; an implausible fit is used but not cached.

    Rank 0 decides and shares its constants, so every rank uses the same model.

    Args:
        recalibrate: measure even when a cache exists.

    Returns:
        The :class:`CommModel`, its ``calibration`` filled in (``path``: the cache file).
    """
    path = cache_path(collectives.size(), collectives.backend_name(), collectives.local_size())
    cached = None
    if collectives.rank() == 0 and not recalibrate and os.path.isfile(path):
        try:
            with open(path) as handle:
                cached = json.load(handle)
        except (OSError, ValueError):
            cached = None
    cached = collectives.allgather_object(cached)[0]
    if cached is not None and (cached.get("version") != VERSION or cached.get("stale")
                               or cached.get("chunk_bytes") != collectives.chunk_bytes()):
        cached = None  # older distrain, found stale by a run, or another chunk size
    if cached is None:
        model = calibrate()
        if collectives.rank() == 0 and not model.calibration["problem"]:
            _write(path, dict(_constants(model), version=VERSION, **model.calibration))
        return dataclasses.replace(model, calibration=dict(model.calibration, path=path))
    fields = {k: cached[k] for k in CommModel.__dataclass_fields__
              if k in cached and k not in _NOT_CONSTANTS}
    fields["fusion_threshold"] = collectives.fusion_threshold()
    fields["curve"] = _curve(cached.get("sweep"))
    fields["calibration"] = {"source": "cache", "measured_at": cached.get("measured_at"),
                             "load": cached.get("load"), "problem": "", "path": path}
    return CommModel(**fields)


def mark_stale(path: str, reason: str) -> bool:
    """Marks the cached calibration at ``path`` stale, so the next run measures again.

    Args:
        path: the cache file (``CommModel.calibration["path"]``).
        reason: what the run found, kept in the file.

    Returns:
        True when a cache was there and is now marked.
    """
    try:
        with open(path) as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return False
    record["stale"] = reason
    _write(path, record)
    return True


def _write(path: str, record: dict) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomically(path, lambda handle: handle.write(json.dumps(record, indent=1)
                                                           .encode()))
    except (OSError, UsageError):
        pass  # a cache that cannot be written is only slower next time
