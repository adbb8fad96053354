"""Hosts on one machine for the network benchmark: network namespaces on a bridge, each
host's sending limited by ``tc qdisc ... tbf``.

Each host is a namespace with its own address on a Linux bridge, over a veth pair. Open MPI
reaches it through an rsh agent that enters the namespace (``ip netns exec``) where it would
ssh. A token-bucket filter on each host's own end of its veth caps what it sends, so each
direction of a pair of hosts crosses one filter; a host that receives from several at once
can take in more than the rate (a switch port would not let it; a ring allreduce receives
from one neighbour). What the link carries depends on the VM as well as on the rate: tbf
refills its bucket when a timer fires, and a timer that fires late loses the tokens of the
delay. One TCP stream through one 1gbit tbf with a 16 KiB burst carries 0.85-0.95 Gbit/s
here, one stream each way at once 0.48-0.75 each (both hosts' work shares 2 cores); through
two in series (both ends of each veth, as this module once did) one stream carried
0.64-0.79, from one VM and hour to the next. :meth:`NamespaceHosts.stream_rates` measures
it, and the benchmarks print it beside the rate. Needs root, iproute2 and util-linux;
iptables' FORWARD rule for the bridge is added where iptables exists (a Docker
engine sets its policy to DROP).

Example:
    >>> with NamespaceHosts(2, rate="1gbit") as hosts:        # doctest: +SKIP
    ...     argv = [*launcher_argv(), "-np", "2", *hosts.launch_args(), "python", "train.py"]
"""
from __future__ import annotations

import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from distrain import environment as env

__all__ = ["NamespaceHosts", "parse_rate", "requirements_problem", "rank_environment",
           "untagged", "measure_link", "describe_link"]

_RATE = re.compile(r"(\d+(?:\.\d+)?)([kmg]?)bit")
_SCALE = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


def parse_rate(text: str) -> float | None:
    """``"1gbit"`` -> 1e9 bits/s; ``"none"`` -> None (no limit).

    Raises:
        ValueError: not ``N[k|m|g]bit`` or ``none``.
    """
    if text == "none":
        return None
    match = _RATE.fullmatch(text.lower())
    if not match or float(match[1]) <= 0:
        raise ValueError(f"rate {text!r}: write e.g. 1gbit, 500mbit, 10gbit or none")
    return float(match[1]) * _SCALE[match[2]]


def rank_environment(threads: int, **extra: str) -> dict:
    """The environment of ranks on namespace hosts, which share this machine's cores:
    ``threads`` TensorFlow/OpenMP threads each, one inter-op thread, TensorFlow's start-up
    lines hidden, plus ``extra``.

    Args:
        threads: intra-op threads per rank.
        extra: further variables.
    """
    return dict(os.environ, **{env.OMP_NUM_THREADS: str(threads),
                               env.TF_NUM_INTRAOP_THREADS: str(threads),
                               env.TF_NUM_INTEROP_THREADS: "1",
                               env.TF_CPP_MIN_LOG_LEVEL: "3"}, **extra)


def untagged(line: str) -> str:
    """A rank's output line without Open MPI's ``[0]<stdout>: `` tag."""
    return line.split(": ", 1)[-1] if line.startswith("[") else line


