"""Bad input to the training program: one line, exit code 2, printed once, nothing written."""
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import ROOT, rank_env, run_mpi
from distrain.train.cli import main

PROGRAMS = os.path.join(ROOT, "tests", "user_programs")


def run_train(args, tmp_path):
    environment = rank_env(1, PYTHONPATH=PROGRAMS + os.pathsep + ROOT)
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user runs it: distrain quiets TF
    result = subprocess.run([sys.executable, "-m", "distrain.train"] + args, cwd=tmp_path,
                            env=environment, capture_output=True, text=True, timeout=120)
    return result


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, (result.stdout[-1000:], result.stderr[-2000:])
    errors = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("distrain.train: error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in errors[0]


@pytest.fixture
def bad_npz(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"this is not a zip file")
    return str(path)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("args, fragments", [
    (["--model", "transformers"], ["unknown model 'transformers'", "mlp, cnn, resnet",
                                   "keras.applications.NAME"]),
    (["--model", "transformer", "--transformer-width", "100"],
     ["--transformer-width 100 does not split over --transformer-heads 8"]),
    (["--vocab-size", "0"], ["--vocab-size must be a positive integer, got 0"]),
    (["--dataset", "imagenet"], ["unknown dataset 'imagenet'", "npz:PATH"]),
    (["--dataset", "npz:/no/such.npz"], ["'/no/such.npz' does not exist"]),
    (["--batch-size", "0"], ["--batch-size must be a positive integer"]),
    (["--epochs", "-1"], ["--epochs must be a positive integer"]),
    (["--batch-size", "many"], ["invalid int value: 'many'"]),
    (["--frobnicate"], ["unrecognized arguments: --frobnicate"]),
    (["--resume"], ["--resume, --checkpoint-every and --keep-checkpoints need --checkpoint-dir"]),
])
def test_bad_flags_fail_before_tensorflow_loads(tmp_path, args, fragments):
    result = run_train(args, tmp_path)
    assert_one_line_error(result, *fragments)
    assert "cudart_stub" not in result.stderr  # TensorFlow was never imported
    assert os.listdir(tmp_path) == []


@pytest.mark.timeout(120)
def test_malformed_npz_and_missing_arrays(tmp_path, bad_npz):
    assert_one_line_error(run_train(["--dataset", f"npz:{bad_npz}"], tmp_path),
                          "cannot read", "numpy.savez")
    partial = tmp_path / "partial.npz"
    np.savez(partial, x_train=np.zeros((4, 2)))
    assert_one_line_error(run_train(["--dataset", f"npz:{partial}"], tmp_path),
                          "has no y_train", "holds x_train")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("args, fragments", [
    (["--dataset", "images:/no/such/dir"], ["image directory '/no/such/dir' does not exist"]),
    (["--dataset", "tfrecord:/no/*.tfrecord"], ["no files match '/no/*.tfrecord'"]),
    (["--image-size", "big"], ["--image-size must be N or HxW"]),
])
def test_bad_data_flags_fail_before_tensorflow_loads(tmp_path, args, fragments):
    result = run_train(args, tmp_path)
    assert_one_line_error(result, *fragments)
    assert "cudart_stub" not in result.stderr
    assert os.listdir(tmp_path) == []


def _bad_sources(tmp_path):
    """Each bad source's --dataset and the fragments its one line holds."""
    import tensorflow as tf
    empty = tmp_path / "empty"
    (empty / "cats").mkdir(parents=True)
    broken = tmp_path / "broken" / "cats"
    broken.mkdir(parents=True)
    (broken / "a.png").write_bytes(b"not a png")
    garbage = tmp_path / "garbage.tfrecord"
    garbage.write_bytes(b"\x00" * 64)
    other = tmp_path / "other.tfrecord"
    with tf.io.TFRecordWriter(str(other)) as writer:
        writer.write(tf.train.Example(features=tf.train.Features(feature={
            "pixels": tf.train.Feature(float_list=tf.train.FloatList(value=[1.0]))}))
            .SerializeToString())
    return [
        (f"images:{empty}", ["no images found in", "subfolder named after the class"]),
        (f"images:{broken.parent}", ["cannot decode image", "a.png", "remove or replace"]),
        (f"tfrecord:{garbage}", ["does not match the TFRecord feature spec", "cannot read"]),
        (f"tfrecord:{other}", ["does not match the TFRecord feature spec", "no int64 label",
                               "distrain.train.data.example"]),
        ("datasets_for_tests:raising", ["dataset factory datasets_for_tests:raising raised "
                                        "FileNotFoundError: /data/train-*.tfrecord"]),
        ("datasets_for_tests:wrong_type", ["returned str, not a tf.data.Dataset"]),
        ("datasets_for_tests:batched", ["must be single integer classes (unbatched"]),
        ("datasets_for_tests:no_such", ["has no dataset factory 'no_such'"]),
    ]


@pytest.mark.timeout(600)
def test_bad_sources_are_one_line_each(tmp_path):
    cases = _bad_sources(tmp_path)
    # independent single-rank launches that fail before training, two at a time (each
    # spends most of its time importing TensorFlow)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(
            lambda case: run_train(["--dataset", case[0], "--no-cost-model"], tmp_path), cases))
    for (spec, fragments), result in zip(cases, results):
        assert_one_line_error(result, *fragments)


