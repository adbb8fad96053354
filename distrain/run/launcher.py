"""From a :class:`LaunchConfig` to a finished job: checks, plans, runs and relaunches.

Everything that can be wrong with the input (no mpirun, an unknown MPI, a missing program, a
missing ssh key) is found by :func:`plan` before any process of the job starts.

Example:
    >>> from distrain.run import LaunchConfig, launch
    >>> launch(LaunchConfig(["python", "-c", "pass"], np=2))   # doctest: +SKIP
    0
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import sys

from distrain import environment as env
from distrain.cores import usable_cores
from distrain.errors import UsageError
from distrain.protocol import ExitCode
from distrain.run.command import (forwarded_names, heartbeat_interval, job_env, mpirun_argv,
                                  rank_command)
from distrain.run.config import LaunchConfig
from distrain.run.discovery import DiscoveryTimeout, script_argv, wait_for_hosts
from distrain.run.hosts import format_hosts, placement
from distrain.run.outcome import Reason
from distrain.run.output import Console, RankFiles
from distrain.run.relaunch import run_elastic
from distrain.run.supervisor import Job, supervise
from distrain.run.vendors import Vendor, detect_vendor, find_mpirun, version_text

__all__ = ["Plan", "plan", "job", "launch", "local_cores"]


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the checks found.

    Attributes:
        mpirun: the launcher's path.
        vendor: its flag table.
        oversubscribe: whether more ranks than slots are allowed.
        hosts: the host each rank is planned on.
        is_root: whether distrain-run runs as root.
        warnings: what to tell the user before starting.
    """

    mpirun: str
    vendor: Vendor
    oversubscribe: bool
    hosts: tuple[str, ...]
    is_root: bool
    warnings: tuple[str, ...] = ()


def local_cores() -> int:
    """The cores this process may use (:func:`distrain.cores.usable_cores`)."""
    return usable_cores()


def _check_program(program: str, environ) -> None:
    if os.sep in program:
        if not (os.path.isfile(program) and os.access(program, os.X_OK)):
            raise UsageError(f"program {program!r} does not exist or is not executable")
    elif shutil.which(program, path=environ.get(env.PATH, os.defpath)) is None:
        raise UsageError(f"program {program!r} not found on PATH; give its path or "
                         f"install it")


def plan(config: LaunchConfig, environ=None) -> Plan:
    """Finds mpirun and its vendor and checks the program, before anything starts.

    Args:
        config: the launch.
        environ: the environment to look things up in; ``os.environ`` when None.

    Returns:
        The plan.

    Raises:
        UsageError: no mpirun, an unrecognised MPI, a missing program or ssh key.
    """
    environ = os.environ if environ is None else environ
    mpirun = find_mpirun(environ, beside=os.path.dirname(sys.executable))
    _check_program(config.command[0], environ)
    if config.ssh_identity_file and not os.path.isfile(config.ssh_identity_file):
        raise UsageError(f"-i/--ssh-identity-file {config.ssh_identity_file!r} does not exist")
    vendor = detect_vendor(version_text(mpirun))
    warnings = []
    if config.hosts:
        oversubscribe, hosts = config.oversubscribe, placement(config.hosts, config.np)
    elif config.host_discovery_script is not None:
        oversubscribe, hosts = config.oversubscribe, []    # known once the script answers
    else:
        cores = local_cores()
        oversubscribe = config.oversubscribe or config.np > cores
        if config.np > cores and not config.oversubscribe:
            warnings.append(f"{config.np} ranks on {cores} local cores: oversubscribing")
        hosts = [os.uname().nodename] * config.np
    return Plan(mpirun, vendor, oversubscribe, tuple(hosts), os.geteuid() == 0,
                tuple(warnings))


def job(config: LaunchConfig, the_plan: Plan, environ, restart: int = 0,
        elastic: bool = False) -> Job:
    """The mpirun run for one attempt (``restart`` = 0 first, k on the k-th relaunch;
    ``elastic``: a launch of an elastic job, whose ranks take resize requests)."""
    child = job_env(environ, config, restart, elastic)
    forward = forwarded_names(child, forced=[name for name, _ in config.env])
    ranks = rank_command(the_plan.vendor, config.command, sys.executable,
                         heartbeat_interval(config.heartbeat_timeout))
    argv = mpirun_argv(the_plan.mpirun, the_plan.vendor, config, forward=forward,
                       is_root=the_plan.is_root, oversubscribe=the_plan.oversubscribe,
                       ranks=ranks)
    return Job(tuple(argv), child, the_plan.vendor, config.np, the_plan.hosts,
               config.start_timeout, config.heartbeat_timeout)


