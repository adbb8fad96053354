"""Horovod's HOROVOD_* settings under distrain: the table (distrain/horovod_settings.py), its
application at init() on the local backend, its page in docs/migration.md, and
HOROVOD_TIMELINE over a real distrain-run of two ranks."""
import json
import os
import pathlib
import sys

import pytest

from conftest import ROOT, rank_env, run_launcher
from distrain import environment as env
from distrain import horovod_settings
from distrain.horovod_settings import SETTINGS, notes, translate

# what job scripts written for Horovod 0.28.1 set (runner/common/util/config_parser.py and
# the core's variables)
HOROVOD_RUNTIME_SETTINGS = """HOROVOD_FUSION_THRESHOLD HOROVOD_CYCLE_TIME HOROVOD_CACHE_CAPACITY
HOROVOD_HIERARCHICAL_ALLREDUCE HOROVOD_HIERARCHICAL_ALLGATHER HOROVOD_TORUS_ALLREDUCE
HOROVOD_AUTOTUNE HOROVOD_AUTOTUNE_LOG HOROVOD_AUTOTUNE_WARMUP_SAMPLES
HOROVOD_AUTOTUNE_STEPS_PER_SAMPLE HOROVOD_AUTOTUNE_BAYES_OPT_MAX_SAMPLES
HOROVOD_AUTOTUNE_GAUSSIAN_PROCESS_NOISE HOROVOD_TIMELINE HOROVOD_TIMELINE_MARK_CYCLES
HOROVOD_STALL_CHECK_DISABLE HOROVOD_STALL_CHECK_TIME_SECONDS
HOROVOD_STALL_SHUTDOWN_TIME_SECONDS HOROVOD_MPI_THREADS_DISABLE HOROVOD_NUM_NCCL_STREAMS
HOROVOD_THREAD_AFFINITY HOROVOD_GLOO_TIMEOUT_SECONDS HOROVOD_LOG_LEVEL HOROVOD_LOG_HIDE_TIME
HOROVOD_ADASUM_MPI_CHUNK_SIZE HOROVOD_BATCH_D2D_MEMCOPIES HOROVOD_CONTROLLER
HOROVOD_CPU_OPERATIONS HOROVOD_GPU_OPERATIONS HOROVOD_DISABLE_GROUP_FUSION
HOROVOD_DYNAMIC_PROCESS_SETS HOROVOD_ELASTIC HOROVOD_ENABLE_ASYNC_COMPLETION
HOROVOD_ENABLE_XLA_OPS""".split()


def test_the_table_has_every_horovod_setting_once():
    names = [row.name for row in SETTINGS]
    assert len(names) == len(set(names))
    assert sorted(set(HOROVOD_RUNTIME_SETTINGS) - set(names)) == []


def test_honoured_settings_stand_for_distrain_settings():
    got = translate({"HOROVOD_FUSION_THRESHOLD": "1048576",
                     "HOROVOD_STALL_CHECK_TIME_SECONDS": "30",
                     "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS": "120.5",
                     "HOROVOD_TIMELINE": "/tmp/timeline.json"})
    assert got == {env.FUSION_THRESHOLD: "1048576", env.STALL_WARNING_SECONDS: "30.0",
                   env.STALL_SHUTDOWN_SECONDS: "120.5", env.TIMELINE: "/tmp/timeline.json"}


def test_an_explicit_distrain_setting_wins():
    got = translate({"HOROVOD_FUSION_THRESHOLD": "1048576", env.FUSION_THRESHOLD: "0",
                     "HOROVOD_STALL_CHECK_TIME_SECONDS": "30"})
    assert got == {env.STALL_WARNING_SECONDS: "30.0"}


@pytest.mark.parametrize("disable", ["1", "true"])
def test_stall_check_disable_turns_the_inspector_off_whatever_its_times(disable):
    got = translate({"HOROVOD_STALL_CHECK_DISABLE": disable,
                     "HOROVOD_STALL_CHECK_TIME_SECONDS": "30",
                     "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS": "60"})
    assert got == {env.STALL_WARNING_SECONDS: "0", env.STALL_SHUTDOWN_SECONDS: "0"}
    assert translate({"HOROVOD_STALL_CHECK_DISABLE": "0"}) == {}


def test_log_level_error_silences_stall_warnings_and_the_notes():
    quiet = {"HOROVOD_LOG_LEVEL": "error", "HOROVOD_CYCLE_TIME": "5"}
    assert translate(quiet) == {env.STALL_WARNING_SECONDS: "0"}
    assert notes(quiet) == []
    assert translate({"HOROVOD_LOG_LEVEL": "debug"}) == {}
    assert len(notes({"HOROVOD_LOG_LEVEL": "warning", "HOROVOD_CYCLE_TIME": "5"})) == 1


