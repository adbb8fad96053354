"""Hosts and their slots, from ``-H host1:2,host2:2`` or a hostfile.

A hostfile holds one host a line, ``host slots=N`` (``slots=`` omitted means 1); ``#`` starts a
comment, blank lines are skipped. Host names are letters, digits, ``.``, ``-`` and ``_``,
starting with a letter or digit (IPv4 addresses qualify).

Example:
    >>> parse_hosts("node1:2,node2:2")
    (Host(name='node1', slots=2), Host(name='node2', slots=2))
"""
from __future__ import annotations

import dataclasses
import re

from distrain.errors import UsageError

__all__ = ["Host", "parse_hosts", "parse_hostfile", "read_hostfile", "placement",
           "format_hosts"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")


@dataclasses.dataclass(frozen=True)
class Host:
    """One host and how many ranks it may run.

    Attributes:
        name: the host name or address, as mpirun will be given it.
        slots: the number of ranks it runs without oversubscription (at least 1).
    """

    name: str
    slots: int = 1

    def __post_init__(self):
        if not _NAME.fullmatch(self.name):
            raise UsageError(f"host name {self.name!r} has illegal characters; use letters, "
                             f"digits, '.', '-' and '_'")
        if isinstance(self.slots, bool) or not isinstance(self.slots, int) or self.slots < 1:
            raise UsageError(f"host {self.name}: slots must be a positive integer, "
                             f"got {self.slots!r}")


def _slots(text: str, where: str) -> int:
    if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
        raise UsageError(f"{where}: slots must be a positive integer, got {text!r}")
    return int(text)


def _twice(name: str, where: str) -> UsageError:
    return UsageError(f"{where}: host {name!r} appears twice; give each host once with its "
                      f"total slots")


def _host(name: str, slots: int, where: str) -> Host:
    try:
        return Host(name, slots)
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None


def parse_hosts(spec: str) -> tuple[Host, ...]:
    """Reads ``-H``: comma-separated ``host[:slots]``.

    Args:
        spec: e.g. ``"node1:2,node2:2"``.

    Returns:
        The hosts in the order given.

    Raises:
        UsageError: empty entries, bad slots, a duplicate host or illegal characters.
    """
    hosts: list[Host] = []
    for entry in spec.split(","):
        entry = entry.strip()
        if not entry:
            raise UsageError(f"-H {spec!r}: empty host entry; write host1:2,host2:2")
        name, sep, slots = entry.partition(":")
        if any(host.name == name for host in hosts):
            raise _twice(name, f"-H {spec!r}")
        hosts.append(_host(name, _slots(slots, f"-H {entry!r}") if sep else 1,
                           f"-H {entry!r}"))
    return tuple(hosts)


def parse_hostfile(text: str, source: str = "hostfile") -> tuple[Host, ...]:
    """Reads a hostfile's text: lines ``host slots=N``, comments and blank lines.

    Args:
        text: the file's contents.
        source: the file's name, for messages.

    Returns:
        The hosts in file order.

    Raises:
        UsageError: a malformed line (naming its number), no hosts, or a duplicate host.
    """
    hosts: list[Host] = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        where = f"{source} line {number}"
        if any(host.name == words[0] for host in hosts):
            raise _twice(words[0], where)
        slots = 1
        for word in words[1:]:
            key, sep, value = word.partition("=")
            if key not in ("slots", "max_slots", "max-slots") or not sep:
                raise UsageError(f"{where}: unexpected {word!r}; write 'host slots=N'")
            if key == "slots":
                slots = _slots(value, where)
            else:
                _slots(value, where)
        hosts.append(_host(words[0], slots, where))
    if not hosts:
        raise UsageError(f"{source} lists no hosts; write one 'host slots=N' a line")
    return tuple(hosts)


def read_hostfile(path: str) -> tuple[Host, ...]:
    """Reads and parses a hostfile.

    Raises:
        UsageError: the file cannot be read or is malformed.
    """
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read hostfile {path!r}: {exc.strerror or exc}") from None
    return parse_hostfile(text, path)


def placement(hosts: tuple[Host, ...], np_: int) -> list[str]:
    """The host of each rank when ranks fill hosts slot by slot, in order (``--map-by slot``).

    Ranks past the total slots (oversubscription) go round the hosts again.

    Returns:
        ``placement[rank]`` is that rank's host name.
    """
    names = [host.name for host in hosts for _ in range(host.slots)]
    return [names[rank % len(names)] for rank in range(np_)]


def format_hosts(hosts: tuple[Host, ...]) -> str:
    """``-H`` syntax for ``hosts``: ``"node1:2,node2:2"``."""
    return ",".join(f"{host.name}:{host.slots}" for host in hosts)
