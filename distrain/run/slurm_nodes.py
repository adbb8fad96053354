"""``python -m distrain.run.slurm_nodes``: a Slurm job's nodes, as launch/slurm.sbatch needs them.

Run inside a job (its batch script or an ``salloc`` shell); every fact comes from Slurm: the
variables it gives the job (``SLURM_JOB_NODELIST``, ``SLURM_TASKS_PER_NODE``), ``scontrol show
hostnames``/``show nodes``/``show config``, and ``sinfo`` output in the fields asked for.

The job's nodes are taken in the order of slurmctld's node table (``scontrol -o show nodes``),
the order in which Slurm allocates them, starts the batch script on the first and fills them
with a step's tasks (``--distribution=block``): not the order of the node list it gives the
job, which is sorted by name (on a cluster of dynamic nodes ``node_3`` registered first held
ranks 0-1 of ``node_[1,3]``).

Usage::

    python -m distrain.run.slurm_nodes hosts [--live]
    python -m distrain.run.slurm_nodes lost CODE

``hosts``
    One ``node:slots`` line a node of the job, in the job's node order, slots = the tasks
    Slurm gave that node: ``distrain-run -H`` (joined with commas), or a
    ``--host-discovery-script``.
``hosts --live``
    The same, for the nodes the job holds now and whose slurmd answers: a node that went
    away is left out at once (its slurmd does not answer), and stays out after it comes back
    (a job started with ``--no-kill`` loses the node when Slurm marks it down, and the job's
    node list in ``scontrol -o show job`` no longer names it). distrain-run's
    ``--host-discovery-script`` for an elastic job in an allocation.
``lost CODE``
    After ``srun --distribution=block`` of distrain's ranks ended with exit code ``CODE``:
    asks every node of the job whether its slurmd answers (a TCP connection to its address
    and ``SlurmdPort``, :data:`CONNECT_TIMEOUT` seconds, every node at once), and prints one
    line naming the ranks srun placed on each node that does not, e.g.
    ``distrain: ranks 2, 3 on node node_2 were lost: its slurmd (10.0.0.3:6818) does not
    answer (srun ended with exit code 14)``. Prints nothing when every node answers (a rank's
    own failure, which it reported itself). Exits 0 either way.

Example:
    >>> block_ranks(["n3", "n1"], "2(x2)")
    {'n3': [0, 1], 'n1': [2, 3]}
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import socket
import subprocess
import sys
from typing import Mapping

from distrain import environment as env
from distrain.errors import UsageError
from distrain.run.hosts import Host

__all__ = ["main", "table_order", "job_nodes", "job_hosts", "live_hosts", "block_ranks",
           "answers", "lost_line",
           "CONNECT_TIMEOUT", "SLURMD_PORT"]

CONNECT_TIMEOUT = 2.0
SLURMD_PORT = 6818           # Slurm's default SlurmdPort
COMMAND_TIMEOUT = 30.0


def _slurm(*argv: str) -> str:
    """The stdout of a Slurm command.

    Raises:
        UsageError: it cannot run or fails.
    """
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"{argv[0]}: {exc}") from None
    if done.returncode != 0:
        raise UsageError(f"{' '.join(argv)}: exit code {done.returncode}: "
                         f"{done.stderr.strip()[-300:]}")
    return done.stdout


def hostnames(nodelist: str) -> list[str]:
    """A compressed node list (``node_[1-3]``) expanded by ``scontrol show hostnames``."""
    return _slurm("scontrol", "show", "hostnames", nodelist).split() if nodelist else []


def table_order() -> list[str]:
    """Every node's name in the order of slurmctld's node table (``scontrol -o show nodes``,
    one ``NodeName=...`` line a node)."""
    return [line.split()[0].partition("=")[2] for line in
            _slurm("scontrol", "-o", "show", "nodes").splitlines()
            if line.startswith("NodeName=")]


def job_nodes(environ: Mapping[str, str]) -> list[str]:
    """The job's nodes, in Slurm's node-table order (see the module's docstring).

    Raises:
        UsageError: not inside a Slurm job.
    """
    nodelist = environ.get(env.SLURM_JOB_NODELIST)
    if not nodelist:
        raise UsageError(f"{env.SLURM_JOB_NODELIST} is not set: run inside a Slurm job")
    nodes = hostnames(nodelist)
    order = {name: index for index, name in enumerate(table_order())}
    return sorted(nodes, key=lambda node: order.get(node, len(order)))


def _tasks_per_node(environ: Mapping[str, str], nodes: list[str]) -> str:
    """``SLURM_TASKS_PER_NODE``, else ``--ntasks-per-node`` (or 1) for every node."""
    each = environ.get(env.SLURM_NTASKS_PER_NODE) or "1"
    return environ.get(env.SLURM_TASKS_PER_NODE) or f"{each}(x{len(nodes)})"


def job_hosts(environ: Mapping[str, str]) -> list[Host]:
    """The job's nodes, each with the tasks Slurm gave it as its slots."""
    nodes = job_nodes(environ)
    spec = _tasks_per_node(environ, nodes)
    return [Host(node, env.tasks_per_node(spec, index)) for index, node in enumerate(nodes)]


def _held_now(environ: Mapping[str, str]) -> set[str]:
    """The nodes the job holds now (``NodeList`` of ``scontrol -o show job``)."""
    job = environ.get(env.SLURM_JOB_ID)
    if not job:
        raise UsageError(f"{env.SLURM_JOB_ID} is not set: run inside a Slurm job")
    found = re.search(r"(?:^|\s)NodeList=(\S+)", _slurm("scontrol", "-o", "show", "job", job))
    return set(hostnames(found[1])) if found and found[1] != "(null)" else set()


def live_hosts(environ: Mapping[str, str]) -> list[Host]:
    """The job's hosts (:func:`job_hosts`) that it holds now and whose slurmd answers."""
    held = _held_now(environ)
    hosts = [host for host in job_hosts(environ) if host.name in held]
    silent = _silent([host.name for host in hosts])
    return [host for host in hosts if host.name not in silent]


def block_ranks(nodes: list[str], tasks_per_node: str) -> dict[str, list[int]]:
    """Each node's ranks under ``srun --distribution=block``: consecutive ranks fill the
    nodes in order, each node the number of tasks ``SLURM_TASKS_PER_NODE`` gives it."""
    placed, rank = {}, 0
    for index, node in enumerate(nodes):
        count = env.tasks_per_node(tasks_per_node, index)
        placed[node] = list(range(rank, rank + count))
        rank += count
    return placed


def _addresses(nodes: list[str]) -> dict[str, str]:
    """Each node's address as slurmctld knows it (``sinfo`` field ``%o``, NodeAddr)."""
    listing = _slurm("sinfo", "-h", "-N", "-n", ",".join(nodes), "-o", "%N %o")
    return dict(line.split()[:2] for line in listing.splitlines() if len(line.split()) >= 2)


def slurmd_port() -> int:
    """``SlurmdPort`` of the cluster's configuration (``scontrol show config``)."""
    try:
        listing = _slurm("scontrol", "show", "config")
    except UsageError:
        return SLURMD_PORT
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "SlurmdPort" and value.strip().isdigit():
            return int(value.strip())
    return SLURMD_PORT


def answers(address: str, port: int, timeout: float = CONNECT_TIMEOUT) -> bool:
    """Whether a TCP connection to ``address:port`` opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def lost_line(placed: Mapping[str, list[int]], silent: Mapping[str, str], code: int) -> str:
    """The line naming the ranks on the nodes whose slurmd did not answer, or ``""``.

    Args:
        placed: node -> its ranks.
        silent: node -> ``address:port`` of each node that did not answer.
        code: srun's exit code.

    Example:
        >>> lost_line({"a": [0, 1], "b": [2, 3]}, {"b": "10.0.0.3:6818"}, 14)
        'distrain: ranks 2, 3 on node b were lost: its slurmd (10.0.0.3:6818) does not answer (srun ended with exit code 14)'
    """
    parts, count = [], 0
    for node in silent:
        ranks = placed.get(node, [])
        if ranks:
            count += len(ranks)
            parts.append(f"{'rank' if len(ranks) == 1 else 'ranks'} "
                         f"{', '.join(map(str, ranks))} on node {node}")
    if not parts:
        return ""
    one = len(silent) == 1
    return (f"distrain: {'; '.join(parts)} {'was' if count == 1 else 'were'} lost: "
            f"{'its slurmd' if one else 'their slurmds'} ({', '.join(silent.values())}) "
            f"{'does' if one else 'do'} not answer (srun ended with exit code {code})")


def _silent(nodes: list[str]) -> dict[str, str]:
    """``address:port`` of each of ``nodes`` whose slurmd does not answer (asked at once)."""
    if not nodes:
        return {}
    addresses, port = _addresses(nodes), slurmd_port()
    where = {node: addresses.get(node, node) for node in nodes}
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        alive = dict(zip(nodes, pool.map(lambda node: answers(where[node], port), nodes)))
    return {node: f"{where[node]}:{port}" for node in nodes if not alive[node]}


def _lost(environ: Mapping[str, str], code: int) -> str:
    nodes = job_nodes(environ)
    placed = block_ranks(nodes, _tasks_per_node(environ, nodes))
    return lost_line(placed, _silent(nodes), code)


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Runs one subcommand (see the module's docstring).

    Returns:
        0; 2 for bad arguments or outside a Slurm job (one line on stderr).
    """
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="python -m distrain.run.slurm_nodes",
                                     description="A Slurm job's nodes, for launch/slurm.sbatch.")
    sub = parser.add_subparsers(dest="what", required=True)
    hosts = sub.add_parser("hosts", help="node:slots of every node of the job")
    hosts.add_argument("--live", action="store_true",
                       help="only the nodes the job holds now whose slurmd answers")
    lost = sub.add_parser("lost", help="name the ranks on nodes whose slurmd does not answer")
    lost.add_argument("code", type=int, help="srun's exit code")
    args = parser.parse_args(argv)
    try:
        if args.what == "hosts":
            for host in (live_hosts if args.live else job_hosts)(environ):
                print(f"{host.name}:{host.slots}")
        else:
            line = _lost(environ, args.code)
            if line:
                print(line, file=sys.stderr, flush=True)
    except (UsageError, env.WorldError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