def requirements_problem() -> str:
    """Why namespace hosts cannot be made here, or ``""``."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "tc", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install iproute2 util-linux)"
    return ""


class NamespaceHosts:
    """``count`` namespaced hosts; a context manager that removes them on exit.

    Args:
        count: the number of hosts.
        rate: each link's limit (``"1gbit"``), or None for none.
    """

    def __init__(self, count: int, rate: str | None = None):
        self.tag = f"db{os.getpid() % 100000}"
        self.subnet = f"10.214.{os.getpid() % 200 + 20}"
        self.addresses = [f"{self.subnet}.{i + 1}" for i in range(count)]
        self.namespaces = [f"{self.tag}h{i}" for i in range(count)]
        self.links = [f"{self.tag}v{i}" for i in range(count)]
        self.bridge = f"{self.tag}br"
        self.rate = rate
        self.bits_per_second = parse_rate(rate) if rate else None
        self._dir = tempfile.mkdtemp(prefix="distrain-netns-")
        self.agent = os.path.join(self._dir, "netns-rsh")

    def __enter__(self) -> "NamespaceHosts":
        try:
            self._make()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def launch_args(self) -> list[str]:
        """distrain-run's flags for one rank per host over TCP (Open MPI 5's flags)."""
        return ["-H", ",".join(f"{address}:1" for address in self.addresses),
                *self.mpi_flags()]

    def mpi_flags(self) -> list[str]:
        """distrain-run's flags that reach the hosts over TCP, without naming them (for a
        discovery script to name them)."""
        return ["--network-interfaces", f"{self.subnet}.0/24",
                "--mpi-args", f"--prtemca plm_ssh_agent {self.agent} --mca btl self,tcp"]

    def stream_rates(self, seconds: float = 1.0, both_ways: bool = False,
                     port: int = 5201) -> list[float]:
        """Bits per second TCP streams carry between hosts 0 and 1, each sending for
        ``seconds`` (until its receiver has everything): what the link delivers, beside the
        rate it was given.

        Args:
            seconds: how long each stream sends.
            both_ways: one stream each way at once (as an allreduce sends), else 0 to 1 only.
            port: the receivers' port.

        Returns:
            Bits per second of the stream 0 to 1, then (``both_ways``) of 1 to 0.

        Raises:
            RuntimeError: a receiver did not start within 30 s or a stream failed.
        """
        pairs = [(0, 1), (1, 0)] if both_ways else [(0, 1)]
        here = ["ip", "netns", "exec"]
        receivers = [subprocess.Popen(
            [*here, self.namespaces[to], sys.executable, "-c",
             "from distrain.bench.netns import _receive; _receive()", self.addresses[to],
             str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _, to in pairs]
        senders: list[subprocess.Popen] = []
        try:
            for receiver in receivers:
                started, _, _ = select.select([receiver.stdout], [], [], 30)
                if not started or receiver.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"a stream's receiver did not start: "
                                       f"{receiver.stderr.read()[-500:]}")
            senders += [subprocess.Popen(
                [*here, self.namespaces[source], sys.executable, "-c",
                 "from distrain.bench.netns import _send; _send()", self.addresses[to],
                 str(port), str(seconds)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True) for source, to in pairs]
            results = [sender.communicate(timeout=seconds + 30) for sender in senders]
        finally:
            for process in receivers + senders:
                process.kill()
                process.wait()
        failed = [err for sender, (_, err) in zip(senders, results) if sender.returncode]
        if failed:
            raise RuntimeError(f"a stream failed: {failed[0].strip()[-500:]}")
        return [float(out.split()[-1]) for out, _ in results]

    def kill_host(self, index: int) -> list[int]:
        """SIGKILLs every process of host ``index`` at once (the host fails); returns their
        pids."""
        pids = [int(pid) for pid in subprocess.run(
            ["ip", "netns", "pids", self.namespaces[index]], capture_output=True,
            text=True).stdout.split()]
        for pid in pids:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        return pids

    def _make(self) -> None:
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.subnet}.254/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        self._iptables("-I")
        for address, namespace, link in zip(self.addresses, self.namespaces, self.links):
            _run("ip", "netns", "add", namespace)
            _run("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns",
                 namespace)
            _run("ip", "link", "set", link, "master", self.bridge, "up")
            _run("ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
            _run("ip", "-n", namespace, "link", "set", "eth0", "up")
            _run("ip", "-n", namespace, "link", "set", "lo", "up")
            if self.bits_per_second:  # the host's sending; the module's docstring says why
                _run("ip", "netns", "exec", namespace, "tc", "qdisc", "add", "dev", "eth0",
                     "root", *_tbf(self.bits_per_second))
        cases = "\n".join(f"  {a}) ns={n} ;;" for a, n in zip(self.addresses, self.namespaces))
        with open(self.agent, "w") as stream:
            stream.write(f"""#!/bin/sh
