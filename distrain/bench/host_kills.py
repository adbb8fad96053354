"""``python -m distrain.bench elastic``: how an elastic job lives through hosts killed at random.

As root, makes ``--hosts`` network namespaces (:mod:`distrain.bench.netns`) listed by a
discovery script, and runs one elastic job on them (``distrain-run --min-np M --max-np N``)
of :mod:`distrain.bench.elastic_program`, a Horovod-style ``hvd.elastic`` loop that commits
every ``--commit-every`` steps. ``--kills`` times, at a random moment while it trains, every
process of a random host running a rank is SIGKILLed; the host stays listed, so it is left out
for the cool-down and then joins again. After each kill the benchmark reads the commit file
(it must always load), and waits for the relaunch to restore. At the end it asks the job to
stop and checks that it finished and that every rank holds the same weights.

Printed per kill (from the program's progress file, which keeps what a killed rank 0 wrote
where its output may be lost): the host, the last step done and the last commit before the
relaunch, the step it restored, and the work lost (steps done again); then the worst and median loss
against the commit interval, unreadable commits, launches and the total time. It asserts
nothing about time.

Usage::

    python -m distrain.bench elastic --kills 20 --hosts 3 --commit-every 10
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from distrain import environment as env
from distrain.bench.netns import NamespaceHosts, rank_environment, requirements_problem, untagged
from distrain.run.command import launcher_argv

__all__ = ["main", "Events", "losses"]

_LINE = re.compile(r"elastic-bench (step|commit|restored) (\d+)")
_HOSTS = re.compile(r"distrain-run: elastic: (?:\d+ -> )?\d+ ranks on (\S+?),? ")


class Events:
    """What the job's output says, as it says it: rank 0's steps, commits and restores, and
    the hosts of each launch (read in a thread)."""

    def __init__(self, stream):
        self.cond = threading.Condition()
        self.step = self.commit = 0
        self.restored: list[int] = []
        self.hosts: list[str] = []
        self.launches = 0
        self.tail: list[str] = []
        self.rows: list[dict] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            with self.cond:
                self.tail = (self.tail + [line.rstrip()])[-40:]
                found = _LINE.search(line)
                if found:
                    kind, value = found[1], int(found[2])
                    if kind == "restored":
                        self.restored.append(value)
                        self.step = value
                    else:
                        setattr(self, kind, value)
                hosts = _HOSTS.search(line)
                if hosts:
                    self.hosts = [h.split(":")[0] for h in hosts[1].split(",")]
                    self.launches += 1
                text = untagged(line).strip()
                if text.startswith("{"):
                    self.rows.append(json.loads(text))
                self.cond.notify_all()

    def wait(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"no {what} in {timeout:g} s; the job's last lines:\n"
                                       + "\n".join(self.tail))
                self.cond.wait(min(left, 0.5))

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def losses(progress: str, killed_at: float) -> dict:
    """What a kill at ``killed_at`` cost, from the program's progress file (which keeps what
    a killed rank 0 wrote, where its output may be lost): the last step and commit before the
    first restore after the kill, that restore, and the steps done again."""
    entries = []
    with open(progress) as stream:
        for line in stream:
            when, kind, step = line.split()
            entries.append((float(when), kind, int(step)))
    restore = next((e for e in entries if e[1] == "restored" and e[0] > killed_at), None)
    if restore is None:
        raise RuntimeError(f"no restore after the kill at {killed_at:.3f}")
    before = [e for e in entries if e[0] < restore[0]]
    step = max((e[2] for e in before if e[1] == "step"), default=0)
    commit = max((e[2] for e in before if e[1] == "commit"), default=0)
    return {"step": step, "commit": commit, "restored": restore[2],
            "lost": step - restore[2]}


def _readable(path: str) -> bool:
    import numpy as np
    try:
        with np.load(path, allow_pickle=False) as data:
            for key in data.files:
                data[key]
        return True
    except Exception:
        return False


def _run(args, hosts: NamespaceHosts, work: str) -> dict:
    listing = os.path.join(work, "hosts.txt")
    with open(listing, "w") as stream:
        stream.write("".join(f"{address}:1\n" for address in hosts.addresses))
    state, stop = os.path.join(work, "state"), os.path.join(work, "stop")
    progress = os.path.join(work, "progress.log")
    argv = [*launcher_argv(), "--min-np", str(args.min_np), "--max-np", str(args.hosts),
            "--host-discovery-script", f"cat {listing}", "--blacklist-cooldown",
            str(args.cooldown), "--elastic-timeout", "300", *hosts.mpi_flags(),
            sys.executable, "-m", "distrain.bench.elastic_program", "--commit-every",
            str(args.commit_every), "--pause", str(args.pause), "--stop-file", stop,
            "--progress", progress]
    child = rank_environment(1, **{env.ELASTIC_DIR: state})
    chance = random.Random(args.seed)
    began = time.monotonic()
    proc = subprocess.Popen(argv, env=child, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    events = Events(proc.stdout)
    kills, unreadable = [], 0
    try:
        for number in range(1, args.kills + 1):
            while True:         # kill while it trains: steps went on during the wait
                events.wait(lambda: events.step > (events.restored[-1] if events.restored
                                                   else 0) and events.hosts, 300,
                            "training step")
                before, launches = events.step, events.launches
                time.sleep(chance.uniform(args.min_wait, args.max_wait))
                with events.cond:     # no relaunch (a resize) meanwhile, and steps went on
                    if events.step > before + 1 and events.launches == launches:
                        victim = chance.choice(events.hosts)
                        seen = len(events.restored)
                        break
            killed_at = time.time()
            hosts.kill_host(hosts.addresses.index(victim))
            path = os.path.join(state, "state.npz")
            if os.path.exists(path) and not _readable(path):
                unreadable += 1
            events.wait(lambda: len(events.restored) > seen, 300, "restore after the kill")
            kills.append({"kill": number, "host": victim, "time": killed_at})
        events.wait(lambda: events.step > events.restored[-1], 300, "training step")
        open(stop, "w").close()
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events.join(10)
    kills = [dict(kill, **losses(progress, kill["time"])) for kill in kills]
    digests = {row["digest"] for row in events.rows}
    final = os.path.join(state, "state.npz")
    return {"kills": kills, "exit_code": code, "finished": code == 0 and len(digests) == 1
            and len(events.rows) >= args.min_np, "ranks_at_end": len(events.rows),
            "unreadable_commits": unreadable + (0 if _readable(final) else 1),
            "launches": events.launches, "seconds": round(time.monotonic() - began, 1),
            "commit_every": args.commit_every,
            "worst_lost": max((k["lost"] for k in kills), default=0),
            "median_lost": statistics.median([k["lost"] for k in kills]) if kills else 0}


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints its figures.

    Returns:
        0 when the job finished; 1 when it did not or a kill was not recovered from; 2 where
        namespaces cannot be made.
    """
    p = argparse.ArgumentParser(prog="python -m distrain.bench elastic",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--hosts", type=int, default=3)
    p.add_argument("--min-np", type=int, default=2)
    p.add_argument("--commit-every", type=int, default=10, help="steps between commits")
    p.add_argument("--pause", type=float, default=0.03, help="seconds each step sleeps")
    p.add_argument("--cooldown", type=float, default=2.0, help="--blacklist-cooldown")
    p.add_argument("--min-wait", type=float, default=1.0,
                   help="seconds of training before a kill, at least")
    p.add_argument("--max-wait", type=float, default=6.0, help="... and at most")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.hosts < 2 or not 1 <= args.min_np < args.hosts or args.kills < 1:
        p.error("--hosts must be at least 2, --min-np below it, --kills at least 1")
    problem = requirements_problem()
    if problem:
        print(f"distrain.bench elastic: {problem}", file=sys.stderr)
        return 2
    if not args.json:
        print(f"elastic: {args.kills} random host kills, {args.hosts} hosts, --min-np "
              f"{args.min_np}, a commit every {args.commit_every} steps", flush=True)
    work = tempfile.mkdtemp(prefix="distrain-bench-elastic-")
    with NamespaceHosts(args.hosts) as hosts:
        try:
            result = _run(args, hosts, work)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"distrain.bench elastic: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        for kill in result["kills"]:
            print(f"  kill {kill['kill']:2d}: host {kill['host']:15s} last step "
                  f"{kill['step']:5d}, last commit {kill['commit']:5d}, restored "
                  f"{kill['restored']:5d}, lost {kill['lost']:3d} steps")
        print(f"  job finished: {'yes' if result['finished'] else 'NO'} (exit "
              f"{result['exit_code']}, {result['ranks_at_end']} ranks at the end, one set of "
              f"weights); {result['launches']} launches in {result['seconds']:.0f} s")
        print(f"  work lost per kill: worst {result['worst_lost']} steps, median "
              f"{result['median_lost']:g} (commit interval {args.commit_every}); unreadable "
              f"commits: {result['unreadable_commits']}", flush=True)
    return 0 if result["finished"] else 1