def discovered(config: LaunchConfig, console: Console) -> LaunchConfig:
    """The launch on the hosts its discovery script lists now, once they have ``-np`` slots.

    Raises:
        DiscoveryTimeout: too few slots within ``--start-timeout``.
        UsageError: the script cannot run or prints something malformed.
    """
    def tell(line: str) -> None:
        console.plain("stderr", f"distrain-run: {line}")

    hosts = wait_for_hosts(script_argv(config.host_discovery_script), config.np,
                           config.start_timeout, on_wait=tell)
    np_ = config.np if config.np is not None else sum(host.slots for host in hosts)
    tell(f"{np_} ranks on the hosts found: {format_hosts(hosts)}")
    return dataclasses.replace(config, np=np_, hosts=hosts, host_discovery_script=None)


def _run(the_job: Job, the_plan: Plan, config: LaunchConfig, console: Console, files,
         grow=None):
    """Supervises one launch, printing its mpirun command first with ``--verbose``."""
    if config.verbose:
        console.plain("stderr", f"distrain-run: {the_plan.vendor.label} at "
                                f"{the_plan.mpirun}: {shlex.join(the_job.argv)}")
    return supervise(the_job, console, files, grow)


def _launch_elastic(config: LaunchConfig, environ, console: Console, files) -> int:
    """Runs an elastic job (:func:`distrain.run.relaunch.run_elastic`): each launch on the
    hosts the driver picks, its ranks told that they may be asked to resize."""
    fixed = dict(host_discovery_script=None, min_np=None, max_np=None, reset_limit=None)

    def start(hosts, restart, grow):
        attempt = dataclasses.replace(config, np=sum(h.slots for h in hosts), hosts=hosts,
                                      **fixed)
        the_plan = plan(attempt, environ)
        return _run(job(attempt, the_plan, environ, restart, elastic=True), the_plan, config,
                    console, files, grow)

    return run_elastic(config, start, lambda line: console.plain("stderr",
                                                                 f"distrain-run: {line}"))


def launch(config: LaunchConfig, environ=None, out=None, err=None) -> int:
    """Runs the job, relaunching it after a failure up to ``config.max_restarts`` times.

    Args:
        config: the launch.
        environ: distrain-run's environment; ``os.environ`` when None.
        out: where ranks' stdout goes; ``sys.stdout`` when None.
        err: where ranks' stderr and distrain-run's messages go; ``sys.stderr`` when None.

    Returns:
        0, the failed rank's exit code, 124 for a timeout, or 130/143 after SIGINT/SIGTERM.

    Raises:
        UsageError: bad input found before anything started.
    """
    environ = dict(os.environ if environ is None else environ)
    console = Console(out or sys.stdout, err or sys.stderr)
    the_plan = plan(config, environ)   # bad input is found before anything starts
    files = RankFiles(config.output_filename) if config.output_filename else None
    try:
        if config.elastic:
            return _launch_elastic(config, environ, console, files)
        for attempt in range(config.max_restarts + 1):
            attempt_config = config
            if config.host_discovery_script is not None:
                try:
                    attempt_config = discovered(config, console)
                except DiscoveryTimeout as exc:
                    console.plain("stderr", f"distrain-run: {exc}")
                    return ExitCode.TIMEOUT
                # a relaunch needs as many ranks as the first launch had
                config = dataclasses.replace(config, np=attempt_config.np)
                the_plan = plan(attempt_config, environ)
            if attempt == 0 or config.host_discovery_script is not None:
                for warning in the_plan.warnings:
                    console.plain("stderr", f"distrain-run: warning: {warning}")
            outcome = _run(job(attempt_config, the_plan, environ, attempt), the_plan, config,
                           console, files)
            if outcome.reason in (Reason.OK, Reason.INTERRUPTED):
                if outcome.message:
                    console.plain("stderr", f"distrain-run: {outcome.message}")
                return outcome.code
            console.plain("stderr", f"distrain-run: {outcome.message}")
            if attempt < config.max_restarts:
                console.plain("stderr", f"distrain-run: restart {attempt + 1} of "
                                        f"{config.max_restarts}: relaunching every rank with "
                                        f"{env.RESTART_COUNT}={attempt + 1}")
        return outcome.code
    finally:
        if files is not None:
            files.close()