# rsh agent for Open MPI: "agent HOST COMMAND..." runs COMMAND inside HOST's namespace.
host="$1"; shift
case "$host" in
{cases}
  *) echo "netns-rsh: unknown host $host" >&2; exit 255 ;;
esac
exec ip netns exec "$ns" unshare --uts sh -c 'hostname "$0"; exec sh -c "$1"' "$ns" "$*"
""")
        os.chmod(self.agent, 0o755)

    def _iptables(self, action: str) -> None:
        if shutil.which("iptables") is not None:
            subprocess.run(["iptables", "-w", "5", action, "FORWARD", "-i", self.bridge, "-o",
                            self.bridge, "-j", "ACCEPT"], capture_output=True)

    def end_processes(self, within: float = 5.0) -> list[int]:
        """SIGKILLs every process in the namespaces and waits up to ``within`` seconds for them
        to be gone; returns the pids still there."""
        deadline = time.monotonic() + within
        while True:
            pids = [int(pid) for namespace in self.namespaces for pid in subprocess.run(
                ["ip", "netns", "pids", namespace], capture_output=True,
                text=True).stdout.split()]
            if not pids or time.monotonic() > deadline:
                return pids
            for pid in pids:
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
            time.sleep(0.1)

    def close(self) -> None:
        """Ends every process in the namespaces and removes the namespaces, links and bridge."""
        self.end_processes()
        for namespace in self.namespaces:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        for link in self.links:
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        self._iptables("-D")
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        shutil.rmtree(self._dir, ignore_errors=True)


def measure_link(hosts: NamespaceHosts) -> dict | None:
    """What the link between hosts 0 and 1 carries, Gbit/s: ``one_way`` (one TCP stream) and
    ``both_ways`` (one stream each way at once); None where the streams could not run."""
    try:
        one_way = hosts.stream_rates()
        both_ways = hosts.stream_rates(both_ways=True)
    except (RuntimeError, OSError, subprocess.TimeoutExpired):
        return None
    return {"one_way": round(one_way[0] / 1e9, 3),
            "both_ways": [round(bits / 1e9, 3) for bits in both_ways]}


def describe_link(figures: dict | None) -> str:
    """``measure_link``'s figures in words."""
    if figures is None:
        return "not measured"
    each = ", ".join(f"{gbit:.2f}" for gbit in figures["both_ways"])
    return f"one TCP stream {figures['one_way']:.2f} Gbit/s, one each way at once {each}"


def _receive() -> None:
    """The receiving end of :meth:`NamespaceHosts.stream_rates` (``argv``: address, port):
    reads one stream to its end, then answers one byte."""
    with socket.create_server((sys.argv[1], int(sys.argv[2]))) as server:
        print("ready", flush=True)
        connection, _ = server.accept()
        with connection:
            while connection.recv(1 << 20):
                pass
            connection.sendall(b"!")


def _send() -> None:
    """The sending end (``argv``: address, port, seconds): prints bits per second."""
    address, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    block, sent = bytes(1 << 20), 0
    with socket.create_connection((address, port), timeout=seconds + 20) as connection:
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            connection.sendall(block)
            sent += len(block)
        connection.shutdown(socket.SHUT_WR)
        connection.recv(1)  # the receiver has read everything
        elapsed = time.perf_counter() - start
    print(sent * 8 / elapsed)


def _tbf(bits_per_second: float) -> list[str]:
    """A tbf that holds the rate for messages of every size: a burst of an eighth of a
    millisecond of traffic, at least 16 KiB (tbf segments the veth's larger offload
    packets). With 10 ms (1.25 MB at 1 Gbit) a 0.7 MB allreduce crossed at the veth's own
    speed whenever the bucket had refilled between steps; with 64 KiB a 0.1 MB message
    still crossed under its wire time."""
    burst = max(16 * 1024, int(bits_per_second / 8 / 8000))
    return ["tbf", "rate", f"{int(bits_per_second)}bit", "burst", str(burst),
            "latency", "100ms"]


def _run(*argv: str) -> None:
    done = subprocess.run(list(argv), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
