"""distrain.run.leftovers: a killed Open MPI launcher's session directories are removed, and
nothing else is (a live process's, a fresh one, another user's name pattern, a file)."""
import os
import subprocess
import sys
import time

from distrain.run.leftovers import QUIET_SECONDS, stale, sweep


def _dead_pid() -> int:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def _make(tmp_path, name, age=0.0, directory=True):
    path = tmp_path / name
    if directory:
        path.mkdir()
        (path / f"pmix.vm.tool.{name.split('.')[-1]}").write_text("rendezvous")
    else:
        path.write_text("a file")
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_only_old_directories_of_pids_that_no_longer_run_are_swept(tmp_path):
    dead = _dead_pid()
    old = QUIET_SECONDS + 5
    gone = [_make(tmp_path, f"ompi.{dead}", old), _make(tmp_path, f"prted.{dead}", old)]
    kept = [_make(tmp_path, f"prted.{os.getpid()}", old),          # a live process's
            _make(tmp_path, f"prterun.{dead}", 0.0),               # fresh: maybe starting
            _make(tmp_path, "ompi.vm.0", old),                     # not a pid's
            _make(tmp_path, f"ompi.{dead}0", old, directory=False)]  # a file
    assert sorted(stale(str(tmp_path))) == sorted(str(p) for p in gone)
    assert sorted(sweep(str(tmp_path))) == sorted(str(p) for p in gone)
    assert not any(p.exists() for p in gone) and all(p.exists() for p in kept)
    assert sweep(str(tmp_path)) == []
