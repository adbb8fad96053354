"""``python -m distrain.bench launch``: distrain-run's start-up overhead over bare mpirun.

Times ``distrain-run -np N python -c pass`` against ``mpirun -np N python -c pass`` (with the
root and oversubscription flags distrain-run would add), alternating, after one untimed run of
each: mpirun as found on PATH, distrain-run as the console script beside this interpreter
(``python -m distrain.run`` where there is none), and this interpreter as the program. Prints the median wall time of each, the overhead, the target
(0.3 s) and the largest resident set among each launch's processes; then, to show where the
overhead goes, the launcher's start-up alone (``distrain-run --version``) and what
``import distrain`` adds to a bare ``python -c pass``.

Example:
    python -m distrain.bench launch --runs 7 --json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

from distrain.cores import usable_cores
from distrain.run.command import LAUNCHER_NAME, launcher_argv

__all__ = ["main", "time_command", "TARGET_SECONDS"]

TARGET_SECONDS = 0.3


def time_command(argv: list[str]) -> tuple[float, int, int]:
    """Runs ``argv`` with its output discarded.

    Returns:
        ``(wall seconds, exit code, largest resident set in KiB among it and its waited-for
        descendants)``.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, proc.returncode, usage.ru_maxrss


def _commands(np_: int) -> dict[str, list[str]]:
    program = [sys.executable, "-c", "pass"]
    mpirun = shutil.which("mpirun") or shutil.which("mpiexec")
    script = os.path.join(os.path.dirname(sys.executable), LAUNCHER_NAME)
    if mpirun is None:
        raise SystemExit("bench launch: no mpirun on PATH")
    bare = [mpirun, "-np", str(np_)]
    if os.geteuid() == 0:
        bare.append("--allow-run-as-root")
    if np_ > usable_cores():
        bare.append("--oversubscribe")
    ours = [script] if os.access(script, os.X_OK) else launcher_argv()
    return {"mpirun": bare + program, "distrain-run": ours + ["-np", str(np_)] + program,
            "start-up": ours + ["--version"],
            "python": [sys.executable, "-c", "pass"],
            "import distrain": [sys.executable, "-c", "import distrain"]}


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; returns 0, or 1 if a launch failed."""
    p = argparse.ArgumentParser(prog="python -m distrain.bench launch",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--np", type=int, default=2, help="ranks (default 2)")
    p.add_argument("--runs", type=int, default=7, help="timed runs of each (default 7)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    commands = _commands(args.np)
    times: dict[str, list[float]] = {name: [] for name in commands}
    rss: dict[str, int] = {name: 0 for name in commands}
    for run in range(args.runs + 1):
        for name, command in commands.items():
            seconds, code, maxrss = time_command(command)
            if code != 0:
                print(f"bench launch: {' '.join(command)} exited with {code}", file=sys.stderr)
                return 1
            if run:
                times[name].append(seconds)
                rss[name] = max(rss[name], maxrss)
    median = {name: statistics.median(values) for name, values in times.items()}
    overhead = median["distrain-run"] - median["mpirun"]
    import_cost = median["import distrain"] - median["python"]
    result = {
        "np": args.np, "runs": args.runs,
        "mpirun_seconds": round(median["mpirun"], 4),
        "distrain_run_seconds": round(median["distrain-run"], 4),
        "overhead_seconds": round(overhead, 4),
        "target_seconds": TARGET_SECONDS,
        "within_target": overhead <= TARGET_SECONDS,
        "launcher_startup_seconds": round(median["start-up"], 4),
        "import_distrain_seconds": round(import_cost, 4),
        "mpirun_max_rss_mib": round(rss["mpirun"] / 1024, 1),
        "distrain_run_max_rss_mib": round(rss["distrain-run"] / 1024, 1),
        "commands": {name: " ".join(command) for name, command in commands.items()
                     if name in ("mpirun", "distrain-run")},
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"launch of python -c pass at np {args.np}, median of {args.runs} runs each")
    print(f"  mpirun        {median['mpirun']:.3f} s   (largest process "
          f"{result['mpirun_max_rss_mib']:.0f} MiB)")
    print(f"  distrain-run  {median['distrain-run']:.3f} s   (largest process "
          f"{result['distrain_run_max_rss_mib']:.0f} MiB)")
    print(f"  overhead      {overhead:+.3f} s   (target <= {TARGET_SECONDS} s: "
          f"{'met' if result['within_target'] else 'missed'})")
    print(f"  of which: distrain-run start-up {median['start-up']:.3f} s "
          f"(--version), of that import distrain {import_cost:.3f} s")
    return 0
