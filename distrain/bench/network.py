"""``python -m distrain.bench network``: training where the network is the bottleneck.

As root, makes ``--hosts`` network namespaces joined by links limited to ``--rate`` (``tc``
tbf on each host's sending; :mod:`distrain.bench.netns`), runs ``python -m distrain.bench
train`` there with one rank per host over TCP for each ``--compression``, without and with
overlap of the allreduce with backward (``--overlap``), and for each ``--backward-passes``
count (gradients of N passes accumulated locally, reduced once a step), ``--rounds`` times
interleaved (a busy spell of the shared host then falls on different settings), and prints per
setting the medians over rounds of rank 0's phases (data, compute, allreduce, apply), of the
slowest rank's step (with its range), of the allreduce's share of rank 0's step, of samples/s,
of the allreduce timed alone (the gradient list reduced back to back without training:
``python -m distrain.bench train``) and of its bus bandwidth (the ring's ``2 (n-1)/n`` of the
gradient bytes per second); then, round by round, the step with overlap over max(compute,
allreduce alone) and each compression's speed-up of the allreduce alone. Before the first
round and after the last it measures what TCP streams carry over the link, one way and both
ways at once (:func:`~distrain.bench.netns.measure_link`): a tbf on a VM holds less than its
rate where the VM's timers fire late.
Nothing here is timed by a test.

Usage::

    python -m distrain.bench network --model resnet --rate 1gbit
    python -m distrain.bench network --model cnn --rate 10gbit --compression none,fp16 --json
    python -m distrain.bench network --model resnet --compression none --overlap off \\
        --backward-passes 1,2,4,8

The host's own program (distrain-run) runs outside the namespaces; each rank gets
``--threads`` TensorFlow threads (default: the cores / hosts).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from distrain.bench.netns import (NamespaceHosts, describe_link, measure_link, parse_rate,
                                  rank_environment, requirements_problem, untagged)
from distrain.cores import threads_per_rank
from distrain.ops import COMPRESSIONS
from distrain.run.command import launcher_argv

__all__ = ["main", "bus_bandwidth"]


def bus_bandwidth(gradient_bytes: float, ranks: int, seconds: float,
                  wire_ratio: float = 1.0) -> float:
    """Bits per second each link carried for a ring allreduce of ``gradient_bytes``.

    Args:
        gradient_bytes: one rank's gradients, in their own dtype.
        ranks: the ring's size.
        seconds: the allreduce's time.
        wire_ratio: wire bytes per gradient byte (0.5 for fp16/bf16 of float32).

    Example:
        >>> bus_bandwidth(1e6, 2, 0.008)
        1000000000.0
    """
    if ranks < 2 or seconds <= 0:
        return 0.0
    return gradient_bytes * wire_ratio * 2 * (ranks - 1) / ranks * 8 / seconds


def _train(hosts: NamespaceHosts, args, compression: str, overlap: bool, passes: int,
           threads: int) -> dict:
    argv = [*launcher_argv(), "-np", str(len(hosts.addresses)), *hosts.launch_args(),
            "--start-timeout", "60", sys.executable, "-m", "distrain.bench", "train",
            "--model", args.model, "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--batch-size", str(args.batch_size), "--compression", compression, "--json",
            "--backward-passes", str(passes), *(["--overlap"] if overlap else []),
            *(["--image-size", str(args.image_size)] if args.image_size else [])]
    done = subprocess.run(argv, capture_output=True, text=True, env=rank_environment(threads),
                          timeout=args.timeout)
    if done.returncode != 0:
        raise RuntimeError(f"the {compression} run failed (exit {done.returncode}):\n"
                           f"{done.stderr[-2000:]}")
    for line in done.stdout.splitlines():
        text = untagged(line)
        if text.startswith("{"):
            return json.loads(text)
    raise RuntimeError(f"the {compression} run printed no figures:\n{done.stdout[-2000:]}")


def _summary(rows: list[dict], compressions: list[str], overlaps: list[bool],
             passes: list[int]) -> dict:
    """Per setting the medians over rounds; per round the overlap ratio, compression's
    speed-up of the allreduce and the allreduce's share of the step, with their medians and
    ranges."""
    def runs(compression, overlap, count):
        return [r for r in rows if (r["compression"], r["overlap"], r["backward_passes"]) ==
                (compression, overlap, count)]

    def spread(values):
        return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
                "max": round(max(values), 3), "runs": [round(v, 3) for v in values]}

    settings = []
    for count in passes:
        for compression in compressions:
            for overlap in overlaps:
                chosen = runs(compression, overlap, count)
                phases = {k: round(statistics.median(r["rank0_phase_ms"][k] for r in chosen),
                                   3) for k in chosen[0]["rank0_phase_ms"]}
                settings.append({
                    "compression": compression, "overlap": overlap, "backward_passes": count,
                    "phase_ms": phases,
                    "allreduce_alone_ms": spread([r["allreduce_alone_ms"] for r in chosen]),
                    "step_ms": spread([r["step_ms"] for r in chosen]),
                    "samples_per_s": spread([r["samples_per_s"] for r in chosen]),
                    # rank 0's exposed allreduce over its whole step, round by round
                    "allreduce_share": spread([r["rank0_phase_ms"]["allreduce"] /
                                               sum(r["rank0_phase_ms"].values())
                                               for r in chosen]),
                    "allreduce_gbit_s": round(statistics.median(
                        r["allreduce_gbit_s"] for r in chosen), 3)})
    ratios, speedups = {}, {}
    for count in passes:
        suffix = "" if len(passes) == 1 else f", {count} backward pass(es)"
        if overlaps == [False, True]:
            for compression in compressions:
                pairs = zip(runs(compression, False, count), runs(compression, True, count))
                # the bound: this round's compute, or the allreduce alone, whichever is longer
                ratios[compression + suffix] = spread([over["step_ms"] / max(
                    plain["rank0_phase_ms"]["compute"], plain["allreduce_alone_ms"])
                    for plain, over in pairs])
        if "none" in compressions:
            for compression in (c for c in compressions if c != "none"):
                pairs = zip(runs("none", overlaps[0], count),
                            runs(compression, overlaps[0], count))
                speedups[compression + suffix] = spread([
                    none["allreduce_alone_ms"] / narrow["allreduce_alone_ms"]
                    for none, narrow in pairs])
    return {"settings": settings, "overlap_ratio": ratios, "allreduce_speedup": speedups}


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints its figures.

    Returns:
        0; 2 for bad arguments or where namespaces cannot be made; 1 when a run failed.
    """
    p = argparse.ArgumentParser(prog="python -m distrain.bench network",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--hosts", type=int, default=2, help="hosts, one rank each (default 2)")
    p.add_argument("--rate", default="1gbit", help="each link's limit, e.g. 1gbit, 10gbit, "
                                                   "none (default 1gbit)")
    p.add_argument("--model", default="resnet")
    p.add_argument("--image-size", type=int, default=None, metavar="N",
                   help="images of N x N for the model (default: the model's own)")
    p.add_argument("--batch-size", type=int, default=32, help="per rank (default 32)")
    p.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps (default 3)")
    p.add_argument("--compression", default="none,fp16,bf16",
                   help="comma-separated, each its own run (default none,fp16,bf16)")
    p.add_argument("--overlap", default="off,on",
                   help="off, on or off,on: each its own run (default off,on)")
    p.add_argument("--backward-passes", default="1", metavar="N[,N...]",
                   help="backward passes per step, each its own run (default 1): the "
                        "allreduce's share of the step falls as N grows")
    p.add_argument("--rounds", type=int, default=3,
                   help="times every setting runs, interleaved (default 3)")
    p.add_argument("--threads", type=int, default=None,
                   help="TensorFlow threads per rank (default: cores / hosts)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per run (default 900)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    compressions = [c.strip() for c in args.compression.split(",") if c.strip()]
    try:
        bits = parse_rate(args.rate)
    except ValueError as exc:
        p.error(str(exc))
    if args.hosts < 2 or any(c not in COMPRESSIONS for c in compressions) or not compressions:
        p.error(f"--hosts must be at least 2 and --compression from {', '.join(COMPRESSIONS)}")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    overlaps = [{"off": False, "on": True}.get(o.strip()) for o in args.overlap.split(",")]
    if not overlaps or None in overlaps or len(set(overlaps)) != len(overlaps):
        p.error(f"--overlap must be off, on or off,on, not {args.overlap!r}")
    overlaps.sort()
    try:
        passes = [int(n) for n in args.backward_passes.split(",")]
    except ValueError:
        passes = []
    if not passes or min(passes) < 1:
        p.error(f"--backward-passes must be positive integers separated by commas, not "
                f"{args.backward_passes!r}")
    problem = requirements_problem()
    if problem:
        print(f"distrain.bench network: {problem}", file=sys.stderr)
        return 2
    threads = args.threads or threads_per_rank(args.hosts)
    plan = [(c, o, n) for n in passes for c in compressions for o in overlaps]
    rows = []
    with NamespaceHosts(args.hosts, None if bits is None else args.rate) as hosts:
        links = [measure_link(hosts)]
        for number in range(args.rounds):
            # each round runs every setting, in reversed order every other round, so that a
            # slow spell of the shared host falls on different settings
            for compression, overlap, count in (plan if number % 2 == 0 else plan[::-1]):
                if not args.json:
                    print(f"  round {number + 1}/{args.rounds}: {compression}, "
                          f"overlap {'on' if overlap else 'off'}, {count} backward pass(es)",
                          file=sys.stderr, flush=True)
                try:
                    figures = _train(hosts, args, compression, overlap, count, threads)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    print(f"distrain.bench network: {exc}", file=sys.stderr)
                    return 1
                wire = 1.0 if compression == "none" else 0.5
                figures.update(compression=compression, round=number + 1)
                figures["allreduce_gbit_s"] = round(bus_bandwidth(
                    figures["gradient_bytes"], args.hosts,
                    figures["allreduce_alone_ms"] / 1e3, wire) / 1e9, 3)
                rows.append(figures)
        links.append(measure_link(hosts))
    rows.sort(key=lambda r: (plan.index((r["compression"], r["overlap"],
                                         r["backward_passes"])), r["round"]))
    result = {"hosts": args.hosts, "rate": args.rate, "model": args.model,
              "threads_per_rank": threads, "rounds": args.rounds, "link_gbit_s": links,
              "runs": rows,
              **_summary(rows, compressions, overlaps, passes)}
    if args.json:
        print(json.dumps(result), flush=True)
        return 0
    _print(result, args)
    return 0


def _print(result: dict, args) -> None:
    rows = result["runs"]
    print(f"network {args.model}: {args.hosts} hosts, links {args.rate}, "
          f"{result['threads_per_rank']} thread(s) per rank, batch {args.batch_size} per rank, "
          f"{args.steps} timed steps, {args.rounds} round(s); gradients "
          f"{rows[0]['gradient_bytes'] / 1e6:.1f} MB")
    before, after = result["link_gbit_s"]
    print(f"  the link before the runs: {describe_link(before)}; after: {describe_link(after)}")
    print(f"  {'compression':11s} {'overlap':7s} {'passes':>6s} {'data':>7s} {'compute':>8s} "
          f"{'allreduce':>10s} {'apply':>7s} {'step':>8s} {'step range':>15s} {'share':>6s} "
          f"{'samples/s':>9s} {'alone':>7s} {'bus Gbit/s':>11s}")
    for row in result["settings"]:
        ph, step = row["phase_ms"], row["step_ms"]
        overlap = "yes" if row["overlap"] else "no"
        print(f"  {row['compression']:11s} {overlap:7s} {row['backward_passes']:6d} "
              f"{ph['data']:7.2f} {ph['compute']:8.2f} {ph['allreduce']:10.2f} "
              f"{ph['apply']:7.2f} {step['median']:8.2f} {step['min']:7.2f}-{step['max']:<7.2f} "
              f"{row['allreduce_share']['median']:6.1%} {row['samples_per_s']['median']:9.1f} "
              f"{row['allreduce_alone_ms']['median']:7.2f} {row['allreduce_gbit_s']:11.3f}")
    print("  (ms: medians over rounds of rank 0's medians; step: of the slowest rank's median; "
          "with overlap the allreduce column is the part left exposed after backward, which "
          "includes waiting for the slower rank; share: rank 0's allreduce phase over its "
          "step, median over rounds; passes: backward passes per step, each of the batch; "
          "alone: the gradients' allreduce timed without training, the slowest rank's "
          "median; bus Gbit/s: of the allreduce alone)")
    for compression, ratio in result["overlap_ratio"].items():
        print(f"  {compression}: step with overlap / max(compute, allreduce alone) = "
              f"{ratio['median']:.2f} (rounds {', '.join(f'{v:.2f}' for v in ratio['runs'])})")
    for compression, speedup in result["allreduce_speedup"].items():
        print(f"  {compression}: allreduce alone, none / {compression} = {speedup['median']:.2f}x "
              f"(rounds {', '.join(f'{v:.2f}' for v in speedup['runs'])})", flush=True)