@pytest.mark.timeout(120)
def test_unwritable_checkpoint_directory_writes_nothing(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_train(["--checkpoint-dir", str(blocker / "ckpt"), "--steps-per-epoch", "2"],
                       tmp_path)
    assert_one_line_error(result, "checkpoint directory", "is not writable",
                          "choose another --checkpoint-dir")
    assert sorted(os.listdir(tmp_path)) == ["a-file"]


@pytest.mark.mpi
@pytest.mark.timeout(150)
def test_raising_factory_is_reported_once_across_ranks(tmp_path):
    result = run_mpi(2, ["-m", "distrain.train", "--model", "models_for_tests:raising",
                         "--checkpoint-dir", str(tmp_path / "ckpt")], timeout=120,
                     PYTHONPATH=PROGRAMS + os.pathsep + ROOT)
    assert result.returncode == 2
    ours = [l for l in result.stderr.splitlines() if l.startswith("distrain.train: error")]
    assert ours == ["distrain.train: error: model factory models_for_tests:raising raised "
                    "ValueError: no such width"]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "ckpt").exists() or os.listdir(tmp_path / "ckpt") == []


@pytest.mark.mpi
@pytest.mark.timeout(150)
def test_a_global_batch_that_does_not_split_over_the_ranks_is_one_line(tmp_path):
    result = run_mpi(3, ["-m", "distrain.train", "--global-batch-size", "64",
                         "--checkpoint-dir", str(tmp_path / "ckpt")], timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    ours = [l for l in result.stderr.splitlines() if l.startswith("distrain.train: error")]
    assert ours == ["distrain.train: error: --global-batch-size 64 does not split evenly over "
                    "3 ranks; give a multiple of every job size it may run at"]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.timeout(120)
def test_factory_that_returns_no_model_and_missing_module(capsys, monkeypatch):
    monkeypatch.syspath_prepend(PROGRAMS)
    assert main(["--model", "models_for_tests:not_a_model"]) == 2
    assert capsys.readouterr().err.strip() == (
        "distrain.train: error: model factory models_for_tests:not_a_model returned str, "
        "not a keras.Model")
    assert main(["--model", "no_such_module:factory"]) == 2
    assert "cannot import model module 'no_such_module'" in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_help_does_not_import_tensorflow():
    code = ("import sys\nfrom distrain.train.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\nprint('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, env=rank_env(1))
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr
    assert "--checkpoint-every" in result.stdout


def test_check_args_gives_the_one_line_without_training(capsys):
    from distrain.train.cli import check_args
    assert check_args(["--model", "cnn", "--epochs", "2"]) == 0
    assert check_args(["--epochs", "two"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("distrain.train: error: "), errors
