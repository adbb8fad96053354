"""Helpers shared by distrain-run's process tests: is a process alive, and wait until not."""
import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAM = os.path.join(HERE, "launcher_ranks", "rank_program.py")


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def wait_gone(pids, within: float = 3.0) -> list[int]:
    """Waits up to ``within`` seconds for ``pids`` to end; returns those still alive."""
    deadline = time.monotonic() + within
    while True:
        left = [pid for pid in pids if alive(pid)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


class FakeClock:
    """A clock the test moves: ``clock()`` is the time, ``clock.sleep(s)`` advances it."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def namespace_hosts(count: int):
    """Yields ``count`` namespaced hosts (distrain.bench.netns), removed afterwards; skips
    the test where they cannot be made (not root, no iproute2)."""
    import pytest
    from distrain.bench.netns import NamespaceHosts, requirements_problem
    problem = requirements_problem()
    if problem:
        pytest.skip(problem)
    made = NamespaceHosts(count)
    try:
        made.__enter__()
    except RuntimeError as exc:
        pytest.skip(f"cannot create network namespaces here: {exc}")
    yield made
    made.close()
