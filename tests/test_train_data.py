"""The training program's data sources under a real mpirun: image folders, TFRecords and
factories; N ranks reproduce one rank; uneven shards give every rank the same steps."""
import os
import re

import numpy as np
import pytest

from conftest import ROOT, run_mpi
from data_files import image_folder, tfrecord_files
from test_train import TRAIN, final_weights

PROGRAMS = os.path.join(ROOT, "tests", "user_programs")
WITH_PROGRAMS = {"PYTHONPATH": PROGRAMS + os.pathsep + ROOT}


def fixed_samples():
    import sys
    sys.path.insert(0, PROGRAMS)
    from datasets_for_tests import samples
    return samples()


def steps_per_epoch(stdout: str) -> int:
    return int(re.search(r"(\d+) steps/epoch", stdout).group(1))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The same 128 samples as an image folder, one TFRecord file, and a factory."""
    root = tmp_path_factory.mktemp("sources")
    x, y = fixed_samples()
    return {"images": "images:" + image_folder(root / "images", x, y),
            "tfrecord": "tfrecord:" + tfrecord_files(root / "records", x, y, files=1),
            "factory": "datasets_for_tests:whole"}


@pytest.mark.mpi
@pytest.mark.timeout(300)
@pytest.mark.parametrize("source", ["images", "tfrecord", "factory"])
def test_two_ranks_reproduce_one_rank(tmp_path, sources, source):
    """Same seed and global batch (32): weights after 2 epochs of 4 steps agree."""
    results = {}
    for ranks in (1, 2):
        out = tmp_path / f"np{ranks}"
        result = run_mpi(ranks, TRAIN + ["--model", "mlp", "--dataset", sources[source],
                                         "--batch-size", str(32 // ranks), "--epochs", "2",
                                         "--no-scale-lr", "--checkpoint-dir", str(out),
                                         "--no-cost-model"], timeout=200, **WITH_PROGRAMS)
        assert result.returncode == 0, result.stderr[-3000:]
        assert steps_per_epoch(result.stdout) == 4
        results[ranks] = final_weights(out)
    (meta1, weights1), (meta2, weights2) = results[1], results[2]
    assert meta1["step"] == meta2["step"] == 8
    for a, b in zip(weights1, weights2):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.mpi
@pytest.mark.timeout(300)
@pytest.mark.parametrize("ranks, steps", [(2, 4), (4, 1)])
def test_uneven_tfrecord_files_give_every_rank_the_same_steps(tmp_path, ranks, steps):
    """Files of 50, 30, 20 and 5 records: 2 ranks hold 70 and 35 (4 batches of 8 for
    both), 4 ranks 50, 30, 20 and 5 (one batch of 4 for all); nobody waits forever."""
    x, y = fixed_samples()
    pattern = tfrecord_files(tmp_path, x, y, sizes=[50, 30, 20, 5])
    result = run_mpi(ranks, TRAIN + ["--dataset", f"tfrecord:{pattern}", "--epochs", "2",
                                     "--batch-size", str(16 // ranks), "--no-cost-model"],
                     timeout=200)
    assert result.returncode == 0, result.stderr[-3000:]
    assert steps_per_epoch(result.stdout) == steps
    assert len(re.findall(r"^epoch \d+: loss", result.stdout, re.M)) == 2


@pytest.mark.mpi
@pytest.mark.timeout(300)
@pytest.mark.parametrize("ranks", [2, 4])
def test_uneven_factory_shards_give_every_rank_the_same_steps(ranks):
    """Rank r's own shard holds 8(r + 1) + 3 samples: every rank runs rank 0's 2 steps."""
    result = run_mpi(ranks, TRAIN + ["--dataset", "datasets_for_tests:uneven",
                                     "--batch-size", "4", "--epochs", "2", "--no-cost-model"],
                     timeout=200, **WITH_PROGRAMS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert steps_per_epoch(result.stdout) == 2
    assert re.search(r"^epoch 2: loss .* - \d+\.\d s", result.stdout, re.M)


@pytest.mark.mpi
@pytest.mark.timeout(200)
@pytest.mark.parametrize("ranks", [2, 4])
def test_a_rank_with_no_data_is_one_error_on_every_rank(ranks):
    result = run_mpi(ranks, TRAIN + ["--dataset", "datasets_for_tests:empty_on_last",
                                     "--no-cost-model"], timeout=150, **WITH_PROGRAMS)
    assert result.returncode == 2
    ours = [l for l in result.stderr.splitlines() if l.startswith("distrain.train: error")]
    assert ours == [f"distrain.train: error: datasets_for_tests:empty_on_last: rank "
                    f"{ranks - 1} has 0 sample(s), fewer than one batch of 32 per rank; lower "
                    f"--batch-size, add data or use fewer ranks"]
    assert "Traceback" not in result.stderr


@pytest.mark.mpi
@pytest.mark.timeout(200)
def test_an_unreadable_image_on_rank_1_is_reported_once(tmp_path):
    x, y = fixed_samples()
    folder = image_folder(tmp_path / "images", x[:40], y[:40])
    paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs)
    bad = paths[1]  # in rank 1's share (files 1, 3, ...), checked by rank 1 alone
    with open(bad, "wb") as stream:
        stream.write(b"not a png")
    result = run_mpi(2, TRAIN + ["--dataset", f"images:{folder}", "--batch-size", "4",
                                 "--no-cost-model"], timeout=150)
    assert result.returncode == 2
    ours = [l for l in result.stderr.splitlines() if l.startswith("distrain.train: error")]
    assert len(ours) == 1 and f"cannot decode image {bad!r}" in ours[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.mpi
@pytest.mark.timeout(400)
def test_digits_as_images_and_tfrecords_train_like_the_arrays(tmp_path):
    """digits' training split exported both ways reaches the arrays' accuracy."""
    from distrain.train.data import load_dataset
    data = load_dataset("digits", 42)
    specs = {"arrays": "digits",
             "images": "images:" + image_folder(tmp_path / "images", data.x_train,
                                                data.y_train),
             "tfrecord": "tfrecord:" + tfrecord_files(tmp_path / "records", data.x_train,
                                                      data.y_train, files=4)}
    accuracy = {}
    for name, spec in specs.items():
        result = run_mpi(2, TRAIN + ["--model", "cnn", "--dataset", spec, "--epochs", "5",
                                     "--optimizer", "adam", "--lr", "0.002",
                                     "--no-cost-model"], timeout=180)
        assert result.returncode == 0, result.stderr[-3000:]
        last = re.findall(r"^epoch 5: loss [\d.]+ - accuracy ([\d.]+)", result.stdout, re.M)
        accuracy[name] = float(last[0])
    assert accuracy["arrays"] >= 0.9, accuracy
    for name in ("images", "tfrecord"):
        assert abs(accuracy[name] - accuracy["arrays"]) <= 0.04, accuracy
