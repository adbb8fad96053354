"""Under horovodrun, in a TensorFlow 2.15 + Horovod 0.28.1 environment (.ci/run builds it).

These tests need ``horovodrun`` and ``horovod.tensorflow``; tests/conftest.py leaves this
folder out, and says so, where Horovod is not installed.
"""
import json
import os
import re
import shutil
import sys

import numpy as np
import pytest

from conftest import json_rows, rank_env, run_launcher, run_mpi

TRAIN = ["-m", "distrain.train", "--model", "cnn", "--steps-per-epoch", "8", "--no-cost-model"]


def horovodrun(np_: int, args: list[str], timeout: float):
    return run_launcher([shutil.which("horovodrun"), "-np", str(np_), sys.executable] + args,
                        timeout, rank_env(np_))


def untag(text: str) -> str:
    """Drops horovodrun's ``[1,0]<stdout>:`` prefixes."""
    return re.sub(r"\[\d+,\d+\]<std(?:out|err)>:", "\n", text)


@pytest.mark.timeout(300)
def test_train_uses_the_horovod_backend_and_matches_the_mpi_backend(tmp_path):
    with_horovod = horovodrun(2, TRAIN + ["--checkpoint-dir", str(tmp_path / "h")], 240)
    assert with_horovod.returncode == 0, with_horovod.stderr[-3000:]
    assert "2 rank(s), backend horovod" in untag(with_horovod.stdout)
    with_mpi = run_mpi(2, TRAIN + ["--checkpoint-dir", str(tmp_path / "m")], timeout=240)
    assert with_mpi.returncode == 0, with_mpi.stderr[-3000:]
    assert "2 rank(s), backend mpi" in with_mpi.stdout
    with np.load(tmp_path / "h" / "checkpoint.npz") as h, \
            np.load(tmp_path / "m" / "checkpoint.npz") as m:
        keys = [k for k in h.files if k.startswith("model/")]
        assert keys
        for key in keys:
            np.testing.assert_allclose(h[key], m[key], rtol=1e-5, atol=1e-6)


@pytest.mark.timeout(300)
def test_collective_suite_on_the_horovod_backend():
    result = horovodrun(2, ["-m", "pytest", "tests/ranks", "-o", "python_files=rank_*.py",
                            "-q", "-p", "no:cacheprovider", "--color=no"], 240)
    text = untag(result.stdout)
    assert result.returncode == 0, text[-5000:]
    summaries = re.findall(r"^(\d+) passed, (\d+) skipped", text, re.M)
    assert len(summaries) == 2 and int(summaries[0][0]) >= 140, text[-3000:]


@pytest.mark.timeout(200)
@pytest.mark.parametrize("ranks", [2, 4])
def test_process_sets_on_the_horovod_backend(ranks):
    """Dynamic sets need Horovod started in its dynamic mode: the file runs on its own."""
    result = horovodrun(ranks, ["-m", "pytest", "tests/ranks/rank_process_sets.py", "-o",
                                "python_files=rank_*.py", "-q", "-p", "no:cacheprovider",
                                "--color=no"], 150)
    text = untag(result.stdout)
    assert result.returncode == 0, text[-5000:] + result.stderr[-3000:]
    summaries = re.findall(r"^(\d+) passed, (\d+) skipped", text, re.M)
    assert len(summaries) == ranks and all(int(p) >= 6 for p, _ in summaries), text[-3000:]


@pytest.mark.timeout(200)
def test_static_process_sets_on_the_horovod_backend():
    result = horovodrun(4, [os.path.join("tests", "user_programs",
                                         "horovod_style_process_sets.py")], 150)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(untag(result.stdout).strip().splitlines()[-1])
    assert [row["rank"] for row in rows] == [0, 1, 2, 3]
    for row in rows:
        assert row["backend"] == "horovod" and row["ids"] == [1, 2]
        assert row["sum"] == (2.0 if row["rank"] % 2 == 0 else 4.0)
        assert row["root"] == (2 if row["rank"] % 2 == 0 else 3)
        assert "HOROVOD_DYNAMIC_PROCESS_SETS=1" in row["add"]


@pytest.mark.timeout(200)
@pytest.mark.parametrize("program", ["horovod_style_keras.py", "horovod_style_tape.py"])
def test_horovod_programs_on_the_horovod_backend(program):
    result = horovodrun(2, [os.path.join("tests", "user_programs", program)], 150)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json_rows(untag(result.stdout))
    assert len(rows) == 2 and rows[0]["digest"] == rows[1]["digest"]
