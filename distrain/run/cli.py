"""distrain-run: start a data-parallel job on one or many hosts, and never let it hang.

Usage::

    distrain-run -np 4 python train.py --epochs 3
    distrain-run -np 4 -H node1:2,node2:2 python train.py
    distrain-run -np 8 --hostfile hosts.txt --max-restarts 2 python -m distrain.train --resume
    python -m distrain.run --check-build

A horovodrun command line works with the name changed: ``-np``, ``-H``, ``--hostfile``
(``host slots=N`` lines; ``#`` comments), ``-p/--ssh-port``, ``-i/--ssh-identity-file``,
``--network-interfaces``, ``--output-filename DIR`` (``DIR/rank.N.log``),
``--start-timeout``, ``--verbose``, ``--mpi-args "..."``, ``--host-discovery-script`` and
``--check-build``. Beyond them:
``-x NAME[=VALUE]``, ``--oversubscribe``, ``--heartbeat-timeout``,
``--stall-warning-seconds``, ``--stall-shutdown-seconds`` and ``--max-restarts``.

distrain-run finds ``mpirun`` (or ``mpiexec``) on PATH, reads its vendor from ``mpirun
--version`` (Open MPI 4, Open MPI 5, MPICH/Hydra) and builds the command as an argument list
from that vendor's flag table. As root it allows Open MPI to run as root. It oversubscribes
when asked, or, without ``-H``/``--hostfile``, when ``-np`` exceeds this machine's cores (with
a warning); with hosts, ``-np`` above their slots is an error.

Environment every rank gets:
    - distrain-run's whole environment (``-x NAME`` per variable), except variables the MPI
      launcher sets itself (``OMPI_*``, ``PMIX_*``, ``PRTE_*``, ``PMI_*``, ...) and shell
      state (``PWD``, ``SHLVL``, ...); ``-x NAME=VALUE`` sets a value, ``-x NAME`` forwards a
      variable even from that list;
    - the launcher's rank variables (``OMPI_COMM_WORLD_RANK``..., or ``PMI_RANK``...), which
      ``distrain.init()`` reads;
    - ``DISTRAIN_LAUNCHER=distrain-run``;
    - ``OMP_NUM_THREADS`` and ``TF_NUM_INTRAOP_THREADS`` = max(1, cores // ranks on that
      host), computed on each host, unless already set;
    - ``GLIBC_TUNABLES`` with ``glibc.malloc.hugetlb=1`` added unless it names that tunable
      (tensors on transparent huge pages, which MPI's shared-memory path reads faster);
    - ``DISTRAIN_STALL_WARNING_SECONDS`` / ``DISTRAIN_STALL_SHUTDOWN_SECONDS`` when
      ``--stall-warning-seconds`` / ``--stall-shutdown-seconds`` are given;
    - ``DISTRAIN_RESTART_COUNT=k`` on the k-th relaunch only (programs treat it as
      ``--resume``).
    - inside a Slurm job (``SLURM_JOB_ID`` set), ``SLURM_OVERLAP=1`` unless set, for the
      ``srun`` that starts mpirun's daemons: a relaunch after a lost node may then start
      while the step of the launch that lost it is still open (see docs/slurm.md).

Output: every line is tagged with its rank, ``[1]<stdout>: ...``; rank 0's progress bar
(text ended by ``\\r``) is redrawn in place on one line; other ranks show only final lines.

Hosts from a script: ``--host-discovery-script SCRIPT`` (or ``DISTRAIN_HOST_DISCOVERY_SCRIPT``
when neither ``-H`` nor ``--hostfile`` is given) runs SCRIPT before every launch and relaunch;
it prints ``host:slots`` lines, and distrain-run waits up to ``--start-timeout`` for ``-np``
slots (without ``-np``: all the first answer lists), so a relaunch waits for a lost host to
come back (see :mod:`distrain.run.discovery`).

When something fails:
    - a rank exits non-zero: the other ranks are stopped within 10 s and distrain-run exits
      with that rank's exit code (128+N if killed by signal N), naming the rank, its host and
      the last lines of its stderr;
    - Ctrl-C or SIGTERM: every rank is stopped, no process of the job remains; exit 130 or
      143 (a second Ctrl-C kills at once);
    - a rank not started within ``--start-timeout`` (30 s), or silent (no output, no
      heartbeat) for ``--heartbeat-timeout`` (60 s; a host down or cut off): the job is
      stopped, naming the ranks and hosts; exit 124;
    - ranks waiting in a collective for others: the stall inspector (rank side) names the
      missing ranks after ``--stall-warning-seconds`` (60) and aborts the job after
      ``--stall-shutdown-seconds`` (default: never);
    - ``--max-restarts N``: after any of the failures above (not Ctrl-C/SIGTERM), the whole
      job is relaunched, at most N times, each restart logged.

Elastic jobs: ``--min-np N --max-np M --host-discovery-script SCRIPT`` relaunch the job on
the hosts still listed, from its last checkpoint, when a host fails (the host is left out for
``--blacklist-cooldown`` seconds), and grow it at its next checkpoint when the script lists
new hosts; below ``--min-np`` for ``--elastic-timeout`` seconds the job ends (exit 124),
naming the hosts lost. See :mod:`distrain.run.relaunch` and docs/elastic.md.

Bad input (malformed ``-H`` or hostfile, ``-np`` above the slots, a missing program, an
unknown flag, no mpirun): one line on stderr naming the problem, exit code 2, nothing started.

See docs/launcher.md for recipes (one host, a hostfile, Slurm, Kubeflow's MPI Operator).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from distrain import environment as env
from distrain.errors import UsageError
from distrain.protocol import ExitCode

__all__ = ["main", "build_parser", "config_from_args"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message}; see distrain-run --help")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (flags only; the config is built by :func:`config_from_args`,
    and its defaults are :class:`~distrain.run.config.LaunchConfig`'s)."""
    from distrain.run.config import LaunchConfig
    default = {f.name: f.default for f in dataclasses.fields(LaunchConfig)}
    p = _Parser(prog="distrain-run", allow_abbrev=False,
                usage="distrain-run [options] -np N PROGRAM [ARGS...]",
                description="Start a data-parallel distrain job over MPI, with fail-fast "
                            "supervision.",
                epilog="Every rank's output is tagged [rank]<stream>. A failed rank stops the "
                       "job within 10 s (exit code: the rank's); Ctrl-C/SIGTERM stop every "
                       "rank (130/143); timeouts exit 124; bad input exits 2. Manual: "
                       "python -c 'import distrain.run.cli as c; help(c)' or docs/launcher.md.")
    p.add_argument("--version", action="store_true", help="print distrain's version")
    p.add_argument("--check-build", action="store_true",
                   help="print versions of distrain, TensorFlow, mpi4py, the MPI library and "
                        "launcher, and which backends work")
    p.add_argument("-np", "--num-proc", dest="np", type=int, metavar="N",
                   help="number of ranks (default: the hosts' total slots)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("-H", "--hosts", metavar="HOST:SLOTS,...",
                       help="hosts and slots, e.g. node1:2,node2:2 (default: this machine)")
    where.add_argument("-hostfile", "--hostfile", metavar="FILE",
                       help="file of 'host slots=N' lines")
    where.add_argument("--host-discovery-script", metavar="SCRIPT",
                       help="a command printing host:slots lines, asked before every launch; "
                            "waits up to --start-timeout for -np slots (default: "
                            "$DISTRAIN_HOST_DISCOVERY_SCRIPT when neither -H nor --hostfile "
                            "is given)")
    p.add_argument("--oversubscribe", action="store_true",
                   help="allow more ranks than slots")
    p.add_argument("-p", "--ssh-port", type=int, metavar="PORT", help="ssh port of the hosts")
    p.add_argument("-i", "--ssh-identity-file", metavar="FILE", help="ssh private key")
    p.add_argument("--network-interfaces", metavar="IF,...",
                   help="interfaces or CIDR networks for MPI traffic, e.g. eth0 or "
                        "10.0.0.0/24")
    p.add_argument("--output-filename", metavar="DIR",
                   help="also write each rank's output to DIR/rank.N.log")
    p.add_argument("--start-timeout", type=float, default=default["start_timeout"],
                   metavar="S", help=f"seconds for every rank to start (default "
                                     f"{default['start_timeout']:g})")
    p.add_argument("--heartbeat-timeout", type=float, default=default["heartbeat_timeout"],
                   metavar="S", help=f"stop the job when a rank is silent this long: host down "
                                     f"or cut off (default {default['heartbeat_timeout']:g}; "
                                     f"0 never)")
    p.add_argument("--stall-warning-seconds", type=float, metavar="S",
                   help="export DISTRAIN_STALL_WARNING_SECONDS: name ranks missing from a "
                        "collective after S seconds (distrain's default 60)")
    p.add_argument("--stall-shutdown-seconds", type=float, metavar="S",
                   help="export DISTRAIN_STALL_SHUTDOWN_SECONDS: abort the job when a "
                        "collective stalls S seconds (distrain's default: never)")
    p.add_argument("--max-restarts", type=int, default=default["max_restarts"], metavar="N",
                   help="relaunch a failed job at most N times, with DISTRAIN_RESTART_COUNT")
    elastic = p.add_argument_group("elastic jobs (docs/elastic.md)")
    elastic.add_argument("--min-np", type=int, metavar="N",
                         help="run on no fewer than N ranks; with --host-discovery-script, "
                              "the job carries on at a new size when hosts leave or join")
    elastic.add_argument("--max-np", type=int, metavar="N",
                         help="grow to at most N ranks as discovery lists new hosts")
    elastic.add_argument("--elastic-timeout", type=float, default=default["elastic_timeout"],
                         metavar="S", help=f"end the job after S seconds below --min-np "
                                           f"(default {default['elastic_timeout']:g})")
    elastic.add_argument("--blacklist-cooldown", type=float,
                         default=default["blacklist_cooldown"], metavar="S",
                         help=f"leave a failed host out for S seconds, doubled on each "
                              f"further failure of that host, up to 16x "
                              f"(default {default['blacklist_cooldown']:g})")
    elastic.add_argument("--reset-limit", type=int, metavar="N",
                         help="relaunch an elastic job at most N times after failures "
                              "(default: no limit)")
    p.add_argument("-x", dest="env", action="append", default=[], metavar="NAME[=VALUE]",
                   help="forward NAME, or set it to VALUE, on every rank (repeatable; the "
                        "whole environment is forwarded by default)")
    p.add_argument("--mpi-args", default="", metavar='"ARGS"',
                   help="extra arguments for mpirun, passed through")
    p.add_argument("--verbose", action="store_true", help="print the mpirun command")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="PROGRAM [ARGS...]",
                   help="the program every rank runs")
    return p


