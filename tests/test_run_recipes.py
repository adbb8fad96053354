"""The launch/ recipes: shell syntax, the distrain-run command each one builds (parsed by
distrain-run's own parser), the hostfile, the MPIJob's structure, and their manual."""
import os
import shutil
import subprocess

import pytest
import yaml

from distrain.run.cli import build_parser, config_from_args
from distrain.run.hosts import parse_hostfile, read_hostfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch")
pytestmark = pytest.mark.timeout(60)

RECIPES = ("local.sh", "hostfile.example", "slurm.sbatch", "mpijob.yaml")


def _config(argv):
    return config_from_args(build_parser().parse_args(argv))


@pytest.mark.parametrize("script", ["local.sh", "slurm.sbatch"])
def test_scripts_parse_and_are_executable(script):
    path = os.path.join(LAUNCH, script)
    assert os.access(path, os.X_OK)
    done = subprocess.run(["bash", "-n", path], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def fake_bin(tmp_path):
    """A PATH whose distrain-run and srun record how they were called, and whose scontrol
    lists two nodes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "record"
    for name in ("distrain-run", "srun"):
        (bin_dir / name).write_text(
            "#!/usr/bin/env bash\n"
            f"printf '%s\\0' \"$0\" \"$@\" > {record}\n"
            f"env -0 > {tmp_path}/environ\n")
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho node7\necho node8\n")
    for script in bin_dir.iterdir():
        script.chmod(0o755)

    def run(script, *args, expect=0, **env):
        environ = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path),
                   "PYTHONPATH": ROOT, **env}
        done = subprocess.run([os.path.join(LAUNCH, script), *args], env=environ,
                              cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert done.returncode == expect, done.stderr
        if expect:
            assert not record.exists()
            return done.stderr
        argv = record.read_text().split("\0")[:-1]
        return os.path.basename(argv[0]), argv[1:]
    run.tmp_path = tmp_path
    return run


def test_local_sh_builds_a_valid_distrain_run_command(fake_bin):
    name, argv = fake_bin("local.sh", "--model", "cnn", NP="4", MAX_RESTARTS="2")
    assert name == "distrain-run"
    config = _config(argv)
    assert (config.np, config.max_restarts, config.hosts) == (4, 2, ())
    assert (config.stall_warning_seconds, config.stall_shutdown_seconds) == (60, 600)
    assert config.command == ("python", "-m", "distrain.train", "--checkpoint-dir",
                              "./checkpoints", "--model", "cnn")


def test_slurm_sbatch_srun_mode_uses_pmix_and_kills_on_a_bad_exit(fake_bin):
    name, argv = fake_bin("slurm.sbatch", "--epochs", "2", SLURM_CPUS_PER_TASK="4")
    assert name == "srun"
    assert argv[:3] == ["--mpi=pmix", "--kill-on-bad-exit=1", "--distribution=block"]
    assert argv[3:6] == ["python", "-m", "distrain.train"] and argv[-2:] == ["--epochs", "2"]


def test_slurm_sbatch_mpirun_mode_is_elastic_on_the_nodes_the_job_holds(fake_bin):
    name, argv = fake_bin("slurm.sbatch", "--epochs", "2", MODE="mpirun", SLURM_NTASKS="4",
                          SLURM_NTASKS_PER_NODE="2", SLURM_JOB_NODELIST="node[7-8]")
    assert name == "distrain-run"
    config = _config(argv)
    assert (config.np, config.min_np, config.max_np, config.reset_limit) == (4, 1, 4, 2)
    assert config.host_discovery_script == "python -m distrain.run.slurm_nodes hosts --live"
    assert config.max_restarts == 0 and config.hosts == ()
    assert config.command[:3] == ("python", "-m", "distrain.train")


def test_slurm_sbatch_mpirun_mode_without_restarts_runs_on_the_allocation(fake_bin):
    name, argv = fake_bin("slurm.sbatch", "--epochs", "2", MODE="mpirun", SLURM_NTASKS="4",
                          SLURM_NTASKS_PER_NODE="2", SLURM_JOB_NODELIST="node[7-8]",
                          MAX_RESTARTS="0", MIN_NP="2")
    config = _config(argv)
    assert [(h.name, h.slots) for h in config.hosts] == [("node7", 2), ("node8", 2)]
    assert config.np == 4 and config.max_restarts == 0 and not config.elastic


def test_slurm_sbatch_keeps_the_job_when_a_node_fails():
    text = open(os.path.join(LAUNCH, "slurm.sbatch")).read()
    assert "\n#SBATCH --no-kill\n" in text


@pytest.mark.parametrize("mode", ["srun", "mpirun"])
def test_slurm_sbatch_pins_mpis_tcp_traffic_and_resumes_a_requeued_job(fake_bin, mode):
    name, argv = fake_bin("slurm.sbatch", "--epochs", "2", MODE=mode, SLURM_NTASKS="4",
                          SLURM_TASKS_PER_NODE="2(x2)", SLURM_JOB_NODELIST="node[7-8]",
                          SLURM_RESTART_COUNT="1", DISTRAIN_NETWORK_INTERFACES="10.1.0.0/16")
    assert argv[-3:] == ["--epochs", "2", "--resume"]
    if mode == "mpirun":
        assert _config(argv).network_interfaces == ("10.1.0.0/16",)
    else:
        assert "OMPI_MCA_btl_tcp_if_include=10.1.0.0/16" in (
            fake_bin.tmp_path / "environ").read_text().split("\0")


@pytest.mark.parametrize("args, env, words", [
    (["--epochs", "two"], {}, "distrain.train: error: argument --epochs"),
    (["--epochs", "2"], {"MODE": "bogus"}, "slurm.sbatch: MODE must be srun or mpirun"),
])
def test_slurm_sbatch_bad_input_is_one_line_and_exit_2_before_any_rank(fake_bin, args, env,
                                                                       words):
    err = fake_bin("slurm.sbatch", *args, expect=2, **env)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(words), err


def test_slurm_sbatch_asks_slurm_for_nodes_and_tasks():
    text = open(os.path.join(LAUNCH, "slurm.sbatch")).read()
    for directive in ("--nodes=", "--ntasks-per-node=", "--cpus-per-task=", "--time="):
        assert f"#SBATCH {directive}" in text


def test_hostfile_example_parses():
    hosts = read_hostfile(os.path.join(LAUNCH, "hostfile.example"))
    assert [(h.name, h.slots) for h in hosts] == [("node1", 4), ("node2", 4),
                                                  ("10.0.0.12", 2)]


def test_mpijob_is_a_v2beta1_mpijob_with_launcher_and_workers():
    with open(os.path.join(LAUNCH, "mpijob.yaml")) as stream:
        job = yaml.safe_load(stream)
    assert job["apiVersion"] == "kubeflow.org/v2beta1" and job["kind"] == "MPIJob"
    assert job["metadata"]["name"]
    spec = job["spec"]
    assert isinstance(spec["slotsPerWorker"], int) and spec["slotsPerWorker"] >= 1
    assert spec["mpiImplementation"] == "OpenMPI"
    assert spec["runPolicy"]["cleanPodPolicy"] in ("Running", "All", "None")
    replicas = spec["mpiReplicaSpecs"]
    assert set(replicas) == {"Launcher", "Worker"}
    assert replicas["Launcher"]["replicas"] == 1 and replicas["Worker"]["replicas"] >= 1
    for role in replicas.values():
        container = role["template"]["spec"]["containers"][0]
        assert container["name"] and container["image"]
        volumes = {v["name"] for v in role["template"]["spec"].get("volumes", [])}
        assert {m["name"] for m in container.get("volumeMounts", [])} <= volumes
    launcher = replicas["Launcher"]["template"]["spec"]["containers"][0]
    assert launcher["command"] == ["distrain-run"]
    args = launcher["args"]
    assert all(isinstance(a, str) for a in args)
    assert args[args.index("--hostfile") + 1] == "/etc/mpi/hostfile"
    config = _config([a for i, a in enumerate(args)
                      if a != "--hostfile" and args[i - 1] != "--hostfile"])
    assert config.np == replicas["Worker"]["replicas"] * spec["slotsPerWorker"]
    assert config.command[:3] == ("python", "-m", "distrain.train")


def test_the_manual_documents_every_flag_recipe_and_setting():
    text = open(os.path.join(ROOT, "docs", "launcher.md")).read()
    for recipe in RECIPES:
        assert f"launch/{recipe}" in text
    for action in build_parser()._actions:
        for flag in action.option_strings:
            assert f"`{flag}" in text or f" {flag}" in text, flag
    for name in ("DISTRAIN_STALL_WARNING_SECONDS", "DISTRAIN_STALL_SHUTDOWN_SECONDS",
                 "DISTRAIN_RESTART_COUNT", "DISTRAIN_MPIRUN", "OMP_NUM_THREADS",
                 "TF_NUM_INTRAOP_THREADS", "DISTRAIN_LAUNCHER"):
        assert name in text


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
@pytest.mark.parametrize("script", ["local.sh", "slurm.sbatch"])
def test_scripts_pass_shellcheck(script):
    done = subprocess.run(["shellcheck", os.path.join(LAUNCH, script)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout


def test_hostfile_parser_accepts_the_mpi_operator_hostfile_format():
    text = ("distrain-train-worker-0.distrain-train.default.svc slots=2\n"
            "distrain-train-worker-1.distrain-train.default.svc slots=2\n")
    assert sum(h.slots for h in parse_hostfile(text)) == 4


MPIJOB_SCHEMA = os.environ.get("DISTRAIN_MPIJOB_SCHEMA", os.path.join(
    ROOT, os.pardir, "shared", "schemas", "kubeflow.org_mpijobs.yaml"))


def _strict(schema):
    """The CRD's schema as kubectl's strict field validation applies it: an object's fields
    other than those it lists are errors, unless it preserves unknown fields."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [_strict(item) for item in schema]
    return schema


@pytest.fixture(scope="module")
def mpijob_validator():
    """A JSON-schema validator for MPIJob v2beta1 from the MPI Operator's CRD."""
    if not os.path.isfile(MPIJOB_SCHEMA):
        reason = (f"the MPIJob CRD is not at {MPIJOB_SCHEMA} (set DISTRAIN_MPIJOB_SCHEMA to "
                  f"kubeflow/mpi-operator's manifests/base/kubeflow.org_mpijobs.yaml)")
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    import jsonschema
    with open(MPIJOB_SCHEMA) as stream:
        crd = next(doc for doc in yaml.safe_load_all(stream) if doc)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v2beta1")
    schema = _strict(version["schema"]["openAPIV3Schema"])
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    cls.check_schema(schema)
    return cls(schema)


def test_mpijob_validates_against_the_mpi_operators_crd(mpijob_validator):
    with open(os.path.join(LAUNCH, "mpijob.yaml")) as stream:
        job = yaml.safe_load(stream)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in mpijob_validator.iter_errors(job)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("path, value", [
    (("spec", "slotsPerWorker"), "two"),
    (("spec", "mpiImplementation"), "OpenMP"),
    (("spec", "runPolicy", "backoffLimit"), "none"),
    (("spec", "mpiReplicaSpecs", "Launcher", "template", "spec", "containers", 0, "comand"),
     ["distrain-run"]),
])
def test_the_crd_validator_rejects_a_broken_mpijob(mpijob_validator, path, value):
    with open(os.path.join(LAUNCH, "mpijob.yaml")) as stream:
        job = yaml.safe_load(stream)
    where = job
    for key in path[:-1]:
        where = where[key]
    where[path[-1]] = value
    assert not mpijob_validator.is_valid(job)
