"""Runs the rank-side suites (tests/ranks) under a real mpirun at 1, 2, 3 and 4 ranks.

Two mpiruns per world size: the collectives (~350 checks) and the training API built on
them, each importing TensorFlow once per rank, each within its own timeout.
"""
import pathlib
import re

import pytest

from conftest import run_mpi

RANKS_DIR = pathlib.Path(__file__).parent / "ranks"
TRAINING = ["rank_training_api.py", "rank_elastic_state.py", "rank_sync_batch_norm.py",
            "rank_keras_api.py"]
SUITES = {
    "collectives": (sorted(p.name for p in RANKS_DIR.glob("rank_*.py")
                           if p.name not in TRAINING), 300),
    "training": (TRAINING, 15),
}


@pytest.mark.mpi
@pytest.mark.timeout(420)
@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
@pytest.mark.parametrize("suite", sorted(SUITES))
def test_collectives_on_every_rank(suite, ranks):
    files, least = SUITES[suite]
    result = run_mpi(ranks, ["-m", "pytest", *[f"tests/ranks/{f}" for f in files],
                             "-o", "python_files=rank_*.py", "-q", "-p", "no:cacheprovider",
                             "--color=no"], timeout=360)
    # Not anchored at line starts: the launcher may glue two ranks' last lines together.
    summaries = re.findall(r"(\d+) passed(?:, (\d+) \w+)* in [\d.]+s", result.stdout)
    failed = re.findall(r"\d+ (?:failed|errors?)\b", result.stdout)
    assert result.returncode == 0 and not failed, result.stdout[-6000:] + result.stderr[-3000:]
    assert len(summaries) == ranks, result.stdout[-3000:]
    counts = {int(s[0]) for s in summaries}
    assert len(counts) == 1 and counts.pop() >= least, summaries
