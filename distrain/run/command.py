"""The mpirun command and the ranks' environment, as pure functions of the launch.

Nothing here runs a process or reads ``os.environ``: each function takes what it needs and
returns an argument list or a dict, so tests compare lists and dicts. Values of variables
never enter the command line: they are set in mpirun's own environment and forwarded by name.

Example:
    >>> from distrain.run.vendors import OPENMPI5
    >>> env_flags(OPENMPI5, ["A", "B"])
    ['-x', 'A', '-x', 'B']
"""
from __future__ import annotations

import os
import re
import sys

from distrain import environment as env
from distrain.run.config import LaunchConfig
from distrain.run.hosts import format_hosts
from distrain.run.vendors import Vendor

__all__ = ["fill", "env_flags", "with_huge_pages", "forwarded_names", "job_env", "rank_command", "ssh_args",
           "mpirun_argv", "heartbeat_interval", "launcher_argv", "WRAPPER", "LAUNCHER_NAME"]

WRAPPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rank.py")
LAUNCHER_NAME = "distrain-run"
THREAD_VARS = (env.OMP_NUM_THREADS, env.TF_NUM_INTRAOP_THREADS)
_EXPORTABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def fill(flags: tuple[str, ...], **values: str) -> list[str]:
    """A vendor table's flags with ``{name}``-style templates filled in."""
    return [flag.format(**values) for flag in flags]


def env_flags(vendor: Vendor, names: list[str]) -> list[str]:
    """The flags forwarding ``names`` to every rank (``-x A -x B``, ``-genvlist A,B``)."""
    if not names:
        return []
    if any("{name}" in flag for flag in vendor.env_flags):
        return [part for name in names for part in fill(vendor.env_flags, name=name)]
    return fill(vendor.env_flags, names=",".join(names))


def forwarded_names(environ: dict, forced=()) -> list[str]:
    """The variables to forward: all of ``environ`` but launcher-set and shell-state ones.

    Args:
        environ: mpirun's environment.
        forced: names forwarded whatever their name (``-x NAME``), if set.

    Returns:
        Sorted names.
    """
    def exportable(name: str) -> bool:
        return (bool(_EXPORTABLE.fullmatch(name)) and name not in env.NOT_FORWARDED
                and not name.startswith(env.NOT_FORWARDED_PREFIXES))

    return sorted(name for name in environ if exportable(name) or name in forced)


def job_env(environ: dict, config: LaunchConfig, restart: int = 0,
            elastic: bool = False) -> dict[str, str]:
    """mpirun's environment, which every rank inherits or is forwarded.

    Args:
        environ: distrain-run's environment.
        config: the launch (``-x NAME=VALUE``, stall settings).
        restart: 0 for the first run, k for the k-th relaunch.
        elastic: a launch of an elastic job.

    Returns:
        ``environ`` plus ``DISTRAIN_LAUNCHER``, the ``-x`` values, the stall settings given as
        flags, ``GLIBC_TUNABLES`` from :func:`with_huge_pages`, on a relaunch
        ``DISTRAIN_RESTART_COUNT=k`` (removed on the first run), for an elastic job
        ``DISTRAIN_ELASTIC=1`` (removed otherwise), and inside a Slurm job
        ``SLURM_OVERLAP=1`` unless set: mpirun starts its daemons as a Slurm step (``srun``),
        and the step of a launch that lost a node stays open in slurmctld (on the dead node)
        after mpirun ended, holding the job's CPUs on the nodes left; without ``--overlap``
        Slurm refuses the relaunch's step there ("Requested nodes are busy") until the job
        ends.
    """
    child = dict(environ)
    child.update({name: value for name, value in config.env if value is not None})
    child[env.LAUNCHER] = LAUNCHER_NAME
    for name, value in ((env.STALL_WARNING_SECONDS, config.stall_warning_seconds),
                        (env.STALL_SHUTDOWN_SECONDS, config.stall_shutdown_seconds)):
        if value is not None:
            child[name] = f"{value:g}"
    if restart:
        child[env.RESTART_COUNT] = str(restart)
    else:
        child.pop(env.RESTART_COUNT, None)
    if elastic:
        child[env.ELASTIC] = "1"
    else:
        child.pop(env.ELASTIC, None)
    child[env.GLIBC_TUNABLES] = with_huge_pages(environ.get(env.GLIBC_TUNABLES))
    if environ.get(env.SLURM_JOB_ID):
        child.setdefault(env.SLURM_OVERLAP, "1")
    return child


