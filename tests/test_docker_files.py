"""docker/ read as files (no engine needed): what the image installs, what the compose file
exposes, the scripts' syntax, and that nothing secret is in the folder or the build context."""
import configparser
import os
import re
import shutil
import subprocess

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKER = os.path.join(ROOT, "docker")


def _read(*parts: str) -> str:
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as stream:
        return stream.read()


def _names(lines) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", line.strip(), 1)[0].lower() for line in lines
            if line.strip() and not line.strip().startswith("#")}


def test_the_image_installs_every_runtime_dependency_of_setup_cfg():
    setup = configparser.ConfigParser()
    setup.read(os.path.join(ROOT, "setup.cfg"))
    required = _names(setup["options"]["install_requires"].splitlines())
    image = _names(_read("docker", "requirements.txt").splitlines())
    # TensorFlow is the TENSORFLOW build argument (tensorflow-cpu by default)
    assert required - {"tensorflow"} <= image, required - image
    assert "matplotlib" in image                                  # --plot in the compose run


def test_the_compose_file_publishes_no_port_and_keeps_mpi_on_a_private_network():
    compose = yaml.safe_load(_read("docker", "compose.yaml"))
    services = compose["services"]
    assert set(services) == {"worker", "launcher"}
    for name, service in services.items():
        assert "ports" not in service, name
        assert service["networks"] == ["mpi"], name
        assert "keys:/keys" in service["volumes"], name
        assert service["image"] == "${DISTRAIN_IMAGE:-distrain:latest}", name
    assert compose["networks"]["mpi"]["internal"] is True
    assert "keys" in compose["volumes"]
    assert "version" not in compose                 # Compose v2 and docker-compose 1.29 alike
    launcher = services["launcher"]
    assert launcher["command"][:1] == ["distrain-run"]
    assert "distrain.run.service_hosts worker" in \
        launcher["environment"]["DISTRAIN_HOST_DISCOVERY_SCRIPT"]


def test_the_slurm_cluster_publishes_no_port_and_keeps_its_key_in_a_volume():
    compose = yaml.safe_load(_read("docker", "slurm", "compose.yaml"))
    services = compose["services"]
    assert set(services) == {"slurmctld", "node"}
    for name, service in services.items():
        assert "ports" not in service, name
        assert service["networks"] == ["cluster"], name
        assert {"keys:/keys", "shared:/shared"} <= set(service["volumes"]), name
    assert compose["networks"]["cluster"]["internal"] is True
    assert "version" not in compose
    # Debian's munge package makes a key when installed: gone in the same layer
    install = next(step for step in _read("docker", "slurm", "Dockerfile").split("\nRUN ")
                   if "apt-get install" in step)
    assert "rm -rf /var/lib/apt/lists/* /etc/munge/munge.key" in install
    assert os.access(os.path.join(DOCKER, "slurm", "entrypoint.sh"), os.X_OK)


def test_distrains_code_is_copied_after_the_heavy_layers():
    text = _read("docker", "Dockerfile")
    assert text.index("pip install") < text.index("COPY distrain /src/distrain")
    assert "ARG BASE_IMAGE=" in text and "ARG TENSORFLOW=" in text
    assert "--no-index" in text                          # builds from docker/wheels


def test_no_key_or_credential_is_in_docker_or_the_build_context():
    for folder, _, files in os.walk(DOCKER):
        for name in files:
            assert not re.match(r"(id_|ssh_host_|known_hosts|authorized_keys)", name), name
            if name.endswith(".whl"):
                continue
            text = open(os.path.join(folder, name), "rb").read()
            assert b"PRIVATE KEY" not in text and b"BEGIN CERTIFICATE" not in text, name
    ignored = _read(".dockerignore").splitlines()
    assert "*" in ignored                                # the context is an allow-list
    allowed = {line[1:] for line in ignored if line.startswith("!")}
    assert not any(path.startswith(("docker/out", ".git", "tests")) for path in allowed)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
@pytest.mark.parametrize("script", ["entrypoint.sh", "make-base.sh", "make-wheelhouse.sh",
                                    "slurm/entrypoint.sh"])
def test_scripts_pass_shellcheck(script):
    done = subprocess.run(["shellcheck", os.path.join(DOCKER, script)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout


def test_sshd_takes_keys_only_from_the_volume():
    config = dict(line.split(None, 1) for line in _read("docker", "sshd_config").splitlines()
                  if line.strip() and not line.startswith("#"))
    assert config["PasswordAuthentication"] == "no"
    assert config["KbdInteractiveAuthentication"] == "no"
    assert config["PermitRootLogin"] == "no"
    assert config["HostKey"].startswith("/keys/")
    assert config["AuthorizedKeysFile"].startswith("/keys/")


def test_the_readme_and_the_manual_show_the_commands_the_compose_tests_run():
    up = "docker compose -f docker/compose.yaml up --scale worker=3 --exit-code-from launcher"
    build = "docker compose -f docker/compose.yaml build"
    for doc in (_read("README.md"), _read("docs", "docker.md"), _read("docker", "compose.yaml")):
        assert build in doc and up in doc
    tests = _read("tests", "docker", "test_compose.py")
    assert '"up", "--scale", "worker=3", "--exit-code-from", "launcher"' in tests
