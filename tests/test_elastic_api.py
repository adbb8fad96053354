"""distrain.elastic, Horovod's elastic API on the relaunch model: commits on disk, restored
by a relaunch; a Horovod-style elastic program grown from 1 to 2 ranks and resumed after a
crash under a real distrain-run on this machine (its host listed by a discovery script)."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, json_rows, rank_env

PROGRAM = os.path.join(ROOT, "tests", "user_programs", "horovod_style_elastic.py")


@pytest.fixture
def local(tmp_path, monkeypatch):
    """One rank in this process (the local backend), committing into tmp_path."""
    import distrain
    monkeypatch.setenv("DISTRAIN_ELASTIC_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("DISTRAIN_RESTART_COUNT", raising=False)
    distrain.init("local")
    yield tmp_path / "state" / "state.npz"
    distrain.shutdown()


def _model():
    import keras
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    return model


def test_a_commit_is_restored_by_a_relaunch_with_its_attributes(local, monkeypatch):
    from distrain import elastic
    model = _model()
    model.optimizer.build(model.trainable_variables)
    state = elastic.TensorFlowKerasState(model, epoch=3, batch=7, note="kept")
    state.commit()
    committed = [np.asarray(v).copy() for v in model.weights]
    with np.load(local) as data:                  # one whole file, readable as it is
        assert json.loads(bytes(data["meta"]).decode())["attributes"] == {
            "epoch": 3, "batch": 7, "note": "kept"}
    fresh = _model()
    calls = []
    again = elastic.TensorFlowKerasState(fresh, epoch=0, batch=0, note="")
    again.register_reset_callbacks([lambda: calls.append(again.epoch)])
    monkeypatch.setenv("DISTRAIN_RESTART_COUNT", "1")

    @elastic.run
    def train(state):
        return state.epoch, state.batch, state.note

    assert train(again) == (3, 7, "kept") and calls == [3]
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(committed, fresh.weights))
    assert again.commits == 1 and again.size_at_commit == 1


def test_a_first_launch_ignores_an_old_commit(local):
    from distrain import elastic
    elastic.TensorFlowKerasState(_model(), epoch=5).commit()
    state = elastic.TensorFlowKerasState(_model(), epoch=0)
    assert elastic.run(lambda s: s.epoch)(state) == 0


def test_an_unreadable_commit_is_one_line(local, monkeypatch):
    from distrain import elastic
    from distrain.errors import UsageError
    local.parent.mkdir(parents=True)
    local.write_bytes(b"not a zip")
    monkeypatch.setenv("DISTRAIN_RESTART_COUNT", "1")
    with pytest.raises(UsageError) as raised:
        elastic.run(lambda s: None)(elastic.ObjectState(epoch=0))
    assert str(raised.value).startswith(f"cannot read the elastic commit '{local}'")


def test_the_keras_callbacks_keep_epoch_and_batch_and_commit(local):
    from distrain import elastic
    model = _model()
    state = elastic.KerasState(model, epoch=0, batch=0)
    x = np.ones((40, 3), np.float32)
    # the commit callback first: it sets batch and epoch itself before committing
    model.fit(x, x[:, :2], batch_size=10, epochs=2, verbose=0, callbacks=[
        elastic.CommitStateCallback(state, batches_per_commit=3),
        elastic.UpdateBatchStateCallback(state), elastic.UpdateEpochStateCallback(state)])
    assert (state.epoch, state.batch) == (2, 0)
    assert state.commits == 2 + 2      # after batch 3 of each epoch, and at each epoch's end
    with np.load(local) as data:
        meta = json.loads(bytes(data["meta"]).decode())
    assert meta["attributes"] == {"epoch": 2, "batch": 0}


class Elastic:
    """``distrain-run --min-np 1 --max-np 2`` of the elastic program on this machine."""

    def __init__(self, tmp_path, slots: int, *program_args, flags=()):
        self.listing = tmp_path / "hosts.txt"
        self.listing.write_text(f"localhost:{slots}\n")
        self.state = tmp_path / "state"
        argv = [sys.executable, "-m", "distrain.run", "--min-np", "1", "--max-np", "2", "--host-discovery-script",
                f"cat {self.listing}", *flags, sys.executable, PROGRAM, *program_args]
        self.out = tmp_path / "out.txt"
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=rank_env(
            2, DISTRAIN_ELASTIC_DIR=str(self.state)), stdout=open(self.out, "w"),
            stderr=subprocess.STDOUT)

    def finish(self, timeout: float = 150) -> str:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"the elastic job did not end in {timeout} s:\n{self.out.read_text()}")
        return self.out.read_text()


@pytest.mark.mpi
@pytest.mark.timeout(200)
def test_a_horovod_elastic_program_grows_from_one_rank_to_two(tmp_path):
    job = Elastic(tmp_path, 1, "20", "8")     # 160 batches: long enough to be grown
    deadline = time.monotonic() + 90
    while not (job.state / "state.npz").exists():
        assert job.proc.poll() is None and time.monotonic() < deadline, job.out.read_text()
        time.sleep(0.1)
    job.listing.write_text("localhost:2\n")
    out = job.finish()
    assert job.proc.returncode == 0, out
    assert "discovery lists more slots (localhost:2): 1 -> 2 ranks" in out
    assert "elastic: 1 -> 2 ranks on localhost:2 (more slots), from the last checkpoint " \
           "(launch 2)" in out
    rows = json_rows(out)
    assert [r["rank"] for r in sorted(rows, key=lambda r: r["rank"])] == [0, 1]
    assert {r["digest"] for r in rows} == {rows[0]["digest"]}
    assert all(r["size"] == 2 and r["epoch"] == 7 and r["resets"] == [2] and
               r["lr"] == pytest.approx(0.02) for r in rows)


@pytest.mark.mpi
@pytest.mark.timeout(200)
def test_a_crash_resumes_the_elastic_program_from_its_last_commit(tmp_path):
    job = Elastic(tmp_path, 2, "20", "2", "12", flags=["--blacklist-cooldown", "1"])
    out = job.finish()
    assert job.proc.returncode == 0, out
    assert "injected crash at batch 12" in out
    assert "elastic: host localhost left out for 1 s (--blacklist-cooldown)" in out
    commits = [line.split("commit ")[1] for line in out.splitlines() if "]<stdout>: commit" in line]
    assert commits[:2] == ["0 5", "0 10"] and commits[2] == "0 15"   # from batch 10 again
    rows = json_rows(out)
    assert len(rows) == 2 and all(r["epoch"] == 1 and r["resets"] == [2] for r in rows)


def test_a_resize_request_cannot_kill_a_rank_that_is_exiting(tmp_path):
    # Python restores SIGUSR1's default action (ending the process) as it exits; a request
    # distrain-run sends to a rank that has just finished must find it ignored by then.
    program = (
        "import atexit, os, signal\n"
        "atexit.register(lambda: print('at exit', signal.getsignal(signal.SIGUSR1) is "
        "signal.SIG_IGN, flush=True))\n"            # runs after distrain's own (LIFO)
        "from distrain.elastic import requests\n"
        "assert requests.listen()\n"
        "os.kill(os.getpid(), signal.SIGUSR1)\n"
        "import time; time.sleep(0.1)\n"
        "print('requested', requests.requested(), flush=True)\n")
    done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=rank_env(1, DISTRAIN_ELASTIC="1"))
    assert done.returncode == 0, done.stderr
    lines = [l for l in done.stdout.split("\n") if l and not l.startswith("\x1edistrain")]
    assert lines == ["requested True", "at exit True"]
