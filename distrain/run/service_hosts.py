"""``python -m distrain.run.service_hosts SERVICE``: the hosts behind one DNS name.

A discovery script for ``distrain-run --host-discovery-script``, as docker/compose.yaml uses
it: Docker's DNS answers a compose service's name with one address per container, as a
Kubernetes headless service does with one per pod. Each address is named by its reverse DNS
entry (a compose container's name, e.g. ``docker_worker_2``) and checked to answer ssh on
``--port``; then one ``name:slots`` line is printed for each, in name order (``worker_2``
before ``worker_10``). While an address does not
answer yet, or the name resolves to nothing, it prints one line on stderr saying which and
exits 1, and distrain-run asks again until its ``--start-timeout``.

Usage::

    python -m distrain.run.service_hosts worker --port 2222 --slots 2

Example:
    >>> short_name("docker_worker_1.docker_mpi", "10.5.0.3", lambda name: "10.5.0.3")
    'docker_worker_1'
"""
from __future__ import annotations

import argparse
import re
import socket
import sys

__all__ = ["main", "addresses", "short_name", "answers_ssh"]

CONNECT_TIMEOUT = 2.0
PROBE_BANNER = b"SSH-2.0-distrain_probe\r\n"


def addresses(service: str) -> list[str]:
    """Every IPv4 address ``service`` resolves to, sorted; empty when it resolves to none."""
    try:
        infos = socket.getaddrinfo(service, None, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    return sorted({info[4][0] for info in infos}, key=socket.inet_aton)


def short_name(full: str, address: str, resolve=socket.gethostbyname) -> str:
    """The reverse name's first label when it resolves back to ``address``, else ``full``."""
    label = full.split(".", 1)[0]
    try:
        return label if label != full and resolve(label) == address else full
    except OSError:
        return full


def name_of(address: str) -> str:
    """The address's name by reverse DNS (short where that resolves), or the address."""
    try:
        full = socket.gethostbyaddr(address)[0]
    except OSError:
        return address
    return short_name(full, address)


def answers_ssh(address: str, port: int, timeout: float = CONNECT_TIMEOUT) -> bool:
    """Whether an ssh server greets on ``address:port`` within ``timeout`` seconds."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as conn:
            if not conn.recv(64).startswith(b"SSH-"):
                return False
            conn.sendall(PROBE_BANNER)   # a greeting of its own: sshd logs no error for it
            return True
    except OSError:
        return False


def _natural(name: str) -> list:
    """worker_2 before worker_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def main(argv: list[str] | None = None) -> int:
    """Prints ``name:slots`` for every address of the service.

    Returns:
        0 when every address answers ssh, 1 when one does not or none resolves (named on
        stderr), 2 for bad flags.
    """
    parser = argparse.ArgumentParser(prog="python -m distrain.run.service_hosts",
                                     description="Print host:slots for every address of a "
                                                 "DNS name whose ssh answers.")
    parser.add_argument("service", help="the DNS name, e.g. a compose service")
    parser.add_argument("--port", type=int, default=22, help="ssh port (default 22)")
    parser.add_argument("--slots", type=int, default=1, help="slots of each host (default 1)")
    args = parser.parse_args(argv)
    if args.slots < 1 or not 0 < args.port < 65536:
        parser.error("--slots must be at least 1 and --port a port (1-65535)")
    found = addresses(args.service)
    if not found:
        print(f"service_hosts: {args.service!r} resolves to no address yet", file=sys.stderr)
        return 1
    names = {address: name_of(address) for address in found}
    silent = [address for address in found if not answers_ssh(address, args.port)]
    if silent:
        print(f"service_hosts: {len(found) - len(silent)} of {len(found)} hosts of "
              f"{args.service!r} answer ssh on port {args.port}; not yet: "
              f"{', '.join(names[address] for address in silent)}", file=sys.stderr)
        return 1
    for name in sorted(names.values(), key=_natural):
        print(f"{name}:{args.slots}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
