"""One launch of distrain-run, as a frozen dataclass checked when it is made.

The CLI builds it from flags; Python code builds it directly and calls
:func:`distrain.run.launch`. Convenience forms are accepted and normalised (a string for
``hosts``, ``mpi_args`` or ``network_interfaces``; ``"NAME=VALUE"`` strings for ``env``).

Example:
    >>> config = LaunchConfig(["python", "train.py"], np=4, hosts="node1:2,node2:2")
    >>> config.hosts[1].name, config.np
    ('node2', 4)
"""
from __future__ import annotations

import dataclasses
import re
import shlex

from distrain.errors import UsageError
from distrain.run.discovery import script_argv
from distrain.run.hosts import Host, parse_hosts

__all__ = ["LaunchConfig"]

_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INTERFACE = re.compile(r"[A-Za-z0-9_.:/@-]+")


@dataclasses.dataclass(frozen=True)
class LaunchConfig:
    """What to launch and how.

    Attributes:
        command: the program and its arguments, run on every rank.
        np: the number of ranks; the hosts' total slots when None and hosts are given.
        hosts: where ranks run; empty means this machine only.
        oversubscribe: allow more ranks than slots.
        ssh_port: ssh port on the hosts.
        ssh_identity_file: ssh private key for the hosts.
        network_interfaces: interfaces (or CIDR networks) MPI and its daemons may use.
        output_filename: a directory for one log file per rank.
        start_timeout: seconds for every rank to start.
        heartbeat_timeout: seconds a started rank may stay silent before the job is
            stopped; 0 never.
        verbose: print the mpirun command and the vendor.
        mpi_args: extra mpirun arguments, passed through.
        env: ``(NAME, VALUE)`` pairs from ``-x``; VALUE None forwards NAME as it is set.
        stall_warning_seconds: exported as ``DISTRAIN_STALL_WARNING_SECONDS`` when set.
        stall_shutdown_seconds: exported as ``DISTRAIN_STALL_SHUTDOWN_SECONDS`` when set.
        max_restarts: relaunch a failed job at most this many times.
        host_discovery_script: a command printing ``host:slots`` lines, asked for the hosts
            before every launch (:mod:`distrain.run.discovery`); excludes ``hosts``. ``np``
            may then be None: every slot of the first answer.
        min_np: elastic: the fewest ranks the job may run on (``--min-np``); the job waits
            (up to ``elastic_timeout``) rather than run on fewer. Needs the discovery script.
        max_np: elastic: the most ranks (``--max-np``); discovered slots beyond it stay idle.
        elastic_timeout: elastic: seconds the job may stay below ``min_np`` before it ends.
        blacklist_cooldown: elastic: seconds a host that failed is left out (doubled on each
            further failure of that host, up to 16 times).
        reset_limit: elastic: relaunch at most this many times after failures (None: no
            limit; resizes to take new hosts do not count).

    Raises:
        UsageError: a value is out of range or malformed (one line naming it).
    """

    command: tuple[str, ...]
    np: int | None = None
    hosts: tuple[Host, ...] = ()
    oversubscribe: bool = False
    ssh_port: int | None = None
    ssh_identity_file: str | None = None
    network_interfaces: tuple[str, ...] = ()
    output_filename: str | None = None
    start_timeout: float = 30.0
    heartbeat_timeout: float = 60.0
    verbose: bool = False
    mpi_args: tuple[str, ...] = ()
    env: tuple[tuple[str, str | None], ...] = ()
    stall_warning_seconds: float | None = None
    stall_shutdown_seconds: float | None = None
    max_restarts: int = 0
    host_discovery_script: str | None = None
    min_np: int | None = None
    max_np: int | None = None
    elastic_timeout: float = 600.0
    blacklist_cooldown: float = 30.0
    reset_limit: int | None = None

    @property
    def elastic(self) -> bool:
        """Whether the job resizes (``--min-np`` or ``--max-np`` given)."""
        return self.min_np is not None or self.max_np is not None

    def __post_init__(self):
        self._normalise()
        if not self.command or not self.command[0]:
            raise UsageError("no program given; write distrain-run -np N PROGRAM [ARGS]")
        self._check_elastic()
        if self.host_discovery_script is not None:
            if self.hosts:
                raise UsageError("give either -H/--hostfile or --host-discovery-script, "
                                 "not both")
            script_argv(self.host_discovery_script)
        elif self.np is None:
            if not self.hosts:
                raise UsageError("give -np N, the number of ranks (or -H/--hostfile slots)")
            object.__setattr__(self, "np", sum(host.slots for host in self.hosts))
        if self.np is not None:
            _positive_int("-np", self.np)
        slots = sum(host.slots for host in self.hosts)
        if self.hosts and self.np > slots and not self.oversubscribe:
            raise UsageError(f"-np {self.np} is more than the {slots} slots of the hosts "
                             f"given; add slots, lower -np, or pass --oversubscribe")
        if self.ssh_port is not None and not 0 < _int("-p/--ssh-port", self.ssh_port) < 65536:
            raise UsageError(f"-p/--ssh-port {self.ssh_port} is not a port (1-65535)")
        if self.ssh_identity_file is not None and (
                not self.ssh_identity_file or re.search(r"\s", self.ssh_identity_file)):
            raise UsageError(f"-i/--ssh-identity-file {self.ssh_identity_file!r}: give a path "
                             f"without spaces")
        for name in self.network_interfaces:
            if not _INTERFACE.fullmatch(name):
                raise UsageError(f"--network-interfaces: {name!r} is not an interface name "
                                 f"or CIDR network")
        if not self.start_timeout > 0:
            raise UsageError(f"--start-timeout {self.start_timeout:g} must be positive")
        for flag, value in (("--heartbeat-timeout", self.heartbeat_timeout),
                            ("--stall-warning-seconds", self.stall_warning_seconds),
                            ("--stall-shutdown-seconds", self.stall_shutdown_seconds)):
            if value is not None and not value >= 0:
                raise UsageError(f"{flag} {value:g} must be 0 or more")
        if _int("--max-restarts", self.max_restarts) < 0:
            raise UsageError(f"--max-restarts {self.max_restarts} must be 0 or more")
        for name, _ in self.env:
            if not _VAR.fullmatch(name):
                raise UsageError(f"-x {name!r}: not a variable name; write -x NAME or "
                                 f"-x NAME=VALUE")

    def _check_elastic(self) -> None:
        for flag, value in (("--min-np", self.min_np), ("--max-np", self.max_np),
                            ("--reset-limit", self.reset_limit)):
            if value is not None and _int(flag, value) < (0 if flag == "--reset-limit" else 1):
                raise UsageError(f"{flag} {value} must be at least "
                                 f"{0 if flag == '--reset-limit' else 1}")
        for flag, value in (("--elastic-timeout", self.elastic_timeout),
                            ("--blacklist-cooldown", self.blacklist_cooldown)):
            if not value >= 0:
                raise UsageError(f"{flag} {value:g} must be 0 or more")
        if not self.elastic:
            if self.reset_limit is not None:
                raise UsageError("--reset-limit is for elastic jobs: add --min-np/--max-np, "
                                 "or use --max-restarts")
            return
        if self.host_discovery_script is None:
            raise UsageError("--min-np/--max-np need --host-discovery-script SCRIPT, which "
                             "lists the hosts as they come and go")
        if self.max_restarts:
            raise UsageError("--max-restarts is for fixed-size jobs; an elastic job relaunches "
                             "on the hosts left (bound it with --reset-limit)")
        low = self.min_np if self.min_np is not None else 1
        high = self.max_np
        if high is not None and low > high:
            raise UsageError(f"--min-np {low} is more than --max-np {high}")
        if self.np is not None and (self.np < low or (high is not None and self.np > high)):
            raise UsageError(f"-np {self.np} is outside --min-np {low} .. --max-np "
                             f"{high if high is not None else 'any'}")

    def _normalise(self) -> None:
        def put(field, value):
            object.__setattr__(self, field, value)

        put("command", (self.command,) if isinstance(self.command, str)
            else tuple(self.command))
        if isinstance(self.hosts, str):
            put("hosts", parse_hosts(self.hosts))
        else:
            put("hosts", tuple(self.hosts))
        if isinstance(self.mpi_args, str):
            try:
                put("mpi_args", tuple(shlex.split(self.mpi_args)))
            except ValueError as exc:
                raise UsageError(f"--mpi-args {self.mpi_args!r}: {exc}") from None
        else:
            put("mpi_args", tuple(self.mpi_args))
        interfaces = self.network_interfaces
        if isinstance(interfaces, str):
            interfaces = [name.strip() for name in interfaces.split(",") if name.strip()]
        put("network_interfaces", tuple(interfaces))
        put("env", tuple(_env_pair(item) for item in self.env))


def _env_pair(item) -> tuple[str, str | None]:
    if isinstance(item, str):
        name, sep, value = item.partition("=")
        return name, value if sep else None
    name, value = item
    return name, value


def _int(flag: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{flag} {value!r} is not a whole number")
    return value


def _positive_int(flag: str, value) -> None:
    if _int(flag, value) < 1:
        raise UsageError(f"{flag} {value} must be at least 1")
