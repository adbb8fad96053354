"""Runs the rank-side collective suite (tests/ranks) under a real mpirun at 1, 2, 3 and 4 ranks.

One mpirun serves all ~150 checks, so TensorFlow is imported once per rank.
"""
import re

import pytest

from conftest import run_mpi


@pytest.mark.mpi
@pytest.mark.timeout(420)
@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
def test_collectives_on_every_rank(ranks):
    result = run_mpi(ranks, ["-m", "pytest", "tests/ranks", "-o", "python_files=rank_*.py",
                             "-q", "-p", "no:cacheprovider", "--color=no"], timeout=360)
    # Not anchored at line starts: the launcher may glue two ranks' last lines together.
    summaries = re.findall(r"(\d+) passed(?:, (\d+) \w+)* in [\d.]+s", result.stdout)
    failed = re.findall(r"\d+ (?:failed|errors?)\b", result.stdout)
    assert result.returncode == 0 and not failed, result.stdout[-6000:] + result.stderr[-3000:]
    assert len(summaries) == ranks, result.stdout[-3000:]
    counts = {int(s[0]) for s in summaries}
    assert len(counts) == 1 and counts.pop() >= 140, summaries