def config_from_args(ns: argparse.Namespace, environ=None):
    """Builds the :class:`~distrain.run.config.LaunchConfig` from parsed flags.

    Args:
        ns: the parsed flags.
        environ: where ``DISTRAIN_HOST_DISCOVERY_SCRIPT`` is read, the default of
            ``--host-discovery-script``; ``os.environ`` when None.

    Raises:
        UsageError: a malformed host list or hostfile, or an invalid combination.
    """
    from distrain.run.config import LaunchConfig
    from distrain.run.hosts import parse_hosts, read_hostfile
    command = ns.command[1:] if ns.command[:1] == ["--"] else ns.command
    discovery = ns.host_discovery_script
    if discovery is None and not (ns.hosts or ns.hostfile):
        discovery = (os.environ if environ is None else environ).get(
            env.HOST_DISCOVERY_SCRIPT) or None
    hosts = parse_hosts(ns.hosts) if ns.hosts else (
        read_hostfile(ns.hostfile) if ns.hostfile else ())
    return LaunchConfig(
        command=tuple(command), np=ns.np, hosts=hosts, oversubscribe=ns.oversubscribe,
        ssh_port=ns.ssh_port, ssh_identity_file=ns.ssh_identity_file,
        network_interfaces=ns.network_interfaces or (), output_filename=ns.output_filename,
        start_timeout=ns.start_timeout, heartbeat_timeout=ns.heartbeat_timeout,
        verbose=ns.verbose, mpi_args=ns.mpi_args, env=tuple(ns.env),
        stall_warning_seconds=ns.stall_warning_seconds,
        stall_shutdown_seconds=ns.stall_shutdown_seconds, max_restarts=ns.max_restarts,
        host_discovery_script=discovery, min_np=ns.min_np, max_np=ns.max_np,
        elastic_timeout=ns.elastic_timeout, blacklist_cooldown=ns.blacklist_cooldown,
        reset_limit=ns.reset_limit)


def main(argv: list[str] | None = None) -> int:
    """Runs distrain-run with ``argv`` (``sys.argv[1:]`` when None).

    Returns:
        The exit code: 0, a failed rank's code, 124 (timeout), 130/143 (Ctrl-C/SIGTERM) or 2
        (bad input, nothing started).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        try:
            ns = build_parser().parse_args(argv)
        except SystemExit as exc:             # --help
            return exc.code if isinstance(exc.code, int) else 0
        if ns.version:
            from distrain import __version__
            print(f"distrain-run (distrain) {__version__}")
            return 0
        if ns.check_build:
            from distrain.run.check_build import main as check_build
            return check_build()
        from distrain.run.launcher import launch
        return launch(config_from_args(ns))
    except UsageError as exc:
        print(f"distrain-run: error: {exc}", file=sys.stderr, flush=True)
        return ExitCode.USAGE
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