@pytest.mark.parametrize("variable, value, wanted", [
    ("HOROVOD_FUSION_THRESHOLD", "abc", "a number of bytes"),
    ("HOROVOD_FUSION_THRESHOLD", "-1", "a number of bytes"),
    ("HOROVOD_STALL_CHECK_TIME_SECONDS", "soon", "a number of seconds"),
    ("HOROVOD_STALL_CHECK_DISABLE", "maybe", "1 or 0"),
    ("HOROVOD_LOG_LEVEL", "loud", "one of TRACE"),
    ("HOROVOD_TIMELINE", "/no/such/dir/t.json", "create it"),
])
def test_a_bad_value_is_one_line_naming_the_variable_and_what_to_do(variable, value, wanted):
    with pytest.raises(ValueError) as raised:
        translate({variable: value})
    message = str(raised.value)
    assert message.startswith(f"{variable}=") and wanted in message and "\n" not in message


def test_settings_without_effect_get_one_line_each_saying_why():
    lines = notes({"HOROVOD_CYCLE_TIME": "5", "HOROVOD_HIERARCHICAL_ALLREDUCE": "1",
                   "HOROVOD_FUSION_THRESHOLD": "1024", "HOROVOD_CONTROLLER": "mpi",
                   "HOROVOD_CPU_OPERATIONS": "gloo", "HOROVOD_DYNAMIC_PROCESS_SETS": "1"})
    assert [line.split(" has no effect here: ")[0] for line in lines] == [
        "[distrain] HOROVOD_CPU_OPERATIONS=gloo", "[distrain] HOROVOD_CYCLE_TIME=5",
        "[distrain] HOROVOD_HIERARCHICAL_ALLREDUCE=1"]
    assert all(len(line.split(": ", 1)[1]) > 20 for line in lines)   # each says why


@pytest.fixture
def clean(monkeypatch):
    """No HOROVOD_*/DISTRAIN_* runtime setting from the outer environment; notes not yet
    printed in this process."""
    for row in SETTINGS:
        monkeypatch.delenv(row.name, raising=False)
    for name in (env.FUSION_THRESHOLD, env.STALL_WARNING_SECONDS, env.STALL_SHUTDOWN_SECONDS,
                 env.TIMELINE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(horovod_settings, "_announced", False)
    return monkeypatch


def test_init_applies_the_table_and_shutdown_takes_it_back(clean, capsys):
    import distrain
    clean.setenv("HOROVOD_FUSION_THRESHOLD", "2048")
    clean.setenv("HOROVOD_CYCLE_TIME", "3.5")
    clean.setenv(env.STALL_WARNING_SECONDS, "7")
    clean.setenv("HOROVOD_STALL_CHECK_TIME_SECONDS", "30")
    distrain.init("local")
    try:
        assert os.environ[env.FUSION_THRESHOLD] == "2048"
        assert os.environ[env.STALL_WARNING_SECONDS] == "7"       # explicit, kept
        distrain.shutdown()
        distrain.init("local")                                     # notes once a process
    finally:
        distrain.shutdown()
    assert env.FUSION_THRESHOLD not in os.environ
    assert os.environ[env.STALL_WARNING_SECONDS] == "7"
    err = capsys.readouterr().err
    assert err.count("[distrain] HOROVOD_CYCLE_TIME=3.5 has no effect here") == 1
    assert "HOROVOD_FUSION_THRESHOLD" not in err


def test_init_with_a_bad_value_fails_and_starts_nothing(clean):
    import distrain
    clean.setenv("HOROVOD_FUSION_THRESHOLD", "abc")
    with pytest.raises(ValueError, match="HOROVOD_FUSION_THRESHOLD='abc' is not an integer"):
        distrain.init("local")
    assert not distrain.is_initialized()


def test_the_migration_guide_lists_every_setting():
    page = (pathlib.Path(ROOT) / "docs" / "migration.md").read_text()
    section = page.split("## HOROVOD_* settings", 1)[1].split("\n## ", 1)[0]
    missing = [row.name for row in SETTINGS if f"`{row.name}`" not in section]
    assert missing == []


TIMED = """
import numpy as np
import distrain as hvd
hvd.init()
hvd.allreduce(np.ones(4), name="timed.sum")
hvd.broadcast(np.ones(2), root_rank=1, name="timed.bcast")
"""


@pytest.mark.mpi
@pytest.mark.timeout(150)
def test_horovod_timeline_traces_a_distrain_run_job(tmp_path):
    path = tmp_path / "timeline.json"
    argv = [sys.executable, "-m", "distrain.run", "-np", "2", sys.executable, "-c", TIMED]
    done = run_launcher(argv, 120, rank_env(2, HOROVOD_TIMELINE=str(path)))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for written, rank in ((path, 0), (tmp_path / "timeline.rank1.json", 1)):
        events = json.loads(written.read_text())["traceEvents"]
        slices = {(e["name"], e["cat"]) for e in events if e["ph"] == "X"}
        assert {("ALLREDUCE", "timed.sum"), ("BROADCAST", "timed.bcast"),
                ("NEGOTIATE", "timed.sum")} <= slices
        assert {e["pid"] for e in events} == {rank}
