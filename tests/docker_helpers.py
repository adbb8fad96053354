"""Compose projects for tests/docker: each test gets a project of its own, torn down after."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPOSE_FILE = os.path.join(ROOT, "docker", "compose.yaml")


def compose_base() -> list[str]:
    """``docker compose`` where the v2 plugin is installed, else ``docker-compose``."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"]


def engine_problem() -> str:
    """Why compose tests cannot run here, or ``""``."""
    if shutil.which("docker") is None:
        return "no docker client on PATH (apt-get install docker.io)"
    if compose_base() == ["docker-compose"] and shutil.which("docker-compose") is None:
        return "neither 'docker compose' nor docker-compose is installed"
    done = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        return f"no Docker engine answers: {done.stderr.strip().splitlines()[-1:]}"
    return ""


def build_image(name: str = "distrain:test") -> str:
    """Builds distrain's image of this checkout (mostly from the layer cache) as ``name``.

    Skips the calling test where no engine answers, saying why; with
    ``DISTRAIN_REQUIRE_DOCKER=1`` (as .ci/run sets) that is a failure instead.
    """
    problem = engine_problem()
    if problem:
        if os.environ.get("DISTRAIN_REQUIRE_DOCKER") == "1":
            pytest.fail(f"DISTRAIN_REQUIRE_DOCKER=1 but {problem}")
        pytest.skip(problem)
    env = dict(os.environ, DISTRAIN_IMAGE=name)
    done = subprocess.run(compose_base() + ["-f", COMPOSE_FILE, "build", "launcher"],
                          env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return name


class Project:
    """One compose project: its name, environment and output folder.

    Args:
        image: distrain's image (``DISTRAIN_IMAGE``).
        tmp_path: the folder for the project's output (``DISTRAIN_OUT``).
        compose_file: the project's compose file (docker/compose.yaml).
        prefix: the start of the project's name.
        env: more settings for compose.
    """

    def __init__(self, image: str, tmp_path, compose_file: str = COMPOSE_FILE,
                 prefix: str = "dtest", **env: str):
        self.name = f"{prefix}{os.getpid()}{tmp_path.name[-6:].lower()}".replace("_", "")
        self.name = "".join(ch for ch in self.name if ch.isalnum())
        self.compose_file = compose_file
        self.out = tmp_path / "out"
        self.out.mkdir()
        self.env = dict(os.environ, COMPOSE_PROJECT_NAME=self.name, DISTRAIN_IMAGE=image,
                        DISTRAIN_OUT=str(self.out), **env)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.compose("down", "--volumes", "--remove-orphans", "-t", "1", timeout=120)

    def compose_argv(self, *args: str) -> list[str]:
        return compose_base() + ["-f", self.compose_file, *args]

    def compose(self, *args: str, timeout: float, check: bool = False):
        done = subprocess.run(self.compose_argv(*args), env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if check:
            assert done.returncode == 0, f"compose {' '.join(args)}:\n{done.stderr[-3000:]}"
        return done

    def containers(self, service: str, running: bool = False) -> list[str]:
        """The service's container names, in their number order."""
        argv = ["docker", "ps", "--format", "{{.Names}}", "--filter",
                f"label=com.docker.compose.project={self.name}", "--filter",
                f"label=com.docker.compose.service={service}"]
        if not running:
            argv.insert(2, "-a")
        names = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.split()
        return sorted(names, key=lambda name: int(name.replace("-", "_").rsplit("_", 1)[1]))

    def run_in_volume(self, script: str) -> str:
        """Runs ``script`` as root in a container holding the project's key volume."""
        done = subprocess.run(["docker", "run", "--rm", "-v", f"{self.name}_keys:/keys",
                               "--entrypoint", "sh", self.env["DISTRAIN_IMAGE"], "-c", script],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def ranks_left(self, service: str) -> list[str]:
        """The training processes still alive in the service's running containers."""
        left = []
        for name in self.containers(service, running=True):
            done = subprocess.run(["docker", "exec", name, "pgrep", "-af", "distrain.train"],
                                  capture_output=True, text=True, timeout=30)
            left += [f"{name}: {line}" for line in done.stdout.splitlines()]
        return left
