"""The training program under a real mpirun: equivalence, accuracy, resume, consistency."""
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, json_rows, mpirun_argv, rank_env, run_mpi
from distrain.train.checkpoint import weights_digest

TRAIN = ["-m", "distrain.train"]


def final_weights(directory):
    with np.load(os.path.join(directory, "checkpoint.npz")) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        return meta, [data[k] for k in sorted(data.files) if k.startswith("model/")]


# The weights the training program starts from: its model built after its seeding, as
# distrain.train.runner does it on rank 0 (whose weights every rank receives).
INITIAL_WEIGHTS = """
import sys
import numpy as np
from distrain.train.config import TrainConfig
from distrain.train.data import load_dataset
from distrain.train.models import build_model
from distrain.train.rank_setup import configure_tensorflow, quiet_tensorflow
config = TrainConfig(model=sys.argv[1])
quiet_tensorflow()
configure_tensorflow(1, 0, config.seed)
data = load_dataset(config.dataset, config.seed, config.synthetic_spec())
model = build_model(config.model, data.input_shape, data.num_classes)
np.savez(sys.argv[2], *[np.asarray(v) for v in model.weights])
"""


def initial_weights(model: str, path) -> list:
    done = subprocess.run([sys.executable, "-c", INITIAL_WEIGHTS, model, str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


@pytest.mark.mpi
@pytest.mark.timeout(240)
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_n_ranks_reproduce_one_rank(tmp_path, model):
    """Same seed and global batch (64): weights after 8 steps agree at 1, 2 and 4 ranks."""
    results = {}
    for ranks in (1, 2, 4):
        out = tmp_path / f"np{ranks}"
        result = run_mpi(ranks, TRAIN + ["--model", model, "--batch-size", str(64 // ranks),
                                         "--steps-per-epoch", "8", "--no-scale-lr",
                                         "--checkpoint-dir", str(out), "--no-cost-model"],
                         timeout=180)
        assert result.returncode == 0, result.stderr[-3000:]
        results[ranks] = final_weights(out)
    meta1, weights1 = results[1]
    assert meta1["step"] == 8 and meta1["global_batch"] == 64
    for ranks in (2, 4):
        meta, weights = results[ranks]
        assert meta["step"] == 8 and meta["global_batch"] == 64
        for a, b in zip(weights1, weights):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The runs trained: every trainable kernel moved away from where the program started.
    start = initial_weights(model, tmp_path / "initial.npz")
    assert [w.shape for w in start] == [w.shape for w in weights1]
    kernels = [(a, b) for a, b in zip(start, weights1) if a.ndim > 1]
    assert kernels and all(not np.allclose(a, b) for a, b in kernels)


@pytest.mark.mpi
@pytest.mark.timeout(240)
def test_digits_reaches_90_percent_on_two_ranks():
    result = run_mpi(2, TRAIN + ["--model", "cnn", "--dataset", "digits", "--epochs", "8",
                                 "--optimizer", "adam", "--lr", "0.002", "--no-cost-model"],
                     timeout=200)
    assert result.returncode == 0, result.stderr[-3000:]
    accuracy = float(re.search(r"^test accuracy ([\d.]+)$", result.stdout, re.M).group(1))
    assert accuracy >= 0.9, result.stdout[-2000:]
    # Rank 0 alone prints: one summary line per epoch.
    assert len(re.findall(r"^epoch \d+: loss", result.stdout, re.M)) == 8
    assert "averaged over 2 ranks" in result.stdout


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    ckpt = tmp_path / "ckpt"
    args = TRAIN + ["--model", "mlp", "--epochs", "3", "--steps-per-epoch", "300",
                    "--synthetic-samples", "20000",
                    "--checkpoint-dir", str(ckpt), "--checkpoint-every", "50",
                    "--no-cost-model"]
    first = subprocess.Popen(mpirun_argv(2) + [sys.executable] + args, cwd=ROOT,
                             env=rank_env(2), stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    try:
        for line in first.stdout:  # kill every process of the job after a checkpoint
            if line.startswith("checkpoint saved at step"):
                break
        subprocess.run(["pkill", "-KILL", "-f", str(ckpt)], check=False)
    finally:
        first.wait(timeout=30)
    deadline = time.monotonic() + 10
    while subprocess.run(["pgrep", "-f", str(ckpt)], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "ranks survived the kill"
        time.sleep(0.1)
    meta, weights = final_weights(ckpt)
    saved_step = meta["step"]
    assert 50 <= saved_step < 900 and saved_step % 50 == 0
    assert [f for f in os.listdir(ckpt) if f.endswith(".tmp")] == []  # nothing half-written

    resumed = run_mpi(2, args + ["--resume"], timeout=200)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    match = re.search(r"^resumed from step (\d+), weights (\w+)$", resumed.stdout, re.M)
    assert int(match.group(1)) == saved_step
    assert match.group(2) == weights_digest(weights)  # restored = last checkpoint's weights
    meta_end, _ = final_weights(ckpt)
    assert meta_end["step"] == 900
    assert re.search(rf"^Epoch {saved_step // 300 + 1}/3$", resumed.stdout, re.M)


@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_consistency_check_names_diverged_ranks():
    result = run_mpi(2, TRAIN + ["--model", "models_for_tests:diverging", "--steps-per-epoch",
                                 "6", "--check-consistency", "3", "--no-cost-model"],
                     timeout=100, PYTHONPATH=os.path.join(ROOT, "tests", "user_programs") +
                     os.pathsep + ROOT)
    assert result.returncode == 1
    lines = [l for l in result.stderr.splitlines() if l.startswith("distrain.train: error")]
    assert lines == ["distrain.train: error: weights diverged at step 3: rank 1 differs from "
                     "rank 0; look for rank-dependent updates to trainable variables"]


@pytest.mark.timeout(120)
def test_single_rank_smoke_without_a_launcher(tmp_path):
    result = subprocess.run([sys.executable] + TRAIN + [
        "--model", "resnet", "--steps-per-epoch", "3", "--batch-size", "8",
        "--compression", "fp16", "--mixed-precision", "--checkpoint-dir", str(tmp_path),
        "--no-cost-model"], cwd=ROOT, env=rank_env(1), capture_output=True, text=True,
        timeout=100)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 rank(s), backend local" in result.stdout
    assert re.search(r"^epoch 1: loss [\d.]+ ", result.stdout, re.M)
    meta, _ = final_weights(tmp_path)
    assert meta["step"] == 3


@pytest.mark.mpi
@pytest.mark.timeout(150)
def test_horovod_keras_program_runs_unchanged():
    result = run_mpi(2, ["tests/user_programs/horovod_style_keras.py"], timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json_rows(result.stdout)
    assert sorted(r["rank"] for r in rows) == [0, 1]
    assert rows[0]["class"] == "SGD"
    assert rows[0]["digest"] == rows[1]["digest"]       # gradients were averaged
    assert rows[0]["loss"] == rows[1]["loss"]           # metrics were averaged
    assert rows[0]["lr"] == pytest.approx(0.1)          # warm-up ended at 0.05 x 2


@pytest.mark.mpi
@pytest.mark.timeout(150)
def test_horovod_tape_program_runs_in_tf_function():
    result = run_mpi(2, ["tests/user_programs/horovod_style_tape.py"], timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json_rows(result.stdout)
    assert len(rows) == 2 and rows[0]["digest"] == rows[1]["digest"]
    assert rows[0]["tracings"] == 1


@pytest.mark.mpi
@pytest.mark.timeout(240)
def test_distrain_run_restart_resumes_from_the_checkpoint(tmp_path):
    ckpt = tmp_path / "ckpt"
    argv = ["distrain-run", "-np", "2", "--max-restarts", "1", sys.executable, "-m",
            "distrain.train", "--model", "models_for_tests:crash_once", "--steps-per-epoch",
            "20", "--checkpoint-dir", str(ckpt), "--checkpoint-every", "5",
            "--no-cost-model"]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=220,
                            env=rank_env(2, PYTHONPATH=os.path.join(ROOT, "tests", "user_programs")
                                         + os.pathsep + ROOT))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "injected crash" in result.stdout + result.stderr
    assert re.search(r"resumed from step 10, weights \w+", result.stdout), result.stdout[-3000:]
    meta, _ = final_weights(ckpt)
    assert meta["step"] == 20


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_backward_passes_reproduce_the_whole_batch(tmp_path):
    """``--backward-passes N`` at batch b reaches the weights of one pass at N x b, on one rank
    and across ranks, with overlap, and with the global batch fixed (64 samples a step)."""
    runs = {"1 rank, 1 pass of 64": (1, ["--batch-size", "64"]),
            "1 rank, 4 passes of 16": (1, ["--batch-size", "16", "--backward-passes", "4"]),
            "2 ranks, 4 passes of 8": (2, ["--batch-size", "8", "--backward-passes", "4"]),
            "2 ranks, 2 passes of 16, overlap": (2, ["--batch-size", "16", "--backward-passes",
                                                     "2", "--overlap"]),
            "4 ranks, global 64, 2 passes": (4, ["--global-batch-size", "64",
                                                 "--backward-passes", "2"])}
    results = {}
    for number, (label, (ranks, flags)) in enumerate(runs.items()):
        out = tmp_path / f"run{number}"
        result = run_mpi(ranks, TRAIN + ["--model", "mlp", "--steps-per-epoch", "6",
                                         "--no-scale-lr", "--no-cost-model",
                                         "--checkpoint-dir", str(out), *flags], timeout=180)
        assert result.returncode == 0, f"{label}: {result.stderr[-3000:]}"
        results[label] = final_weights(out)
    (reference_meta, reference), *others = results.values()
    assert reference_meta["step"] == 6 and reference_meta["global_batch"] == 64
    for label, (meta, weights) in list(results.items())[1:]:
        assert meta["step"] == 6 and meta["global_batch"] == 64, label
        for a, b in zip(reference, weights):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6, err_msg=label)


def test_backward_passes_bad_input_is_one_line():
    """A zero pass count, and a global batch that the passes do not split, exit 2 once."""
    for flags, words in ((["--backward-passes", "0"], "--backward-passes must be a positive"),
                         (["--global-batch-size", "30", "--backward-passes", "4"],
                          "does not split evenly over 1 ranks x 4 backward passes")):
        done = subprocess.run([sys.executable, *TRAIN, "--no-cost-model", *flags],
                              capture_output=True, text=True, timeout=120, env=rank_env(1))
        assert done.returncode == 2, done.stderr[-2000:]
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and words in lines[0], done.stderr