def with_huge_pages(tunables: str | None) -> str:
    """``GLIBC_TUNABLES`` with malloc's large blocks on transparent huge pages, unless it
    already says ``glibc.malloc.hugetlb`` (``=0`` turns it off).

    TensorFlow allocates tensors with malloc, on 4 KiB pages where transparent huge pages
    are ``madvise`` only (the usual default). Open MPI's single-copy shared-memory path
    (CMA) walks the sender's pages one by one: here a 64 MB broadcast from a tensor took
    13.1 ms against 4.1 ms from huge pages, and a Reduce_scatter's temporary buffers halved
    its time. glibc before 2.35, other C libraries and systems without transparent huge
    pages ignore the setting.

    Example:
        >>> with_huge_pages("glibc.malloc.arena_max=2")
        'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'
    """
    if tunables and any(t.split("=", 1)[0] == env.MALLOC_HUGETLB
                        for t in tunables.split(":")):
        return tunables
    setting = f"{env.MALLOC_HUGETLB}=1"
    return f"{tunables}:{setting}" if tunables else setting


def launcher_argv(python: str | None = None) -> list[str]:
    """How a program of this package starts distrain-run: through an interpreter, never
    through PATH, which may hold another installation's ``distrain-run`` or none (a virtual
    environment that is not activated).

    Args:
        python: the interpreter; the running one (``sys.executable``) when None.

    Example:
        >>> launcher_argv("/venv/bin/python")
        ['/venv/bin/python', '-m', 'distrain.run']
    """
    return [python or sys.executable, "-m", "distrain.run"]


def heartbeat_interval(timeout: float) -> float:
    """How often a rank wrapper reports in, for a heartbeat timeout (0: never)."""
    return 0.0 if timeout <= 0 else min(5.0, max(0.2, timeout / 5))


def rank_command(vendor: Vendor, program: tuple[str, ...], python: str,
                 heartbeat: float) -> list[str]:
    """What mpirun starts on each rank: the rank wrapper, then the program.

    Args:
        vendor: the launcher's table (which variables hold the rank and the ranks per host).
        program: the user's command.
        python: the interpreter for the wrapper (the same path must exist on every host).
        heartbeat: seconds between the wrapper's heartbeats.
    """
    return [python, "-I", "-S", WRAPPER, "--rank-var", vendor.rank_var,
            "--local-size-var", vendor.local_size_var, "--thread-vars", ",".join(THREAD_VARS),
            "--heartbeat", f"{heartbeat:g}", "--", *program]


def ssh_args(config: LaunchConfig) -> str:
    """The ssh options from ``-p`` and ``-i`` (empty when neither is given)."""
    parts = []
    if config.ssh_port is not None:
        parts += ["-p", str(config.ssh_port)]
    if config.ssh_identity_file:
        parts += ["-i", config.ssh_identity_file]
    return " ".join(parts)


def mpirun_argv(mpirun: str, vendor: Vendor, config: LaunchConfig, *, forward: list[str],
                is_root: bool, oversubscribe: bool, ranks: list[str]) -> list[str]:
    """The whole mpirun command.

    Args:
        mpirun: the launcher's path.
        vendor: its flag table.
        config: the launch.
        forward: variable names to forward (:func:`forwarded_names`).
        is_root: distrain-run runs as root.
        oversubscribe: more ranks than slots are allowed.
        ranks: what each rank runs (:func:`rank_command`).

    Returns:
        The argument list, never a shell string.
    """
    argv = [mpirun, vendor.np_flag, str(config.np), *vendor.base_flags]
    if is_root:
        argv += vendor.root_flags
    if oversubscribe:
        argv += vendor.oversubscribe_flags
    if config.hosts:
        argv += [vendor.hosts_flag, format_hosts(config.hosts)]
    if ssh_args(config):
        argv += fill(vendor.ssh_flags, ssh_args=ssh_args(config))
    if config.network_interfaces:
        argv += fill(vendor.interface_flags, interfaces=",".join(config.network_interfaces))
    argv += env_flags(vendor, forward)
    argv += config.mpi_args
    return argv + ranks
