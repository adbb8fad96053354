"""``python -m distrain.bench costmodel``: predicted against measured step time.

For each model (default: the built-ins mlp, cnn and resnet) it trains on synthetic data for
``--steps`` steps with the cost model on, ``--repeats`` times, and prints the predicted and
measured (median over ranks of each rank's median, then over the runs) time of each phase
and of the whole step (each run's own under ``runs_ms`` in ``--json``), then each run's
signed error of the total, (predicted - measured) / measured, with their median, and which
runs were disturbed (ranks whose steps scattered or lagged: :mod:`distrain.timing.trust`).
The closing line is over every run of every model: the median and the worst |error|. It
also prints what the step timer itself costs.

With ``--hosts N`` (root) it is not run under a launcher: it makes ``N`` network-namespace
hosts whose links ``tc`` limits to ``--rate`` (as ``python -m distrain.bench network``),
runs itself there with one rank per host over TCP, and measures the calibration afresh
(a cached one belongs to another link). Before the run it measures what the link carries
(:func:`distrain.bench.netns.measure_link`: one TCP stream, and one each way at once) and
prints it in the heading, or under ``link`` in ``--json``.

Example:
    mpirun -np 2 python -m distrain.bench costmodel --json
    python -m distrain.bench costmodel --hosts 2 --rate 1gbit --repeats 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

from distrain import environment as env
from distrain.ops import COMPRESSIONS
from distrain.run.command import launcher_argv
from distrain.timing.summary import summarize_rank
from distrain.timing.timer import PHASES, StepTimer

__all__ = ["main", "timer_overhead"]


def timer_overhead(steps: int = 20000) -> float:
    """Seconds the timer adds to one step: a step and four phases around no work."""
    import time
    timer = StepTimer()
    start = time.perf_counter()
    for number in range(steps):
        with timer.step(number):
            for phase in PHASES:
                with timer.phase(phase):
                    pass
    return (time.perf_counter() - start) / steps


def _one_run(model: str, args, calibrate: bool) -> tuple[dict, dict, list, object]:
    """Trains ``model`` once with the cost model on; returns (predicted, measured seconds
    per phase and ``total``, measured as the median over ranks of each rank's median, why
    the run was disturbed: :func:`distrain.timing.trust.disturbances`, and the
    communication model it used)."""
    from distrain import collectives
    from distrain.timing.report import build_report
    from distrain.timing.trust import disturbances
    from distrain.train.config import TrainConfig
    from distrain.train.runner import run
    config = TrainConfig(model=model, batch_size=args.batch_size, image_size=args.image_size,
                         steps_per_epoch=args.warmup + args.steps,
                         synthetic_samples=max(4096, (args.warmup + args.steps)
                                               * args.batch_size * 16),
                         quiet=True, calibrate=calibrate, timing_warmup=args.warmup,
                         compression=args.compression, overlap=args.overlap)
    result = run(config)
    summary = summarize_rank(result.timer.steps, collectives.rank(), "", args.warmup)
    everyone = collectives.allgather_object(summary)
    mine = dict(summary.phases, total=summary.total)
    measured = {k: statistics.median(s.seconds(k) for s in everyone) for k in mine}
    predicted = dict(result.prediction.phases, total=result.prediction.total)
    shaken = disturbances(build_report(everyone, [[] for _ in everyone], args.warmup, 1,
                                       result.prediction))
    return predicted, measured, shaken, result.prediction.comm


def _ms(seconds: dict) -> dict:
    return {k: round(v * 1e3, 3) for k, v in seconds.items()}


def _error(predicted: float, measured: float) -> float:
    return round(100 * (predicted - measured) / measured, 1)


def main(argv: list[str] | None = None) -> int:
    """Runs the comparison on every rank; rank 0 prints.

    Each model is trained ``--repeats`` times, the models taking turns, so that a slow
    spell of the machine does not fall on one model's runs alone; the tables show the
    median over a model's runs of each phase, the errors are each run's own.

    Returns:
        0, or 2 for bad arguments.
    """
    p = argparse.ArgumentParser(prog="python -m distrain.bench costmodel",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="mlp,cnn,resnet")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=None, metavar="N",
                   help="images of N x N for the image models (default: each model's own)")
    p.add_argument("--steps", type=int, default=150, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3, help="runs per model")
    p.add_argument("--calibrate", action="store_true", help="redo the allreduce calibration")
    p.add_argument("--compression", default="none", choices=COMPRESSIONS,
                   help="the gradients' wire compression (default none)")
    p.add_argument("--overlap", action="store_true",
                   help="reduce gradient buckets while backward runs")
    p.add_argument("--json", action="store_true")
    p.add_argument("--hosts", type=int, default=None,
                   help="run on this many namespace hosts, one rank each (root)")
    p.add_argument("--rate", default="1gbit", help="with --hosts: each link's limit "
                                                   "(default 1gbit)")
    p.add_argument("--timeout", type=float, default=1800,
                   help="with --hosts: seconds for the whole run (default 1800)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.repeats < 1:
        p.error("--steps and --repeats must be >= 1 and --warmup >= 0")
    if args.hosts is not None:
        if args.hosts < 2:
            p.error("--hosts must be at least 2")
        return _over_namespace_hosts(args, argv if argv is not None else sys.argv[1:])

    from distrain import collectives
    models = args.models.split(",")
    runs: dict[str, list] = {model: [] for model in models}
    for repeat in range(args.repeats):
        for model in models:
            runs[model].append(_one_run(model, args, args.calibrate and not any(runs.values())))
    rows = []
    for model in models:
        predicted = {k: statistics.median(r[0][k] for r in runs[model]) for k in runs[model][0][0]}
        measured = {k: statistics.median(r[1][k] for r in runs[model]) for k in runs[model][0][1]}
        errors = [_error(r[0]["total"], r[1]["total"]) for r in runs[model]]
        rows.append({"model": model, "ranks": collectives.size(),
                     "predicted_ms": _ms(predicted), "measured_ms": _ms(measured),
                     "run_errors_pct": errors,
                     "runs_ms": [{"predicted": _ms(r[0]), "measured": _ms(r[1])}
                                 for r in runs[model]],
                     "median_run_error_pct": round(statistics.median(errors), 1),
                     "error_of_medians_pct": _error(predicted["total"], measured["total"]),
                     "disturbed_runs": {str(i + 1): r[2] for i, r in enumerate(runs[model])
                                        if r[2]}})
    overhead = timer_overhead()
    comm = runs[models[-1]][-1][3]  # every run after the first reads the same calibration
    calibration = {"alpha_us": round(comm.alpha * 1e6, 3),
                   "beta_ns_per_byte": round(comm.beta * 1e9, 4),
                   "source": comm.calibration.get("source"),
                   "problem": comm.calibration.get("problem", "")}
    if collectives.rank() == 0:
        if args.json:
            print(json.dumps({"rows": rows, "repeats": args.repeats,
                              "timer_overhead_us": round(overhead * 1e6, 2),
                              "calibration": calibration}))
        else:
            _print(rows, args, overhead, calibration)
    return 0


def _over_namespace_hosts(args, argv: list[str]) -> int:
    """Runs this benchmark on ``--hosts`` namespace hosts and passes its output through.

    Returns:
        The run's exit code; 2 where namespaces cannot be made or ``--rate`` is not a rate.
    """
    from distrain.bench.netns import (NamespaceHosts, describe_link, measure_link, parse_rate,
                                      rank_environment, requirements_problem, untagged)
    from distrain.cores import threads_per_rank
    try:
        bits = parse_rate(args.rate)
    except ValueError as exc:
        print(f"distrain.bench costmodel: {exc}", file=sys.stderr)
        return 2
    problem = requirements_problem()
    if problem:
        print(f"distrain.bench costmodel: {problem}", file=sys.stderr)
        return 2
    inner = _without(argv, ("--hosts", "--rate", "--timeout"))
    # the link's calibration is kept apart from the host's own
    with tempfile.TemporaryDirectory(prefix="distrain-netcal-") as cache, \
            NamespaceHosts(args.hosts, None if bits is None else args.rate) as hosts:
        command = [*launcher_argv(), "-np", str(args.hosts), *hosts.launch_args(),
                   "--start-timeout", "60", sys.executable, "-m", "distrain.bench",
                   "costmodel", *inner, "--calibrate"]
        link = measure_link(hosts)
        if not args.json:
            print(f"on {args.hosts} namespace hosts, links {args.rate} (carrying "
                  f"{describe_link(link)}), one rank each (calibration measured afresh)",
                  flush=True)
        try:
            done = subprocess.run(command, capture_output=True, text=True,
                                  env=rank_environment(threads_per_rank(args.hosts),
                                                       **{env.CACHE_DIR: cache}),
                                  timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(f"distrain.bench costmodel: the run took over {args.timeout:g} s "
                  f"(--timeout)", file=sys.stderr)
            return 1
    for line in done.stdout.split("\n"):
        line = untagged(line)
        if args.json and line.startswith("{"):
            line = json.dumps(dict(json.loads(line), link=dict(link or {}, rate=args.rate)))
        if line:
            print(line)
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
    return done.returncode


def _without(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """``argv`` less ``flags`` and their values (``--flag value`` or ``--flag=value``)."""
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item in flags:
            skip = True
        elif not item.startswith(tuple(f + "=" for f in flags)):
            kept.append(item)
    return kept


def _print(rows: list[dict], args, overhead: float, calibration: dict) -> None:
    from distrain import collectives
    print(f"cost model, {collectives.size()} rank(s), batch {args.batch_size} per rank, "
          f"{args.steps} timed steps, median of {args.repeats} run(s) per model, compression "
          f"{args.compression}, overlap {'on' if args.overlap else 'off'}")
    print(f"  {'model':8s} {'phase':10s} {'predicted ms':>13s} {'measured ms':>12s}")
    for row in rows:
        for phase in PHASES + ("total",):
            print(f"  {row['model']:8s} {phase:10s} "
                  f"{row['predicted_ms'][phase]:13.3f} {row['measured_ms'][phase]:12.3f}")
        runs = ", ".join(f"{e:+.1f}" for e in row["run_errors_pct"])
        print(f"  {row['model']:8s} total error of each run: {runs} % "
              f"(median {row['median_run_error_pct']:+.1f} %)")
        for run, why in row["disturbed_runs"].items():
            print(f"  {row['model']:8s} run {run} disturbed: {'; '.join(why)}")
    errors = [abs(e) for r in rows for e in r["run_errors_pct"]]
    print(f"  over all {len(errors)} runs: median |error| {statistics.median(errors):.1f} %, "
          f"worst {max(errors):.1f} %; "
          f"{sum(len(r['disturbed_runs']) for r in rows)} run(s) disturbed")
    beta = calibration["beta_ns_per_byte"]
    rate = f" ({8 / beta:.2f} Gbit/s)" if beta > 0 else ""
    problem = f"; implausible: {calibration['problem']}" if calibration["problem"] else ""
    print(f"  calibration ({calibration['source']}): alpha {calibration['alpha_us']:.2f} us, "
          f"beta {beta:.4f} ns/byte{rate}{problem}")
    print(f"  timer overhead {overhead * 1e6:.2f} us per step", flush=True)
